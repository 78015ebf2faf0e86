#!/usr/bin/env bash
# The whole sealgate test suite, on a fresh Debian 12 machine with Rust installed:
#   1. installs missing apt packages (non-interactive) and pytest,
#   2. cargo build, cargo test --no-fail-fast,
#   3. python3 -m pytest -q tests/e2e against target/debug/sealgate,
#   4. tests/fuzz.sh 60: each fuzz target for 60 s (nightly + cargo-fuzz, installed if missing).
# Every stage runs even when an earlier one failed; the end lists the failed stages.
# Extra arguments are passed to pytest (e.g. tests/run.sh -k smuggling -x).
# Exits non-zero if any stage failed.  Needs root: apt, the Postfix e2e test and the package test (dpkg).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null; then SUDO="sudo"; else echo "run.sh: not root and no sudo; package installation may fail" >&2; fi
fi
PYTHON=${PYTHON:-python3}
export PATH="$PATH:$HOME/.cargo/bin"

APT_PKGS=(gnupg gpgsm openssl postfix sasl2-bin libsasl2-modules haproxy swaks python3-pip nettle-dev pkg-config libclang-dev sq)

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

# Every stage runs, whatever the one before it did: a failing cargo target must not hide the
# Python tests (and the other way round). The summary names each stage that failed.
failed=()
stage() { # name command...
    local name=$1; shift
    echo "run.sh: $name"
    if ! "$@"; then
        failed+=("$name")
        echo "run.sh: FAILED: $name" >&2
    fi
}

stage "cargo build" cargo build
stage "cargo test" cargo test --no-fail-fast

# Where cargo put the binary (CARGO_TARGET_DIR, e.g. tests/soak.sh's shared one, or ./target).
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
export SEALGATE_BIN="$target_dir/debug/sealgate"
if [ -x "$SEALGATE_BIN" ]; then
    stage "pytest (SEALGATE_BIN=$SEALGATE_BIN)" "$PYTHON" -m pytest -q tests/e2e "$@"
else
    echo "run.sh: FAILED: pytest: no binary at $SEALGATE_BIN (the build failed)" >&2
    failed+=("pytest (no binary at $SEALGATE_BIN)")
fi

# Standing hostile tests: every fuzz target for 60 s from its committed seeds (nightly and
# cargo-fuzz are installed by the script when missing; its build has its own target directory).
stage "fuzz (60 s per target)" tests/fuzz.sh 60

if [ ${#failed[@]} -gt 0 ]; then
    echo "run.sh: ${#failed[@]} stage(s) failed:" >&2
    printf 'run.sh:   %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "run.sh: every stage passed"
