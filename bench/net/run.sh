#!/usr/bin/env bash
# Network fabric benchmark: throughput and latency on one Network (same node, across VXLAN)
# beside a plain veth pair, and attach/detach time. Rewrites the `net` section of BENCHMARKS.md.
# Needs root, iperf3, nftables, iproute2. Knobs: NETBENCH_ROUNDS, NETBENCH_SECS, NETBENCH_RR,
# NETBENCH_ATTACH.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v iperf3 >/dev/null || { echo "bench/net: needs iperf3 (apt-get install iperf3)" >&2; exit 1; }
cargo build --release -q -p h8s-net --example netbench
# The measured endpoints (iperf3, the request/response threads) run at real-time priority: on a
# shared machine the longer paths otherwise lose more to other work than the baseline does, and
# the ratios measured the machine's load more than the datapath.
chrt -f 10 target/release/examples/netbench --write "$PWD/BENCHMARKS.md"
