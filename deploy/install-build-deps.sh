#!/bin/sh
# Debian packages needed to build sealgate: sequoia-openpgp's nettle backend runs bindgen
# (libclang) against nettle's headers. Run as root or with sudo rights.
set -eu
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
PKGS="nettle-dev pkg-config libclang-dev"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
fi
