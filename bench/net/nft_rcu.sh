#!/usr/bin/env bash
# What one `nft -f` rule-set swap costs, and how much of it is an RCU grace period: replaces a
# table with one base chain in a fresh network namespace, N rounds, alternating the kernel's
# normal RCU and /sys/kernel/rcu_expedited=1 (a host-wide setting: restored to its value on exit),
# beside `ip netns exec NS true` (the harness's own cost). Prints min / median / max in ms.
# Needs root and nft. Usage: bench/net/nft_rcu.sh [ROUNDS]
set -euo pipefail
rounds=${1:-20}
ns="h8s-bench-nft$$"
knob=/sys/kernel/rcu_expedited
was=$(cat "$knob")
tmp=$(mktemp -d)
ip netns add "$ns"
trap 'echo "$was" > "$knob"; ip netns del "$ns"; rm -rf "$tmp"' EXIT
cat > "$tmp/swap.nft" <<'X'
table ip t1
delete table ip t1
table ip t1 {
  chain c { type filter hook forward priority 0; policy accept; }
}
X
us() { local s e; s=$(date +%s%N); ip netns exec "$ns" "$@" >/dev/null; e=$(date +%s%N); echo $(((e - s) / 1000)); }
for _ in $(seq "$rounds"); do
  echo 0 > "$knob"; us nft -f "$tmp/swap.nft" >> "$tmp/normal"; us true >> "$tmp/harness"
  echo 1 > "$knob"; us nft -f "$tmp/swap.nft" >> "$tmp/expedited"
done
for f in harness normal expedited; do
  sort -n "$tmp/$f" | awk -v f="$f" '{a[NR] = $1}
    END {printf "%-28s %5.1f / %5.1f / %5.1f ms (n=%d)\n", f, a[1] / 1000, a[int((NR + 1) / 2)] / 1000, a[NR] / 1000, NR}'
done
