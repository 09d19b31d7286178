#!/usr/bin/env bash
# QEMU A/B (issue 15 item 4): the same h8s binary, guest and image under two QEMU builds, every
# figure in one run, the two alternating wherever they can: `h8s run --rm IMAGE -- true`
# restored from a template (RUNS each) and cold (COLD each), PSS per idle template pod with
# IDLE pods, exec round trip (`h8s exec` in an idle pod, RUNS each, beside a host `true`), and
# memory returned to the host (a cold pod and a template clone writing, then removing 100 MiB).
# Writes the `qemu-ab` block of BENCHMARKS.md's runtime section.
# Usage: bench/runtime/qemu_ab.sh QEMU_B [RUNS] [COLD] [IDLE]   (default 20 10 10)
# Env: QEMU_A (default /usr/bin/qemu-system-x86_64), QEMU_B_DATA (H8S_QEMU_DATA for B, e.g. its
# share/qemu:share/seabios when B is unpacked outside /usr), H8S_BIN (default
# target/release/h8s; H8S_BUILD names its build when the path does not), H8S_CACHE.
# Run it inside the VM lock: flock -o /tmp/h8s-vm-tests.lock bench/runtime/qemu_ab.sh …
set -euo pipefail
cd "$(dirname "$0")/../.."
qb="${1:?QEMU_B}"; runs="${2:-20}"; cold="${3:-10}"; idle="${4:-10}"
qa="${QEMU_A:-/usr/bin/qemu-system-x86_64}"
export H8S_CACHE="${H8S_CACHE:-$HOME/.cache/h8s}"
H="${H8S_BIN:-$PWD/target/release/h8s}"
case "$H" in */release/*) build=release ;; *) build=${H8S_BUILD:-debug} ;; esac
va=$("$qa" --version | head -1 | awk '{print $4}'); vb=$("$qb" --version | head -1 | awk '{print $4}')
load0=$(cut -d' ' -f1-3 /proc/loadavg)
work=$(mktemp -d /tmp/h8s-bench-qab.XXXX)
chmod 755 "$work"
export H8S_LOG=warn H8S_TEMPLATES=1 H8S_BOOT_TIMEOUT=120
unset H8S_QEMU_DATA
cleanup() {
  for r in a b; do H8S_ROOT="$work/$r" "$H" rm -f $(H8S_ROOT="$work/$r" "$H" ps -a -q 2>/dev/null) >/dev/null 2>&1 || true; done
  for p in $(grep -l -s -F "$work" /proc/[0-9]*/cmdline | cut -d/ -f3); do
    [ "$p" != $$ ] && kill "$p" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/rootfs/bin" && cp /bin/busybox "$work/rootfs/bin/"
for a in sh true sleep dd rm; do ln -s busybox "$work/rootfs/bin/$a"; done
mkfs.erofs --quiet "$work/busybox.erofs" "$work/rootfs"
img="$work/busybox.erofs"
# `with a|b CMD…`: CMD under QEMU A or B, each with its own runtime root (and templates).
with() {
  local r=$1; shift
  if [ "$r" = a ]; then H8S_ROOT="$work/a" H8S_QEMU="$qa" "$@"
  else H8S_ROOT="$work/b" H8S_QEMU="$qb" H8S_QEMU_DATA="${QEMU_B_DATA:-}" "$@"; fi
}
now() { date +%s.%N; }
ms() { python3 -c "print(round(($2-$1)*1000,2))"; }
stats() { python3 - "$1" <<'PY'
import sys
v=sorted(float(x) for x in open(sys.argv[1]) if x.strip())
p=lambda q: v[round((len(v)-1)*q)]
print(f"{len(v)} | {v[0]:.1f} ms | {p(0.5):.1f} ms | {p(0.99):.1f} ms")
PY
}
med() { python3 -c "import sys;v=sorted(float(x) for x in open('$1') if x.strip());print(v[round((len(v)-1)*0.5)])"; }
ratio() { python3 -c "print(round($(med "$2")/$(med "$1"),2))"; }
rss() { awk '/^Rss:/{print int($2/1024)}' "/proc/$1/smaps_rollup"; }

# Templates: the first run of each boots cold and starts its template's build.
for r in a b; do with $r "$H" run --rm "$img" -- true >/dev/null; done
for r in a b; do
  for _ in $(seq 600); do ls "$work/$r"/templates/*/ready >/dev/null 2>&1 && break; sleep 0.5; done
  ls "$work/$r"/templates/*/ready >/dev/null
done
build_a=$(python3 -c "import json,glob;print(json.load(open(glob.glob('$work/a/templates/*/ready')[0]))['build_ms'])")
build_b=$(python3 -c "import json,glob;print(json.load(open(glob.glob('$work/b/templates/*/ready')[0]))['build_ms'])")

# 1. Template and cold starts, alternating A, B.
for i in $(seq "$runs"); do
  for r in a b; do t=$(now); with $r "$H" run --rm "$img" -- true; ms "$t" "$(now)" >> "$work/t$r"; done
done
for i in $(seq "$cold"); do
  for r in a b; do t=$(now); with $r "$H" run --rm --cold "$img" -- true; ms "$t" "$(now)" >> "$work/c$r"; done
done

# 2. PSS per idle template pod (QEMU + supervisor), IDLE pods of one version at a time, 10 s
# after the last start; then exec round trips in one of them (each after a host `true`).
pss() {
  with "$1" "$H" ps --json | python3 -c '
import json,sys
def pss(pid):
    for l in open(f"/proc/{pid}/smaps_rollup"):
        if l.startswith("Pss:"): return int(l.split()[1])/1024
    return 0
rows=[(pss(p["qemu_pid"]), pss(p["shim_pid"])) for p in json.load(sys.stdin) if p.get("qemu_pid") and p.get("shim_pid")]
tot=sorted(q+s for q,s in rows); q=sorted(r[0] for r in rows)
m=lambda v: v[(len(v)-1)//2]
print(f"{m(tot):.1f} {tot[0]:.1f} {tot[-1]:.1f} {m(q):.1f} {len(rows)}")'
}
for r in a b; do
  for i in $(seq "$idle"); do with $r "$H" run -d --name "idle-$i" "$img" -- sleep 3600 >/dev/null; done
  sleep 10
  read -r pmed pmin pmax pq pn <<< "$(pss $r)"
  eval "pss_$r='$pmed MiB (min $pmin, max $pmax; QEMU $pq) over $pn pods'"
  with $r "$H" exec idle-1 -- true
  for i in $(seq "$runs"); do
    t=$(now); /bin/true; ms "$t" "$(now)" >> "$work/h$r"
    t=$(now); with $r "$H" exec idle-1 -- true; ms "$t" "$(now)" >> "$work/e$r"
  done
  with $r "$H" rm -f $(with $r "$H" ps -a -q) >/dev/null
done

# 3. Memory returned: a cold pod and a template clone (256 MiB guests) write 100 MiB into their
# writable layer, remove it; QEMU's RSS after writing and 15 s after removing.
memrow() {
  local r=$1 kind=$2 flag=""; [ "$kind" = cold ] && flag=--cold
  with $r "$H" run -d $flag --name m "$img" -- sleep 3600 >/dev/null
  local q; q=$(with $r "$H" ps --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["qemu_pid"])')
  sleep 5; local i0; i0=$(rss "$q")
  with $r "$H" exec m -- dd if=/dev/zero of=/big bs=1M count=100 2>/dev/null
  sleep 2; local f; f=$(rss "$q")
  with $r "$H" exec m -- rm /big
  sleep 15; local e; e=$(rss "$q")
  echo "| $([ $r = a ] && echo "$va" || echo "$vb") | $kind | $i0 MiB | $f MiB | $e MiB | $((f - e)) MiB |"
  with $r "$H" rm -f m >/dev/null
}
memrows=""
for r in a b; do for k in cold template; do memrows+="$(memrow $r $k)"$'\n'; done; done
load1=$(cut -d' ' -f1-3 /proc/loadavg)

block=$(cat <<MD
<!-- bench:runtime:qemu-ab:begin -->
Measured $(date -u '+%Y-%m-%d %H:%M') UTC by \`bench/runtime/qemu_ab.sh\` ($build \`h8s\` binary),
accelerator **tcg**, 2 host cores shared with other work (load average ${load0} at the start,
${load1} at the end); guest: Debian's cloud kernel with \`virtio_balloon\` in the initramfs, 256 MiB,
1 vCPU, busybox erofs image, translation cache 16 MiB. **A**: QEMU ${va} (\`$qa\`, bookworm),
**B**: QEMU ${vb} (\`$qb\`, bookworm-backports, firmware \`-L ${QEMU_B_DATA:-built-in}\`). Same
h8s binary, each version with its own runtime root and template; A and B alternate run by run.
Template build (cold boot + save): A ${build_a} ms, B ${build_b} ms.

| what | QEMU | runs | min | median | p99 |
|---|---|---|---|---|---|
| \`h8s run --rm\` restored from a template | ${va} | $(stats "$work/ta") |
| \`h8s run --rm\` restored from a template | ${vb} | $(stats "$work/tb") |
| \`h8s run --rm --cold\` | ${va} | $(stats "$work/ca") |
| \`h8s run --rm --cold\` | ${vb} | $(stats "$work/cb") |
| \`h8s exec idle-1 -- true\` (CLI start to exit) in an idle template pod | ${va} | $(stats "$work/ea") |
| \`h8s exec idle-1 -- true\` | ${vb} | $(stats "$work/eb") |
| baseline: host \`/bin/true\` spawned and waited for | — | $(stats "$work/ha") |

Median ratios B / A: template start $(ratio "$work/ta" "$work/tb")×, cold start
$(ratio "$work/ca" "$work/cb")×, exec $(ratio "$work/ea" "$work/eb")×.
PSS per idle template pod (QEMU + supervisor, median) with ${idle} pods: **${va}** ${pss_a};
**${vb}** ${pss_b}.

Memory a guest frees (QEMU's RSS; 100 MiB written into the container's writable layer, then
removed; free page reporting is on for cold pods and clones):

| QEMU | pod | idle | after writing 100 MiB | 15 s after removing it | returned |
|---|---|---|---|---|---|
${memrows}
<!-- bench:runtime:qemu-ab:end -->
MD
)
echo "$block"
python3 - "$block" <<'PY'
import re,sys
blk=sys.argv[1]; p="BENCHMARKS.md"; s=open(p).read()
pat=re.compile(r"<!-- bench:runtime:qemu-ab:begin -->.*?<!-- bench:runtime:qemu-ab:end -->", re.S)
if pat.search(s):
    s=pat.sub(lambda m: blk, s)
else:
    anchor="<!-- bench:runtime:templates:end -->"
    s=s.replace(anchor, anchor+"\n\n#### QEMU 7.2 vs 10 (issue 15 item 4)\n\n"+blk, 1)
open(p,"w").write(s)
PY
