#!/usr/bin/env bash
# Pod runtime benchmark: pod start latency beside a bare QEMU boot of the same guest, exec
# round trips, host memory per idle pod. Rewrites the `cloud` block of BENCHMARKS.md's runtime
# section with the default guest (Debian's cloud kernel, from $H8S_CACHE), and the `minimal`
# block when the minimal guest kernel has been built into $H8S_MINIMAL_CACHE
# (`H8S_CACHE=~/.cache/h8s-minimal H8S_GUEST_KERNEL=minimal scripts/setup.d/20-guest.sh`).
# Needs the guest from scripts/setup. Usage: bench/runtime/run.sh [RUNS]   (default 20)
set -euo pipefail
cd "$(dirname "$0")/../.."
export H8S_CACHE="${H8S_CACHE:-$HOME/.cache/h8s}"
minimal_cache="${H8S_MINIMAL_CACHE:-$HOME/.cache/h8s-minimal}"
runs="${1:-20}"
cargo build -q --release -p h8s-runtime --bin h8s-pod-shim --example bench_runtime
bench() {
  H8S_LOG=warn target/release/examples/bench_runtime \
    --shim "$PWD/target/release/h8s-pod-shim" --runs "$runs" --write BENCHMARKS.md --block "$1"
}
bench cloud
if [ -e "$minimal_cache/guest/vmlinuz" ]; then
  H8S_CACHE="$minimal_cache" bench minimal
else
  echo "bench: no minimal guest kernel in $minimal_cache; the minimal block is left as it was" >&2
fi
