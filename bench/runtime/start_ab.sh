#!/usr/bin/env bash
# Template start A/B (issue 15): two or more configurations of the same machine, each with its
# own VM template in one runtime root, alternating round by round. Per round and
# configuration: one `h8s run --rm IMAGE -- true` (wall time, from just before the CLI), one
# `h8s run -d IMAGE -- sh -c 'echo hi; exec sleep 30'` whose start timeline (`h8s ps --json`)
# is kept until `container_started`, and QEMU's CPU time at that point (the sum of its
# threads' `schedstat`). Prints the figures; writes nothing to BENCHMARKS.md.
# Usage: CONFIGS='a|ENV=1 ENV2=x;b|ENV=2' bench/runtime/start_ab.sh [ROUNDS]   (default 15)
# Each configuration is a label and the environment `h8s` runs with (H8S_CACHE, H8S_TCG_TB_MIB,
# H8S_GUEST_CMDLINE, …); configurations whose template key would be equal share a template.
# Env: H8S_BIN (default target/release/h8s).
# Run it inside the VM lock: flock -o /tmp/h8s-vm-tests.lock bench/runtime/start_ab.sh …
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds="${1:-15}"
: "${CONFIGS:?CONFIGS='label|ENV=value …;label|…'}"
export H8S_CACHE="${H8S_CACHE:-$HOME/.cache/h8s}"
H="${H8S_BIN:-$PWD/target/release/h8s}"
work=$(mktemp -d /tmp/h8s-bench-ab.XXXX)
chmod 755 "$work"   # jailed supervisors run as their pod's uid and must reach their pod directory
export H8S_ROOT="$work/root" H8S_LOG=warn H8S_TEMPLATES=1 H8S_BOOT_TIMEOUT=120
cleanup() {
  "$H" rm -f $("$H" ps -a -q 2>/dev/null) >/dev/null 2>&1 || true
  # Supervisors, QEMU and template holders this run started name $work on their command line.
  for p in $(grep -l -s -F "$work" /proc/[0-9]*/cmdline | cut -d/ -f3); do
    [ "$p" != $$ ] && kill "$p" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/rootfs/bin" "$work/rootfs/etc" && cp /bin/busybox "$work/rootfs/bin/"
for a in sh true sleep; do ln -s busybox "$work/rootfs/bin/$a"; done
mkfs.erofs --quiet "$work/busybox.erofs" "$work/rootfs"
img="$work/busybox.erofs"
IFS=';' read -ra cfgs <<< "$CONFIGS"
# Our pod's QEMU: the one whose command line names the pod's directory.
qemu_cpu_ms() {
  local ns=0 q t v
  for q in $(grep -l -s -F "$work/root/pods/$1" /proc/[0-9]*/cmdline | cut -d/ -f3); do
    grep -q -s qemu-system "/proc/$q/cmdline" || continue
    for t in /proc/"$q"/task/*/schedstat; do v=$(cut -d' ' -f1 "$t" 2>/dev/null); ns=$((ns + ${v:-0})); done
  done
  echo $((ns / 1000000))
}
# Warm-up: each configuration's first pod boots cold and starts its template's build.
for c in "${cfgs[@]}"; do
  label="${c%%|*}"; envs="${c#*|}"
  boot=""
  for _ in $(seq 60); do
    env $envs "$H" run -d --name warm "$img" -- true >/dev/null
    boot=$("$H" ps -a --json | python3 -c "import json,sys; print(json.load(sys.stdin)[0].get('boot'))")
    "$H" rm -f warm >/dev/null
    [ "$boot" = template ] && break
    sleep 2
  done
  [ "$boot" = template ] || { echo "$label: no template" >&2; exit 1; }
done
for _ in $(seq "$rounds"); do
  for c in "${cfgs[@]}"; do
    label="${c%%|*}"; envs="${c#*|}"
    t0=$(date +%s%N)
    env $envs "$H" run --rm "$img" -- true >/dev/null
    echo $(( ($(date +%s%N) - t0) / 1000000 )) >> "$work/$label.rm"
    t0=$(date +%s.%N)
    id=$(env $envs "$H" run -d --name tl "$img" -- sh -c 'echo hi; exec sleep 30')
    for _ in $(seq 500); do
      "$H" ps -a --json > "$work/ps.json"
      grep -q container_started "$work/ps.json" && break
      sleep 0.02
    done
    qemu_cpu_ms "$id" >> "$work/$label.cpu"
    python3 -c "import json; p=json.load(open('$work/ps.json'))[0]; print(json.dumps({'t0':$t0,'boot':p.get('boot'),'tl':p.get('start_timeline',[])}))" >> "$work/$label.tl"
    "$H" rm -f tl >/dev/null
  done
done
echo "$(date -u '+%F %H:%M') UTC, $rounds rounds, load $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$work" "${cfgs[@]}" <<'PY'
import json, sys
work = sys.argv[1]
labels = [c.split('|')[0] for c in sys.argv[2:]]
q = lambda v, p: sorted(v)[round((len(v) - 1) * p)] if v else float('nan')
print("| configuration | `run --rm true` min / median / p99 | QEMU CPU to `container_started` (median) | restored from the template |")
print("|---|---|---|---|")
phases, offs = [], {}
for l in labels:
    rm = [float(x) for x in open(f"{work}/{l}.rm")]
    cpu = [float(x) for x in open(f"{work}/{l}.cpu")]
    runs = [json.loads(x) for x in open(f"{work}/{l}.tl")]
    restored = sum(r['boot'] == 'template' for r in runs)
    print(f"| {l} | {min(rm):.0f} / {q(rm, .5):.0f} / {q(rm, .99):.0f} ms | {q(cpu, .5):.0f} ms | {restored} of {len(runs)} |")
    for r in runs:
        for m in r['tl']:
            if m['phase'] not in phases:
                phases.append(m['phase'])
            offs.setdefault((l, m['phase']), []).append((m['at_us'] - r['t0'] * 1e6) / 1000)
print()
print("| phase (median ms since `h8s run`) | " + " | ".join(labels) + " |")
print("|---|" + "---|" * len(labels))
for ph in phases:
    print(f"| `{ph}` | " + " | ".join(f"{q(offs.get((l, ph), []), .5):.0f}" for l in labels) + " |")
PY
