#!/usr/bin/env bash
# Pod startup through the API (issue 15: pod create → Running from a VM template), every figure
# in one run: for each binary (BEFORE_BIN first when set, then H8S_BIN), a fresh `h8s server`
# with its in-process node agent (templates on, pod network on), then `pod_startup.py`:
# SINGLES pods one at a time and a burst of BURST, by direct POST and by `kubectl apply`,
# and `h8s run -d` of the same image on the same runtime root (the baseline); then, for
# H8S_BIN only, a per-step timeline of TIMELINE pods (the agent at debug level).
# Writes the `agent` block of BENCHMARKS.md.
# Usage: bench/agent/pod_startup.sh [SINGLES] [BURST] [TIMELINE]   (default 20 10 5)
# Env: H8S_BIN (default target/release/h8s, else target/debug/h8s), BEFORE_BIN (optional: a
# build to compare with, e.g. main's), H8S_CACHE, TRANSIT (default 100.78.5.0/24).
# Run it inside the VM lock: flock -o /tmp/h8s-vm-tests.lock bench/agent/pod_startup.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
singles="${1:-20}"; burst="${2:-10}"; tl="${3:-5}"
export H8S_CACHE="${H8S_CACHE:-$HOME/.cache/h8s}"
H="${H8S_BIN:-$PWD/target/release/h8s}"
[ -x "$H" ] || H="$PWD/target/debug/h8s"
K=/usr/lib/google-cloud-sdk/bin/kubectl.1.33
load0=$(cut -d' ' -f1-3 /proc/loadavg)
top=$(mktemp -d /tmp/h8s-bench-agent.XXXX)
chmod 755 "$top"
work=""; server_pid=""
stop_server() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && sleep 3
  [ -n "$work" ] && {
    "$B" rm -f $("$B" ps -a -q 2>/dev/null) >/dev/null 2>&1 || true
    # Supervisors, QEMU and template holders this run started name $work on their command line.
    for p in $(grep -l -s -F "$work" /proc/[0-9]*/cmdline | cut -d/ -f3); do
      [ "$p" != $$ ] && kill "$p" 2>/dev/null || true
    done
    H8S_NET_DIR="$work/net" "$B" net reset --yes >/dev/null 2>&1 || true
  }
  server_pid=""
}
cleanup() { stop_server; rm -rf "$top"; }
trap cleanup EXIT

# Starts `h8s server` from binary $B in $top/$1 with log level $2; sets kc, node, server_pid.
start_server() {
  work="$top/$1"; mkdir -p "$work"; chmod 755 "$work"
  node="bench-agent-$1"
  export H8S_ROOT="$work/api-root" H8S_LOG="$2" H8S_TEMPLATES=1 H8S_BOOT_TIMEOUT=120
  export H8S_DATA_DIR="$work/data" H8S_NET_DIR="$work/net" H8S_NODE_NAME="$node"
  export H8S_NET_TRANSIT="${TRANSIT:-100.78.5.0/24}" H8S_NET_EGRESS=false
  "$B" image import "$H8S_CACHE/images/busybox-oci" >/dev/null
  "$B" server --listen 127.0.0.1:0 --data-dir "$work/data" --node-name "$node" --streaming-port 0 \
    >"$work/ready" 2>"$work/server.log" &
  server_pid=$!
  for _ in $(seq 300); do [ -s "$work/ready" ] && break; sleep 0.2; done
  read -r ready _url kc <"$work/ready"
  [ "$ready" = ready ] || { echo "server said: $(cat "$work/ready")" >&2; exit 1; }
  for _ in $(seq 600); do ls "$H8S_ROOT"/templates/*/ready >/dev/null 2>&1 && break; sleep 0.5; done
  for _ in $(seq 120); do "$K" --kubeconfig "$kc" get node "$node" >/dev/null 2>&1 && break; sleep 0.5; done
  # One pod first (image disk, first token, the template's first clone): not measured.
  python3 bench/agent/pod_startup.py "$kc" "$node" "$B" 1 1 post >/dev/null
}

labels=(); results=()
if [ -n "${BEFORE_BIN:-}" ]; then labels+=(before); results+=("$BEFORE_BIN"); fi
labels+=(after); results+=("$H")
declare -A out
# Builds alternate over ROUNDS rounds (a fresh server each), so drift in the machine's load
# hits both alike; each round measures SINGLES/ROUNDS single pods and one burst.
rounds="${ROUNDS:-2}"
for r in $(seq "$rounds"); do
  for i in "${!labels[@]}"; do
    l=${labels[$i]}; B=${results[$i]}
    start_server "$l-$r" warn
    res=$(python3 bench/agent/pod_startup.py "$kc" "$node" "$B" "$burst" $(( (singles + rounds - 1) / rounds )) post,apply)
    out[$l]="${out[$l]:-}$res"$'\n'
    stop_server
  done
done
B=$H
start_server timeline "info,h8s_agent=debug"
timeline=$(SERVER_LOG="$work/server.log" python3 bench/agent/pod_startup.py "$kc" "$node" "$B" 1 "$tl" timeline)
stop_server
load1=$(cut -d' ' -f1-3 /proc/loadavg)
case "$H" in */release/*) build=release ;; *) build=debug ;; esac

block=$(python3 - "$build" "$load0" "$load1" "$singles" "$burst" "${BEFORE_BIN:-}" "$H" "$timeline" "${out[before]:-}" "${out[after]}" <<'PY'
import json, sys, time
build, load0, load1, singles, burst, before_bin, after_bin, tl = sys.argv[1:9]
def merged(text):
    """The rounds' results of one build, their lists joined."""
    rs = [json.loads(l) for l in text.splitlines() if l.strip()]
    if not rs:
        return None
    m = {"modes": {}, "h8s_run": {"wall_ms": [], "ready_ms": []}, "rounds": len(rs)}
    for r in rs:
        for mode, v in r["modes"].items():
            d = m["modes"].setdefault(mode, {"single_ms": [], "burst_ms": []})
            d["single_ms"] += v["single_ms"]; d["burst_ms"] += v["burst_ms"]
        for k in ("wall_ms", "ready_ms"):
            m["h8s_run"][k] += r["h8s_run"][k]
        m["accel"] = r["h8s_run"].get("accel") or m.get("accel")
    return m
before = merged(sys.argv[9])
after = merged(sys.argv[10])
def st(v):
    v = sorted(v)
    q = lambda p: v[round((len(v) - 1) * p)]
    return f"{len(v)} | {v[0]:.0f} ms | {q(.5):.0f} ms | {q(.99):.0f} ms"
def med(v):
    v = sorted(v); return v[round((len(v) - 1) * .5)]
rows = []
runs = [("before", before), ("after", after)] if before else [("this build", after)]
for label, r in runs:
    for mode, what in (("post", "direct POST → `Running` watch event"), ("apply", "`kubectl apply` → `Running` in `kubectl get -w`")):
        m = r["modes"][mode]
        rows.append(f"| {label} | {what}, one at a time | {st(m['single_ms'])} |")
        rows.append(f"| {label} | {what}, burst of {burst} at once (all bursts' pods) | {st(m['burst_ms'])} |")
    rows.append(f"| {label} | baseline: `h8s run -d busybox` pod `ready` (start timeline) | {st(r['h8s_run']['ready_ms'])} |")
    rows.append(f"| {label} | baseline: `h8s run -d busybox` CLI returns (container running) | {st(r['h8s_run']['wall_ms'])} |")
ratio = ""
if before:
    a, b = med(after["modes"]["post"]["single_ms"]), med(before["modes"]["post"]["single_ms"])
    ab, bb = med(after["modes"]["post"]["burst_ms"]), med(before["modes"]["post"]["burst_ms"])
    ratio = (f"\nRatios after/before (medians, direct POST): one at a time **{a/b:.2f}×** ({b:.0f} → {a:.0f} ms), "
             f"burst **{ab/bb:.2f}×** ({bb:.0f} → {ab:.0f} ms). Over the same run's `h8s run -d` ready: "
             f"before {b/med(before['h8s_run']['ready_ms']):.1f}×, after {a/med(after['h8s_run']['ready_ms']):.1f}×.\n")
tlrows = "\n".join(f"| {s['step']} | {s['median_ms']:.0f} ms | {s['n']} |" for s in json.loads(tl)["timeline"])
print(f"""<!-- bench:agent:begin -->
Measured {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC by `bench/agent/pod_startup.sh {singles} {burst}` ({build} builds; accelerator {after.get('accel') or '?'}, as the pods report it;
2 host cores shared with other work, load average {load0} at the start, {load1} at the end).
The builds alternate over {after['rounds']} rounds; each round gives each build a fresh `h8s server` with
its in-process node agent (VM templates on, pod network on, minimal guest kernel, busybox
imported; one unmeasured pod first), then `bench/agent/pod_startup.py`: {singles} pods in all one at
a time (each deleted before the next), then per round {burst} created at once, first by **direct POST** (HTTPS connection opened beforehand; timed from
just before the POST to the pod's first `Running` in a watch of the namespace opened
beforehand), then by **`kubectl apply`** (timed around kubectl, whose own start-up is ~50 ms
here, to `Running` in a `kubectl get pods --watch`). Baseline in the same run, on the same
runtime root (same VM template): `h8s run -d busybox -- sleep 3600`, the pod's `ready` in its
start timeline and the CLI's return (container running), both from just before the CLI starts.
{"Before: `" + before_bin + "`; after: `" + after_bin + "`." if before else ""}

| build | what | n | min | median | p99 |
|---|---|---|---|---|---|
""" + "\n".join(rows) + f"""
{ratio}
Where the time goes now (after; a separate server with `h8s_agent` at debug level, median
offsets from just before the POST over the pods; `agent:` lines are the node agent's log, the
others the pod VM's start timeline from `h8s ps --json`):

| step | median since the POST | pods |
|---|---|---|
{tlrows}
<!-- bench:agent:end -->""")
PY
)
python3 - "$block" <<'PY'
import re, sys
p = "BENCHMARKS.md"; s = open(p).read()
s = re.sub(r"<!-- bench:agent:begin -->.*?<!-- bench:agent:end -->", lambda _: sys.argv[1], s, flags=re.S)
open(p, "w").write(s)
PY
echo "$block"
