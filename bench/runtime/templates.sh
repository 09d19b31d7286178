#!/usr/bin/env bash
# VM template benchmark, through `h8s run` (issue 15): pod start restored from a template vs
# cold boot (`--cold`) vs a bare QEMU boot of the same kernel + initramfs to the agent's bench
# marker, alternating, RUNS each; a burst of BURST concurrent template starts; PSS per idle pod
# with IDLE pods. Writes the `templates` block of BENCHMARKS.md's runtime section.
# Usage: bench/runtime/templates.sh [RUNS] [BURST] [IDLE]   (default 20 20 10)
# Run it inside the VM lock: flock /work/wt/vm.lock bench/runtime/templates.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
runs="${1:-20}"; burst="${2:-20}"; idle="${3:-10}"
export H8S_CACHE="${H8S_CACHE:-$HOME/.cache/h8s}"
H="${H8S_BIN:-$PWD/target/debug/h8s}"
[ -x "$H" ] || cargo build -q -p h8s
work=$(mktemp -d /tmp/h8s-bench-tpl.XXXX)
export H8S_ROOT="$work/root" H8S_LOG=warn H8S_TEMPLATES=1 H8S_BOOT_TIMEOUT=120
cleanup() {
  "$H" rm -f $("$H" ps -a -q 2>/dev/null) >/dev/null 2>&1 || true
  for p in $(pgrep -f -- "--root $H8S_ROOT" || true); do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/rootfs/bin" "$work/rootfs/etc" && cp /bin/busybox "$work/rootfs/bin/"
for a in sh true sleep; do ln -s busybox "$work/rootfs/bin/$a"; done
mkfs.erofs --quiet "$work/busybox.erofs" "$work/rootfs"
img="$work/busybox.erofs"
now() { date +%s.%N; }
ms() { python3 -c "print(round(($2-$1)*1000,1))"; }
"$H" run --rm "$img" -- true   # cold; starts the template build
for _ in $(seq 600); do ls "$H8S_ROOT"/templates/*/ready >/dev/null 2>&1 && break; sleep 0.5; done
ls "$H8S_ROOT"/templates/*/ready >/dev/null
tdir=$(dirname "$(ls "$H8S_ROOT"/templates/*/ready)")
build_ms=$(python3 -c "import json;print(json.load(open('$tdir/ready'))['build_ms'])")
kernel="$H8S_CACHE/guest/vmlinuz"; initrd="$H8S_CACHE/guest/initramfs.img"
khz=$(awk -F: '/cpu MHz/ {printf "%d", $2*1000; exit}' /proc/cpuinfo)
bare() {
  qemu-system-x86_64 -machine microvm,rtc=on,acpi=on -accel tcg,thread=multi,tb-size=16 -cpu max \
    -smp 1 -m 256M -nodefaults -no-user-config -nographic -no-reboot \
    -kernel "$kernel" -initrd "$initrd" \
    -append "console=ttyS0 reboot=t panic=-1 quiet loglevel=4 tsc_early_khz=$khz h8s.marker=1" \
    -serial stdio 2>/dev/null | grep -q -m1 H8S-GUEST-MARKER
}
: > "$work/t"; : > "$work/c"; : > "$work/b"
for i in $(seq "$runs"); do
  a=$(now); "$H" run --rm "$img" -- true; b=$(now); ms "$a" "$b" >> "$work/t"
  a=$(now); "$H" run --rm --cold "$img" -- true; b=$(now); ms "$a" "$b" >> "$work/c"
  a=$(now); bare || true; b=$(now); ms "$a" "$b" >> "$work/b"
done
# Burst: BURST concurrent detached template starts (each `run -d` returns once the container runs).
: > "$work/burst"
a0=$(now)
for i in $(seq "$burst"); do
  ( a=$(now); "$H" run -d --name "burst-$i" "$img" -- sleep 3600 >/dev/null; b=$(now); ms "$a" "$b" >> "$work/burst" ) &
done
wait
b0=$(now)
burst_wall=$(ms "$a0" "$b0")
booted=$("$H" ps --json | python3 -c 'import json,sys; p=json.load(sys.stdin); print(sum(1 for x in p if x.get("boot")=="template"), len(p))')
"$H" rm -f $("$H" ps -a -q) >/dev/null
# PSS per idle pod with IDLE pods.
for i in $(seq "$idle"); do "$H" run -d --name "idle-$i" "$img" -- sleep 3600 >/dev/null; done
sleep 10
pss=$("$H" ps --json | python3 -c '
import json,sys
tot=0; n=0
for p in json.load(sys.stdin):
    for k in ("qemu_pid","shim_pid"):
        pid=p.get(k)
        if pid:
            for l in open(f"/proc/{pid}/smaps_rollup"):
                if l.startswith("Pss:"): tot+=int(l.split()[1])
    n+=1
print(round(tot/1024/n,1))')
"$H" rm -f $("$H" ps -a -q) >/dev/null
stats() { python3 - "$1" <<'PY'
import sys
v=sorted(float(x) for x in open(sys.argv[1]) if x.strip())
p=lambda q: v[round((len(v)-1)*q)]
print(f"{len(v)} | {v[0]:.0f} ms | {p(0.5):.0f} ms | {p(0.99):.0f} ms")
PY
}
med() { python3 -c "import sys;v=sorted(float(x) for x in open('$1') if x.strip());print(v[round((len(v)-1)*0.5)])"; }
accel=$(python3 -c "import json;print(json.load(open('$tdir/pod.json')).get('accel') or '?')")
block=$(cat <<MD
<!-- bench:runtime:templates:begin -->
Measured $(date -u '+%Y-%m-%d %H:%M') UTC by \`bench/runtime/templates.sh\` (debug \`h8s\` binary), accelerator **${accel}**,
2 host cores shared with other work; guest \`$kernel\`, 256 MiB, 1 vCPU, busybox erofs image. Wall time of
\`h8s run --rm IMAGE -- true\` (CLI start to exit: pod created, container run, pod removed); the three kinds alternate.

| what | runs | min | median | p99 |
|---|---|---|---|---|
| \`h8s run --rm\` restored from a VM template | $(stats "$work/t") |
| \`h8s run --rm --cold\` (boots the kernel) | $(stats "$work/c") |
| baseline: bare \`qemu-system-x86_64\` boot to the agent's bench marker | $(stats "$work/b") |
| burst: $burst concurrent \`h8s run -d\` from the template (each until its container runs) | $(stats "$work/burst") |

Median ratio cold / template: $(python3 -c "print(round($(med "$work/c")/$(med "$work/t"),1))")×. Burst: $burst pods in ${burst_wall} ms
($(python3 -c "print(round($burst/($burst_wall/1000),1))") pods/s); ${booted% *} of ${booted#* } restored from the template.
Template build (boot + save, in the background): ${build_ms} ms. PSS per idle pod (QEMU + supervisor, ${idle} idle pods,
10 s after start): **${pss} MiB**.
<!-- bench:runtime:templates:end -->
MD
)
python3 - "$block" <<'PY'
import sys,re
b=sys.argv[1]; p="BENCHMARKS.md"; s=open(p).read()
if "<!-- bench:runtime:templates:begin -->" in s:
    s=re.sub(r"<!-- bench:runtime:templates:begin -->.*?<!-- bench:runtime:templates:end -->", lambda m: b, s, flags=re.S)
else:
    s=s.replace("<!-- bench:runtime:begin -->", "<!-- bench:runtime:begin -->\n### VM templates (issue 15)\n\n"+b+"\n", 1)
open(p,"w").write(s)
PY
echo "$block"
