#!/usr/bin/env bash
# VM template benchmark (issue 15), every figure in one run: where a template start's time
# goes (the pod's start timeline, median of RUNS), `h8s run --rm` restored from a template vs
# cold boot (`--cold`) vs a bare QEMU boot of the same kernel + initramfs to the agent's bench
# marker (alternating, RUNS each), a burst of BURST concurrent template starts, PSS per idle
# pod with IDLE and MANY idle pods, the exec round trip (`bench_runtime --exec-pod`, built by
# `cargo build --release --example bench_runtime`), the translation cache's size against start
# time and memory, and pod create → Running through the API (`bench/agent/pod_startup.py`).
# Writes the `templates` block of BENCHMARKS.md's runtime section.
# Usage: bench/runtime/templates.sh [RUNS] [BURST] [IDLE] [MANY]   (default 20 20 10 50)
# Env: H8S_BIN (default target/release/h8s, else target/debug/h8s), H8S_CACHE, NO_API=1,
# TB_RUNS (runs per translation cache size, default 10), TB_SIZES (default "16 64"; empty skips
# that part), BLOCK (the BENCHMARKS.md block to write, default templates; another name is added
# after the templates block, e.g. BLOCK=templates-minimal with H8S_CACHE=~/.cache/h8s-minimal).
# Run it inside the VM lock: flock -o /tmp/h8s-vm-tests.lock bench/runtime/templates.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
runs="${1:-20}"; burst="${2:-20}"; idle="${3:-10}"; many="${4:-50}"
export H8S_CACHE="${H8S_CACHE:-$HOME/.cache/h8s}"
H="${H8S_BIN:-$PWD/target/release/h8s}"
[ -x "$H" ] || H="$PWD/target/debug/h8s"
case "$H" in */release/*) build=release ;; *) build=debug ;; esac
# The pod supervisor `h8s` runs: the standalone one beside it when built (scripts/up builds it).
if [ -x "$(dirname "$H")/h8s-pod-shim" ]; then shim="\`h8s-pod-shim\`"; else shim="\`h8s pod-shim\` (no \`h8s-pod-shim\` beside \`h8s\`)"; fi
load0=$(cut -d' ' -f1-3 /proc/loadavg)
work=$(mktemp -d /tmp/h8s-bench-tpl.XXXX)
chmod 755 "$work"   # jailed supervisors run as their pod's uid and must reach their pod directory
# Warm clones only where a step says so (the plain template rows restore from the template).
export H8S_ROOT="$work/root" H8S_LOG=warn H8S_TEMPLATES=1 H8S_BOOT_TIMEOUT=120 H8S_WARM_POOL=0
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && sleep 3
  "$H" rm -f $("$H" ps -a -q 2>/dev/null) >/dev/null 2>&1 || true
  # Supervisors, QEMU and template holders this run started name $work on their command line.
  for p in $(grep -l -s -F "$work" /proc/[0-9]*/cmdline | cut -d/ -f3); do
    [ "$p" != $$ ] && kill "$p" 2>/dev/null || true
  done
  [ -n "$server_pid" ] && H8S_NET_DIR="$work/net" "$H" net reset --yes >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/rootfs/bin" "$work/rootfs/etc" && cp /bin/busybox "$work/rootfs/bin/"
for a in sh true sleep dd rm; do ln -s busybox "$work/rootfs/bin/$a"; done
mkfs.erofs --quiet "$work/busybox.erofs" "$work/rootfs"
img="$work/busybox.erofs"
now() { date +%s.%N; }
ms() { python3 -c "print(round(($2-$1)*1000,1))"; }
stats() { python3 - "$1" <<'PY'
import sys
v=sorted(float(x) for x in open(sys.argv[1]) if x.strip())
p=lambda q: v[round((len(v)-1)*q)]
print(f"{len(v)} | {v[0]:.0f} ms | {p(0.5):.0f} ms | {p(0.99):.0f} ms")
PY
}
med() { python3 -c "import sys;v=sorted(float(x) for x in open('$1') if x.strip());print(v[round((len(v)-1)*0.5)])"; }
# Waits until a template for the current settings is ready (the first run starts its build).
template_ready() {
  for _ in $(seq 600); do
    for d in "$H8S_ROOT"/templates/*/; do
      [ -f "$d/ready" ] && grep -Eq "\"tcg_tb_size_mib\": ?${H8S_TCG_TB_MIB:-32}," "$d/spec.json" && { echo "$d"; return; }
    done
    sleep 0.5
  done
  echo "no template" >&2; exit 1
}
# PSS per idle pod: N detached `sleep` pods, 10 s after the last start; prints
# "min median max qemu_median shim_median n tb_median" in MiB (QEMU + supervisor per pod; tb:
# how much of QEMU's translation cache is resident).
pss() {
  local n=$1 i
  for i in $(seq "$n"); do "$H" run -d --name "idle-$i" "$img" -- sleep 3600 >/dev/null; done
  sleep 10
  "$H" ps --json | TB_KIB=$(( ${H8S_TCG_TB_MIB:-32} * 1024 - 4 )) python3 -c '
import json,os,re,sys
def pss(pid):
    for l in open(f"/proc/{pid}/smaps_rollup"):
        if l.startswith("Pss:"): return int(l.split()[1])/1024
    return 0
def tb(pid):
    # The translation cache: the anonymous mapping of its size (minus a guard page).
    cur=False
    for l in open(f"/proc/{pid}/smaps"):
        m=re.match(r"^([0-9a-f]+)-([0-9a-f]+) ", l)
        if m: cur=(int(m[2],16)-int(m[1],16))>>10 == int(os.environ["TB_KIB"])
        elif cur and l.startswith("Rss:"): return int(l.split()[1])/1024
    return 0
rows=[(pss(p["qemu_pid"]), pss(p["shim_pid"]), tb(p["qemu_pid"])) for p in json.load(sys.stdin) if p.get("qemu_pid") and p.get("shim_pid")]
tot=sorted(r[0]+r[1] for r in rows); q=sorted(r[0] for r in rows); s=sorted(r[1] for r in rows); t=sorted(r[2] for r in rows)
m=lambda v: v[(len(v)-1)//2]
print(f"{tot[0]:.1f} {m(tot):.1f} {tot[-1]:.1f} {m(q):.1f} {m(s):.1f} {len(rows)} {m(t):.1f}")'
  "$H" rm -f $("$H" ps -a -q) >/dev/null
}

# Waits until N warm clones wait for pods (<root>/pool/<shape>/<id>, the clone's record ready).
warm_ready() {
  local n m i
  for i in $(seq 1200); do
    n=0
    for m in "$H8S_ROOT"/pool/*/*; do
      [ -e "$m" ] && grep -Eq '"state": ?"ready"' "$H8S_ROOT/pods/${m##*/}/pod.json" 2>/dev/null && n=$((n + 1))
    done
    [ "$n" -ge "$1" ] && return
    sleep 0.1
  done
  echo "no $1 warm clones" >&2; exit 1
}

"$H" run --rm "$img" -- true >/dev/null   # cold; starts the template build
tdir=$(template_ready)
build_ms=$(python3 -c "import json;print(json.load(open('$tdir/ready'))['build_ms'])")
accel=$(python3 -c "import json;print(json.load(open('$tdir/pod.json')).get('accel') or '?')")
kernel="$H8S_CACHE/guest/vmlinuz"; initrd="$H8S_CACHE/guest/initramfs.img"
ksource=$(sed -n 's/^KERNEL_SOURCE=//p' "$H8S_CACHE/guest/guest.env")
block_name="${BLOCK:-templates}"
khz=$(awk -F: '/cpu MHz/ {printf "%d", $2*1000; exit}' /proc/cpuinfo)
bare() {
  qemu-system-x86_64 -machine microvm,rtc=on,acpi=on -accel tcg,thread=multi,tb-size=32 -cpu max \
    -smp 1 -m 256M -nodefaults -no-user-config -nographic -no-reboot \
    -kernel "$kernel" -initrd "$initrd" \
    -append "console=ttyS0 reboot=t panic=-1 quiet loglevel=4 tsc_early_khz=$khz h8s.marker=1" \
    -serial stdio 2>/dev/null | grep -q -m1 H8S-GUEST-MARKER
}

# 1. Where a template start's time goes: `run -d` of `sh -c 'echo hi'`, its start timeline;
#    then the same for pods taking a warm clone (the pool full again before each run).
timeline_runs() {  # FILE [WARM]
  : > "$1"
  for i in $(seq "$runs"); do
    [ -n "${2:-}" ] && warm_ready 2
    t=$(now)
    "$H" run -d --name "tl-$i" "$img" -- sh -c 'echo hi' >/dev/null
    for _ in $(seq 100); do
      "$H" ps -a --json > "$work/ps.json"
      grep -q container_exited "$work/ps.json" && break
      sleep 0.1
    done
    python3 -c "import json,sys; p=json.load(open('$work/ps.json'))[0]; print(json.dumps({'t0':$t,'boot':p.get('boot'),'tl':p.get('start_timeline',[])}))" >> "$1"
    "$H" rm -f "tl-$i" >/dev/null
  done
}
timeline_of() {  # FILE BOOT
python3 - "$1" "$2" <<'PY'
import json,sys
runs=[json.loads(l) for l in open(sys.argv[1]) if l.strip()]
total=len(runs)
runs=[r for r in runs if r["boot"]==sys.argv[2]]
order=[]
for r in runs:
    for m in r["tl"]:
        if m["phase"] not in order: order.append(m["phase"])
q=lambda v,p: sorted(v)[round((len(v)-1)*p)]
what={"requested":"`h8s run` started → the runtime asks for the pod (CLI start-up, image lookup)",
"supervisor":"the pod supervisor runs","qemu_spawned":"QEMU exec'd (jail, cgroups, descriptors)",
"qmp_connected":"QEMU initialised, QMP greeting","migrated":"incoming migration (device state) done",
"agent_connected":"agent port connected","resumed":"`cont`: the guest runs",
"guest_reseed":"guest: RNG reseeded (RNDADDENTROPY + RNDRESEEDCRNG)","guest_clock":"guest: clock set",
"guest_macs":"guest: NIC MACs","guest_disks":"guest: disks bound (real sizes)",
"guest_network":"guest: network configured",
"restored":"`Restored` answered (with the Hello)","ready":"pod ready (supervisor tells the runtime)",
"container_created":"container created (CLI → supervisor → guest: erofs + overlay)",
"container_started":"container started (clone into namespaces, pivot_root, exec)",
"first_output":"first output line reached the supervisor","container_exited":"container exited",
"assign":"the warm clone's supervisor has the pod","images_swapped":"the pod's images behind the clone's disks (QMP add-fd, blockdev-add, blockdev-reopen)"}
print("| phase | what | median since `h8s run` | step median | step p99 |")
print("|---|---|---|---|---|")
for ph in order:
    offs=[]; steps=[]
    for r in runs:
        ms={m["phase"]:m["at_us"] for m in r["tl"]}
        if ph not in ms: continue
        t0=r["t0"]*1e6
        offs.append((ms[ph]-t0)/1000)
        prev=[m["at_us"] for m in r["tl"] if m["at_us"]<=ms[ph] and m["phase"]!=ph]
        steps.append((ms[ph]-(max(prev) if prev else t0))/1000)
    print(f"| `{ph}` | {what.get(ph,'')} | {q(offs,.5):.0f} ms | {q(steps,.5):.0f} ms | {q(steps,.99):.0f} ms |")
print(f"\n{len(runs)} of {total} runs started this way (`boot` {sys.argv[2]!r}). Guest steps are placed by the durations the guest measured, counted from when the host sent `Restored`.")
PY
}
timeline_runs "$work/tl"
timeline=$(timeline_of "$work/tl" template)
export H8S_WARM_POOL=2
"$H" run --rm "$img" -- true >/dev/null   # restored; starts the warm clones
timeline_runs "$work/tlw" warm
timeline_warm=$(timeline_of "$work/tlw" "warm clone")
export H8S_WARM_POOL=0

# 2. `h8s run --rm … true`: template, cold, bare QEMU, alternating.
: > "$work/t"; : > "$work/c"; : > "$work/b"
for i in $(seq "$runs"); do
  a=$(now); "$H" run --rm "$img" -- true; b=$(now); ms "$a" "$b" >> "$work/t"
  a=$(now); "$H" run --rm --cold "$img" -- true; b=$(now); ms "$a" "$b" >> "$work/c"
  a=$(now); bare || true; b=$(now); ms "$a" "$b" >> "$work/b"
done

# 2b. `h8s run --rm … true` taking a warm clone: before each run the pool is full again (the
#     wait not timed), alternating with back-to-back runs (the next started at once: pods
#     arriving faster than clones warm up restore from the template instead).
export H8S_WARM_POOL=2
: > "$work/w"; : > "$work/wb"
for i in $(seq "$runs"); do
  warm_ready 2
  a=$(now); "$H" run --rm "$img" -- true; b=$(now); ms "$a" "$b" >> "$work/w"
  a=$(now); "$H" run --rm "$img" -- true; b=$(now); ms "$a" "$b" >> "$work/wb"
  a=$(now); "$H" run --rm "$img" -- true; b=$(now); ms "$a" "$b" >> "$work/wb"
done
# PSS of idle pods that took warm clones (each waits for a full pool) and of the clones
# waiting (node overhead, not pods).
pss_warm() {
  local i
  for i in $(seq "$idle"); do warm_ready 2; "$H" run -d --name "wi-$i" "$img" -- sleep 3600 >/dev/null; done
  warm_ready 2
  sleep 10
  "$H" ps --json | python3 -c '
import json,sys,os,glob
def pss(pid):
    try:
        for l in open(f"/proc/{pid}/smaps_rollup"):
            if l.startswith("Pss:"): return int(l.split()[1])/1024
    except OSError: pass
    return 0
m=lambda v: sorted(v)[(len(v)-1)//2]
pods=[pss(p["qemu_pid"])+pss(p["shim_pid"]) for p in json.load(sys.stdin) if p.get("qemu_pid") and p.get("shim_pid") and p.get("boot")=="warm clone"]
root=os.environ["H8S_ROOT"]; clones=[]
for mk in glob.glob(f"{root}/pool/*/*"):
    r=json.load(open(f"{root}/pods/{os.path.basename(mk)}/pod.json"))
    if r.get("qemu") and r.get("shim"): clones.append(pss(r["qemu"]["pid"])+pss(r["shim"]["pid"]))
print(f"{len(pods)} {m(pods):.1f} {len(clones)} {m(clones):.1f}")'
  "$H" rm -f $("$H" ps -a -q) >/dev/null
}
read -r pwn pwmed pwcn pwcmed <<< "$(pss_warm)"

# 2c. Exec round trip in an idle pod that took a warm clone (`bench_runtime --exec-pod`:
#     `Runtime::exec` of `true` until its exit code is back, 100 runs after 3 warm-up ones, each
#     beside a host `true` spawned and waited for).
benchrt="$(dirname "$H")/examples/bench_runtime"
if [ -x "$benchrt" ]; then
  warm_ready 2
  "$H" run -d --name exec-idle "$img" -- sleep 3600 >/dev/null
  read -r exec_pod exec_ctr exec_boot <<< "$("$H" ps --json | python3 -c '
import json,sys
p=[x for x in json.load(sys.stdin) if x["config"]["name"]=="exec-idle"][0]
print(p["id"], p["containers"][0]["config"]["name"], (p.get("boot") or "?").replace(" ","-"))')"
  sleep 2
  execrows=$("$benchrt" --shim "$(dirname "$H")/h8s-pod-shim" --root "$H8S_ROOT" \
    --exec-pod "$exec_pod" --container "$exec_ctr" --exec-runs 100)
  "$H" rm -f exec-idle >/dev/null
else
  execrows="| exec round trip | not measured: no \`$benchrt\` (cargo build --release --example bench_runtime) | | | |"
  exec_boot="-"
fi
export H8S_WARM_POOL=0

# 3. Burst: BURST concurrent detached template starts (each `run -d` returns once the container runs).
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

# 4. Stop and remove an idle template pod: `h8s stop -t 0` (containers killed, the VM powers
#    off), `h8s rm` of the stopped pod, `h8s rm -f` of a running one; baseline: `h8s ps -q` (the
#    CLI's start-up and a read of the runtime's state).
: > "$work/stop"; : > "$work/rm"; : > "$work/rmf"; : > "$work/ps"
for i in $(seq "$runs"); do
  "$H" run -d --name "sr-$i" "$img" -- sleep 3600 >/dev/null
  "$H" run -d --name "rf-$i" "$img" -- sleep 3600 >/dev/null
  a=$(now); "$H" ps -q >/dev/null; b=$(now); ms "$a" "$b" >> "$work/ps"
  a=$(now); "$H" stop -t 0 "sr-$i" >/dev/null; b=$(now); ms "$a" "$b" >> "$work/stop"
  a=$(now); "$H" rm "sr-$i" >/dev/null; b=$(now); ms "$a" "$b" >> "$work/rm"
  a=$(now); "$H" rm -f "rf-$i" >/dev/null; b=$(now); ms "$a" "$b" >> "$work/rmf"
done

# 5. PSS per idle pod at IDLE and MANY pods.
read -r p10min p10med p10max p10q p10s p10n p10tb <<< "$(pss "$idle")"
read -r p50min p50med p50max p50q p50s p50n p50tb <<< "$(pss "$many")"
# Baseline: the same with the system's libraries only (no set-up stand-ins, docs/runtime.md
# "QEMU's libraries").
read -r p10lmin p10lmed p10lmax p10lq p10ls p10ln p10ltb <<< "$(H8S_QEMU_LIBS=0 pss "$idle")"

# 5b. Memory a clone frees goes back to the host: a clone writes 100 MiB into its container's
#     writable layer (guest memory) and removes it; QEMU's RSS with the file and 5 s after the
#     removal (or once 64 MiB came back), and how long that took. Baseline: free page
#     reporting off (`H8S_FREE_PAGE_REPORTING=0`: a template without the balloon), alternating.
rss() { awk '/^VmRSS/ {print int($2/1024)}' "/proc/$1/status"; }
freed() {  # NAME → "rss_full rss_after ms_until_back" (ms empty if it did not come back)
  local name=$1 q full cur a back=""
  "$H" run -d --name "$name" "$img" -- sleep 3600 >/dev/null
  q=$("$H" ps --json | python3 -c "import json,sys; print([p for p in json.load(sys.stdin) if p['config']['name']=='$name'][0]['qemu_pid'])")
  "$H" exec "$name" -- sh -c 'dd if=/dev/zero of=/big bs=1M count=100 2>/dev/null'
  full=$(rss "$q"); cur=$full
  "$H" exec "$name" -- rm /big
  a=$(now)
  for _ in $(seq 100); do
    cur=$(rss "$q")
    if [ $((cur + 64)) -le "$full" ]; then back=$(ms "$a" "$(now)"); break; fi
    sleep 0.05
  done
  "$H" rm -f "$name" >/dev/null
  echo "$full $cur $back"
}
H8S_FREE_PAGE_REPORTING=0 "$H" run --rm "$img" -- true >/dev/null
for _ in $(seq 600); do [ "$(ls -d "$H8S_ROOT"/templates/*/ready 2>/dev/null | wc -l)" -ge 2 ] && break; sleep 0.5; done
: > "$work/freed"; : > "$work/freed0"
for i in $(seq "${FREE_RUNS:-5}"); do
  freed "fr-$i" >> "$work/freed"
  H8S_FREE_PAGE_REPORTING=0 freed "fr0-$i" >> "$work/freed0"
done
freedrow() {  # FILE LABEL
  python3 - "$1" "$2" <<'PY'
import sys
rows=[l.split() for l in open(sys.argv[1]) if l.strip()]
m=lambda v: sorted(v)[(len(v)-1)//2]
full=m([int(r[0]) for r in rows]); after=m([int(r[1]) for r in rows])
back=[float(r[2]) for r in rows if len(r)>2]
t=f"{m(back):.0f} ms (max {max(back):.0f})" if back else "not within 5 s"
print(f"| {sys.argv[2]} | {len(rows)} | {full} MiB | {after} MiB | {len(back)} of {len(rows)} | {t} |")
PY
}

# 6. The translation cache: start time and memory for each size in TB_SIZES and the default
#    (32 MiB), the sizes alternating run by run (step 2 alternates with cold boots, which
#    slows the template starts there).
tbrows=""
if [ -n "${TB_SIZES-16 64}" ]; then
  sizes="${TB_SIZES-16 64} 32"
  for tb in $sizes; do
    export H8S_TCG_TB_MIB=$tb
    "$H" run --rm "$img" -- true >/dev/null; template_ready >/dev/null
    : > "$work/tb$tb"
  done
  for i in $(seq "${TB_RUNS:-10}"); do
    for tb in $sizes; do
      export H8S_TCG_TB_MIB=$tb
      a=$(now); "$H" run --rm "$img" -- true; b=$(now); ms "$a" "$b" >> "$work/tb$tb"
    done
  done
  for tb in $sizes; do
    export H8S_TCG_TB_MIB=$tb
    read -r x tmed x x x x ttb <<< "$(pss "$idle")"
    label="${tb} MiB"; [ "$tb" = 32 ] && label="32 MiB (default)"
    tbrows+="| ${label} | $(stats "$work/tb$tb") | ${tmed} MiB | ${ttb} MiB |"$'\n'
  done
  unset H8S_TCG_TB_MIB
fi

# 7. Through the API: pod create → Running (h8s server with its in-process node agent).
api=""
if [ "${NO_API:-0}" != 1 ]; then
  export H8S_DATA_DIR="$work/data" H8S_NET_DIR="$work/net" H8S_NODE_NAME="bench-$$"
  export H8S_NET_TRANSIT="100.$((65 + $$ % 63)).$(( ($$ / 63) % 256 )).0/24" H8S_NET_EGRESS=false
  "$H" image import "$H8S_CACHE/images/busybox-oci" >/dev/null
  export H8S_ROOT="$work/api-root" H8S_WARM_POOL=2
  coproc SRV { exec "$H" server --listen 127.0.0.1:0 --data-dir "$work/data" --node-name "bench-$$" --streaming-port 0 2>"$work/server.log"; }
  server_pid=$SRV_PID
  read -r ready url kc <&"${SRV[0]}"
  # Drain the server's stdout (a coprocess's descriptor does not reach a subshell; a copy does).
  exec {srv_out}<&"${SRV[0]}"
  cat <&"$srv_out" >/dev/null &
  [ "$ready" = ready ] || { echo "server said: $ready $url $kc" >&2; exit 1; }
  for _ in $(seq 600); do ls "$H8S_ROOT"/templates/*/ready >/dev/null 2>&1 && break; sleep 0.5; done
  for _ in $(seq 120); do /usr/lib/google-cloud-sdk/bin/kubectl.1.33 --kubeconfig "$kc" get node "bench-$$" >/dev/null 2>&1 && break; sleep 0.5; done
  api=$(python3 bench/agent/pod_startup.py "$kc" "bench-$$" "$H" "$burst" "$runs" apply,post)
fi
load1=$(cut -d' ' -f1-3 /proc/loadavg)

apirows=""
if [ -n "$api" ]; then
  apirows=$(python3 - "$api" <<'PY'
import json,sys
a=json.loads(sys.argv[1]); v=sorted(x*1000 for x in a["single_s"])
p=lambda q: v[round((len(v)-1)*q)]
boots=a["modes"]["apply"].get("single_boot",[])
warm=sum(1 for b in boots if b=="warm clone")
print(f"| API: pod create → `Running` (kubectl apply → watch), one at a time ({warm} of {len(boots)} took a warm clone) | {len(v)} | {v[0]:.0f} ms | {p(.5):.0f} ms | {p(.99):.0f} ms |")
print(f"| API: burst of {a['burst']} pods created at once → each `Running` | {a['burst_done']} | {a['burst_min_s']*1000:.0f} ms | {a['burst_median_s']*1000:.0f} ms | {a['burst_p99_s']*1000:.0f} ms |")
m=a["modes"].get("post")
if m:
    v=sorted(m["single_ms"]); b=sorted(m["burst_ms"]); q=lambda v,p: v[round((len(v)-1)*p)]
    warm=sum(1 for x in m.get("single_boot",[]) if x=="warm clone")
    print(f"| API: direct POST → `Running` watch event, one at a time ({warm} of {len(m.get('single_boot',[]))} took a warm clone) | {len(v)} | {v[0]:.0f} ms | {q(v,.5):.0f} ms | {q(v,.99):.0f} ms |")
    print(f"| API: direct POST of {a['burst']} pods at once → each `Running` | {len(b)} | {b[0]:.0f} ms | {q(b,.5):.0f} ms | {q(b,.99):.0f} ms |")
PY
)
fi
qemulibs="the system's"
[ -s "$H8S_CACHE/qemu-lib/qemu.id" ] && qemulibs="set-up's stand-ins for libcapstone and libpmem (\`$H8S_CACHE/qemu-lib\`), the rest the system's"
block=$(cat <<MD
<!-- bench:runtime:${block_name}:begin -->
Measured $(date -u '+%Y-%m-%d %H:%M') UTC by \`bench/runtime/templates.sh\` ($build \`h8s\` binary), accelerator **${accel}**,
2 host cores shared with other work (load average ${load0} at the start, ${load1} at the end); guest
\`$kernel\` (${ksource}), 256 MiB, 1 vCPU, busybox erofs image, translation cache 32 MiB
unless said otherwise; pod supervisor ${shim}; QEMU's libraries: ${qemulibs}. All rows below come from this one run.

**Where a template start's time goes** (\`h8s run -d IMAGE -- sh -c 'echo hi'\`, each pod's
\`start_timeline\` from \`h8s ps --json\`; offsets from the moment the CLI was started):

$timeline

The same for pods taking a **warm clone** (the pool of two full again before each run):

$timeline_warm

**Start latency** (wall time; \`h8s run --rm IMAGE -- true\` is CLI start to exit: pod created,
container run, pod removed; the three kinds alternate):

| what | runs | min | median | p99 |
|---|---|---|---|---|
| \`h8s run --rm\` taking a **warm clone** (pool full before each run) | $(stats "$work/w") |
| \`h8s run --rm\` back-to-back right after one (a warm clone when one is ready, else restored) | $(stats "$work/wb") |
| \`h8s run --rm\` restored from a VM template (no warm clones) | $(stats "$work/t") |
| \`h8s run --rm --cold\` (boots the kernel) | $(stats "$work/c") |
| baseline: bare \`qemu-system-x86_64\` boot to the agent's bench marker | $(stats "$work/b") |
| burst: $burst concurrent \`h8s run -d\` from the template (each until its container runs) | $(stats "$work/burst") |
$apirows

Median ratio cold / template: $(python3 -c "print(round($(med "$work/c")/$(med "$work/t"),1))")×. Burst: $burst pods in ${burst_wall} ms
($(python3 -c "print(round($burst/($burst_wall/1000),1))") pods/s); ${booted% *} of ${booted#* } restored from the template.
Template build (boot + save, in the background): ${build_ms} ms.

**Exec round trip** (the pod started with the pool full; its boot: ${exec_boot//-/ }):

| what | runs | min | median | p99 |
|---|---|---|---|---|
${execrows}

**Stop and remove** (an idle template pod running \`sleep\`; CLI start to exit):

| what | runs | min | median | p99 |
|---|---|---|---|---|
| \`h8s stop -t 0\` (containers killed, the VM powers off) | $(stats "$work/stop") |
| \`h8s rm\` of the stopped pod | $(stats "$work/rm") |
| \`h8s rm -f\` of a running pod | $(stats "$work/rmf") |
| baseline: \`h8s ps -q\` (CLI start-up, the runtime's state read) | $(stats "$work/ps") |

**PSS per idle pod** (QEMU + its supervisor, \`sleep\`ing busybox pods restored from the template,
10 s after the last start, \`Pss\` from \`smaps_rollup\`; the translation cache's resident part is in QEMU's):

| idle pods | min | median | max | QEMU (median) | supervisor (median) | translation cache resident (median) |
|---|---|---|---|---|---|---|
| $p10n | $p10min MiB | **$p10med MiB** | $p10max MiB | $p10q MiB | $p10s MiB | $p10tb MiB |
| $p50n | $p50min MiB | **$p50med MiB** | $p50max MiB | $p50q MiB | $p50s MiB | $p50tb MiB |
| baseline: $p10ln, QEMU with the system's libraries (\`H8S_QEMU_LIBS=0\`: no stand-ins) | $p10lmin MiB | $p10lmed MiB | $p10lmax MiB | $p10lq MiB | $p10ls MiB | $p10ltb MiB |

Pods that took **warm clones** ($pwn idle pods, each started with the pool full): median **$pwmed MiB**
PSS per pod (QEMU + supervisor, same method); the $pwcn clones waiting beside them (node
overhead, no pod's): median $pwcmed MiB each.

**Memory a clone frees** (a clone writes 100 MiB into its container's writable layer, then
removes it; QEMU's RSS, medians; "after": once 64 MiB came back, or 5 s after the removal; the two
kinds alternate):

| what | runs | RSS with the file | RSS after | came back | time until back (median) |
|---|---|---|---|---|---|
$(freedrow "$work/freed" "free page reporting (default): the balloon; the supervisor skips hole punches into the template")
$(freedrow "$work/freed0" "baseline: \`H8S_FREE_PAGE_REPORTING=0\` (no balloon)")

**The translation cache** (\`H8S_TCG_TB_MIB\`; each size its own template; ${TB_RUNS:-10} runs of
\`h8s run --rm … true\` per size, the sizes alternating; PSS at $idle idle pods):

| cache | runs | min | median | p99 | PSS per idle pod (median) | cache resident (median) |
|---|---|---|---|---|---|---|
$tbrows
<!-- bench:runtime:${block_name}:end -->
MD
)
python3 - "$block" "$block_name" <<'PY'
import sys,re
b=sys.argv[1]; n=sys.argv[2]; p="BENCHMARKS.md"; s=open(p).read()
if f"<!-- bench:runtime:{n}:begin -->" in s:
    s=re.sub(rf"<!-- bench:runtime:{n}:begin -->.*?<!-- bench:runtime:{n}:end -->", lambda m: b, s, flags=re.S)
elif "<!-- bench:runtime:templates:end -->" in s:
    s=s.replace("<!-- bench:runtime:templates:end -->", "<!-- bench:runtime:templates:end -->\n\n"+b, 1)
else:
    s=s.replace("<!-- bench:runtime:begin -->", "<!-- bench:runtime:begin -->\n### VM templates (issue 15)\n\n"+b+"\n", 1)
open(p,"w").write(s)
PY
echo "$block"
