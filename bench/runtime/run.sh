#!/usr/bin/env bash
# Pod runtime benchmark: pod start latency beside a bare QEMU boot of the same guest, exec
# round trips, host memory per idle pod. Rewrites the `runtime` section of BENCHMARKS.md.
# Needs the guest from scripts/setup. Usage: bench/runtime/run.sh [RUNS]   (default 20)
set -euo pipefail
cd "$(dirname "$0")/../.."
export H8S_CACHE="${H8S_CACHE:-$HOME/.cache/h8s}"
runs="${1:-20}"
cargo build -q --release -p h8s-runtime --bin h8s-pod-shim --example bench_runtime
H8S_LOG=warn target/release/examples/bench_runtime \
  --shim "$PWD/target/release/h8s-pod-shim" --runs "$runs" --write BENCHMARKS.md
