#!/usr/bin/env bash
# The whole sealgate test suite, on a fresh Debian 12 machine with Rust installed:
#   1. installs missing apt packages (non-interactive) and pytest,
#   2. cargo build, cargo test,
#   3. python3 -m pytest -q tests/ against target/debug/sealgate.
# Extra arguments are passed to pytest (e.g. tests/run.sh -k smuggling -x).
# Exits non-zero on any failure.  Needs root (or sudo) for apt and for the Postfix e2e test.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null; then SUDO="sudo"; else echo "run.sh: not root and no sudo; package installation may fail" >&2; fi
fi
PYTHON=${PYTHON:-python3}
export PATH="$PATH:$HOME/.cargo/bin"

APT_PKGS=(gnupg gpgsm openssl postfix swaks python3-pip nettle-dev pkg-config libclang-dev sq)

missing=()
for p in "${APT_PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "run.sh: installing ${missing[*]}"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

if ! "$PYTHON" -c "import pytest" 2>/dev/null; then
    echo "run.sh: installing pytest"
    "$PYTHON" -m pip install -q pytest \
      || "$PYTHON" -m pip install -q --break-system-packages pytest \
      || $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-pytest
    "$PYTHON" -c "import pytest"
fi

echo "run.sh: cargo build"
cargo build
echo "run.sh: cargo test"
cargo test

export SEALGATE_BIN="$PWD/target/debug/sealgate"
echo "run.sh: pytest (SEALGATE_BIN=$SEALGATE_BIN)"
exec "$PYTHON" -m pytest -q tests/ "$@"
