#!/usr/bin/env bash
# The gateway build of edgecore: the `edge` profile (size-optimised, fat LTO; Cargo.toml) and
# glibc linked statically (a static-pie executable), so the binary runs on any Linux gateway of
# its architecture whatever its libc, and its resident memory has no shared-library pages
# (docs/operations.md, "Building edgecore for a gateway"; docs/benchmarks.md, "edgecore memory,
# session 9": -1.2 MiB idle).
#
#   scripts/build-edgecore.sh [--dynamic] [--out FILE] [-- CARGO_ARGS...]
#
# Prints the path of the binary. `--dynamic` keeps glibc shared (the `edge` profile alone).
# Needs the host's static glibc (libc6-dev, installed with gcc/build-essential).
set -euo pipefail

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }

static=1
out=""
extra=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dynamic) static=0 ;;
        --out) out="${2:?--out needs a file}"; shift ;;
        -h | --help) usage; exit 0 ;;
        --) shift; extra=("$@"); break ;;
        *) echo "build-edgecore: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

cd "$(dirname "$0")/.."
target_dir="${CARGO_TARGET_DIR:-target}"
if [[ $static == 1 ]]; then
    host="$(rustc -vV | sed -n 's/^host: //p')"
    case "$host" in
        *-linux-gnu*) ;;
        *) echo "build-edgecore: static glibc needs a *-linux-gnu host, not $host (use --dynamic)" >&2; exit 2 ;;
    esac
    # With an explicit --target, RUSTFLAGS reach only the target's crates: build scripts and
    # proc macros (which cannot be static) stay dynamic host artifacts.
    RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
        cargo build --locked --profile edge -p edgecore --bin edgecore --target "$host" "${extra[@]}" >&2
    bin="$target_dir/$host/edge/edgecore"
else
    cargo build --locked --profile edge -p edgecore --bin edgecore "${extra[@]}" >&2
    bin="$target_dir/edge/edgecore"
fi
if [[ -n "$out" ]]; then
    install -D -m 0755 "$bin" "$out"
    bin="$out"
fi
echo "$bin"
