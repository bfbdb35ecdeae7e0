#!/usr/bin/env bash
# kedge's whole test suite, as CI runs it, on a fresh Debian 12 machine with Rust:
# installs what the machine lacks, then formatting, lints, build, unit and e2e tests.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# --- system packages the e2e tests drive (real parts, not mocks) ---
pkgs=(containerd runc containernetworking-plugins mosquitto mosquitto-clients socat
      busybox-static curl openssl ca-certificates iproute2
      gdb)  # gdb: stacks of a process that hangs instead of exiting, in the test failure
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  step "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v kubectl >/dev/null || { echo "kubectl is required on PATH (it ships on the machine image)"; exit 1; }

# --- Python test peers (Modbus slave, Helm engine) ---
if [ -f scripts/requirements-test.txt ]; then
  step "installing Python test peers"
  python3 -m pip install -q --disable-pip-version-check -r scripts/requirements-test.txt
fi

# One target dir and one profile for every build and test.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
export CARGO_TERM_COLOR=never

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

step "building binaries"
cargo build --workspace --bins

step "unit, integration and end-to-end tests"
cargo test --workspace --no-fail-fast -- --test-threads "${KEDGE_TEST_THREADS:-4}"

step "benchmark smoke: kedge-bench edges --smoke (200 simulated edges, ≤ 60 s)"
"$CARGO_TARGET_DIR/debug/kedge-bench" edges --smoke

step "benchmark smoke: kedge-bench twin --smoke (20 devices through one edge, ≤ 30 s)"
"$CARGO_TARGET_DIR/debug/kedge-bench" twin --smoke

step "benchmark smoke: kedge-bench api --smoke (2,000 creates and pods, JSON and protobuf lists, 100 watchers, ≤ 60 s)"
"$CARGO_TARGET_DIR/debug/kedge-bench" api --smoke
