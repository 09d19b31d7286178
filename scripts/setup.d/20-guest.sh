#!/usr/bin/env bash
# Pod VM guest: a minimal kernel built from Debian's linux-source-6.1 (default) or Debian's cloud
# kernel (downloaded and extracted, never installed on the host), the static h8s guest agent,
# and an initramfs holding the agent as /init plus, for the cloud kernel, the modules the pod VM
# needs. Writes into $H8S_CACHE/guest:
#   vmlinuz          the guest kernel
#   initramfs.img    /init = h8s-guest, /lib/modules/<release>/{*.ko,modules.dep}
#   guest.env        KERNEL=… INITRAMFS=… RELEASE=… (for scripts and tests)
#   warmup.erofs     a static busybox: the warm clones' warm-up container (docs/runtime.md)
# Idempotent: re-running only rebuilds what changed.
#
# Knobs: H8S_GUEST_KERNEL=minimal|cloud (default minimal: a small kernel built once from
# Debian's linux-source-6.1, see below; cloud: Debian's cloud kernel, no build),
# H8S_INITRAMFS_COMPRESS=none|gzip (default none).
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE="${H8S_CACHE:-$HOME/.cache/h8s}"
OUT="$CACHE/guest"
COMPRESS="${H8S_INITRAMFS_COMPRESS:-none}"
mkdir -p "$OUT/debs"

need=()
for p in cpio kmod binutils; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# --- 1. the kernel ----------------------------------------------------------------------------
# cloud: the versioned image linux-image-cloud-amd64 points to, extracted.
pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null \
      | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
if [ -z "$pkg" ]; then
  apt-get update -qq
  pkg=$(apt-cache depends linux-image-cloud-amd64 \
        | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
fi
[ -n "$pkg" ] || { echo "20-guest: cannot resolve linux-image-cloud-amd64" >&2; exit 1; }
deb=$(ls "$OUT/debs/${pkg}_"*.deb 2>/dev/null | head -n1 || true)
if [ -z "$deb" ]; then
  echo "20-guest: downloading $pkg"
  # apt's _apt user may not write here; apt then downloads as root (a warning, not an error).
  (cd "$OUT/debs" && apt-get download -q "$pkg" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
  deb=$(ls "$OUT/debs/${pkg}_"*.deb | head -n1)
fi
kroot="$OUT/kernel/$(basename "$deb" .deb)"
if [ ! -e "$kroot/.extracted" ]; then
  rm -rf "$kroot"; mkdir -p "$kroot"
  dpkg-deb -x "$deb" "$kroot"
  touch "$kroot/.extracted"
fi
release=$(ls "$kroot/lib/modules" | head -n1)
kmods="$kroot/lib/modules/$release"
[ -s "$kmods/modules.dep" ] || depmod -b "$kroot" "$release"
kernel="$kroot/boot/vmlinuz-$release"
kernel_desc=$(basename "$deb")

# minimal (the default): tinyconfig + what a pod needs, everything built in, LZ4, from Debian's
# linux-source-6.1 (BENCHMARKS.md "Guest kernel": cold boots and the VM test suites take about a
# third of the cloud kernel's time under TCG). The build takes minutes (niced; a progress line a
# minute); it is redone only when the option list or the source changes. The cloud kernel above
# stays unpacked beside it: H8S_GUEST_KERNEL=cloud switches back without a download.
if [ "${H8S_GUEST_KERNEL:-minimal}" = minimal ]; then
  need=()
  for p in linux-source-6.1 build-essential bc bison flex libelf-dev lz4 xz-utils; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
  done
  if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    # On the machine image this transaction also upgrades linux-libc-dev and linux-perf (both
    # from Debian's kernel source, shipped with the image at an older version); h8s needs
    # neither. Named here so that upgrade has a known origin (shared/tools/fresh-check).
    apt-get install -y -qq --no-install-recommends "${need[@]}"
  fi
  enable=(64BIT SMP PRINTK TTY SERIAL_8250 SERIAL_8250_CONSOLE UNIX98_PTYS VIRTIO_CONSOLE HVC_DRIVER
    BLK_DEV_INITRD BINFMT_ELF BINFMT_SCRIPT PROC_FS PROC_SYSCTL SYSFS DEVTMPFS TMPFS TMPFS_POSIX_ACL SHMEM
    NET UNIX INET IPV6 NETDEVICES NET_CORE BLOCK BLK_DEV VIRTIO_MENU VIRTIO VIRTIO_MMIO
    VIRTIO_MMIO_CMDLINE_DEVICES VIRTIO_BLK VIRTIO_NET VIRTIO_BALLOON VETH EXT4_FS MISC_FILESYSTEMS EROFS_FS
    EROFS_FS_ZIP OVERLAY_FS NAMESPACES UTS_NS SYSVIPC POSIX_MQUEUE IPC_NS PID_NS NET_NS USER_NS CGROUPS
    MEMCG CGROUP_PIDS CPUSETS CGROUP_SCHED CGROUP_FREEZER FUTEX EPOLL SIGNALFD TIMERFD EVENTFD AIO
    FILE_LOCKING INOTIFY_USER FHANDLE MULTIUSER POSIX_TIMERS HYPERVISOR_GUEST PARAVIRT KVM_GUEST PVH
    NO_HZ_IDLE HIGH_RES_TIMERS NETFILTER NF_TABLES NF_TABLES_IPV4 NF_TABLES_IPV6 NF_TABLES_INET
    NF_CONNTRACK NF_NAT NFT_NAT NFT_CT VSOCKETS VIRTIO_VSOCKETS SECCOMP SECCOMP_FILTER ACPI PCI
    KERNEL_LZ4
    # The pod's cgroup v2 controllers as the jail sets them (cpu.max, io.max; the cgroup v2
    # test boots this kernel) and a loop device for that test's io.max check.
    CGROUP_SCHED FAIR_GROUP_SCHED CFS_BANDWIDTH SWAP BLK_CGROUP BLK_DEV_THROTTLING BLK_DEV_LOOP
    # What ordinary workloads call and tinyconfig leaves out: madvise/fadvise (Go, the JVM and
    # glibc's malloc), membarrier, rseq, process_vm_readv; BUG() checks; full-size tables.
    ADVISE_SYSCALLS MEMBARRIER RSEQ CROSS_MEMORY_ATTACH BUG BASE_FULL
    # Hardening the cloud kernel has: KASLR (cold boots; clones share their template's layout,
    # see docs/runtime.md) and the strong stack protector.
    RELOCATABLE RANDOMIZE_BASE STACKPROTECTOR STACKPROTECTOR_STRONG
    # What tenants' images expect of a Linux kernel and tinyconfig leaves out: io_uring,
    # AF_PACKET (DHCP clients, tcpdump), keyrings, socket diagnostics (`ss`), file change
    # notification, userfaultfd, checkpoint/restore (CRIU), TUN, multicast, xattrs on tmpfs.
    IO_URING PACKET KEYS INET_DIAG INET_TCP_DIAG INET_UDP_DIAG UNIX_DIAG FANOTIFY DNOTIFY
    USERFAULTFD CHECKPOINT_RESTORE TUN IP_MULTICAST TMPFS_XATTR)
  disable=(KERNEL_XZ KERNEL_GZIP ACPI_AC BATTERY BUTTON FAN THERMAL ACPI_TABLE_UPGRADE VIRTIO_PCI MODULES)
  srcver=$(dpkg-query -W -f '${Version}' linux-source-6.1)
  mdir="$OUT/minimal"
  mstamp=$(printf '%s\n' "$srcver" "${enable[*]}" "${disable[*]}" | sha256sum | cut -d' ' -f1)
  if [ ! -s "$mdir/bzImage" ] || [ "$(cat "$mdir/stamp" 2>/dev/null)" != "$mstamp" ]; then
    echo "20-guest: building the minimal kernel from linux-source-6.1 $srcver (minutes)"
    rm -rf "$mdir"; mkdir -p "$mdir"
    tar -C "$mdir" -xaf /usr/src/linux-source-6.1.tar.xz
    ksrc="$mdir/linux-source-6.1"
    (
      cd "$ksrc"
      make -s tinyconfig
      args=()
      for o in "${enable[@]}"; do args+=(--enable "$o"); done
      for o in "${disable[@]}"; do args+=(--disable "$o"); done
      ./scripts/config "${args[@]}"
      make -s olddefconfig
      t0=$(date +%s)
      # A line a minute, so a first set-up does not look hung.
      ( while sleep 60 >/dev/null 2>&1; do
          echo "20-guest: building the minimal kernel, $(( ($(date +%s) - t0) / 60 )) min so far"
        done ) &
      ticker=$!
      trap 'kill "$ticker" 2>/dev/null || true' EXIT
      nice -n 19 make -s -j"$(nproc)" bzImage
      echo "20-guest: built the minimal kernel in $(( $(date +%s) - t0 )) s"
      make -s kernelrelease > "$mdir/release"
    )
    cp "$ksrc/arch/x86/boot/bzImage" "$mdir/bzImage"
    cp "$ksrc/.config" "$mdir/config"
    rm -rf "$ksrc"
    echo "$mstamp" > "$mdir/stamp"
  fi
  kernel="$mdir/bzImage"
  release=$(cat "$mdir/release")
  kernel_desc="minimal $release from linux-source-6.1 $srcver"
fi
cp -u "$kernel" "$OUT/vmlinuz.tmp" 2>/dev/null || cp "$kernel" "$OUT/vmlinuz.tmp"
cmp -s "$OUT/vmlinuz.tmp" "$OUT/vmlinuz" 2>/dev/null && rm "$OUT/vmlinuz.tmp" || mv "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"

# --- 2. the agent, static ------------------------------------------------------------------
# A separate --target keeps these flags (static CRT) away from the host build's artifacts.
RUSTFLAGS="-C target-feature=+crt-static" CARGO_PROFILE_RELEASE_STRIP=symbols \
  cargo build -q -p h8s-guest --release --target x86_64-unknown-linux-gnu --bin h8s-guest
agent=target/x86_64-unknown-linux-gnu/release/h8s-guest
if ! file "$agent" 2>/dev/null | grep -q 'static' && ldd "$agent" >/dev/null 2>&1; then
  echo "20-guest: $agent is not statically linked" >&2; exit 1
fi

# --- 3. the initramfs -----------------------------------------------------------------------
# What the pod VM needs that this kernel builds as modules (built-ins are skipped by modprobe);
# veth joins the pod to its in-VM service namespace (Service proxy and cluster DNS);
# virtio_balloon reports freed guest memory to the host (free page reporting, cold pods).
wanted=(virtio_mmio virtio_blk virtio_net virtio_console erofs overlay veth virtio_balloon)
mods=()
[ "${H8S_GUEST_KERNEL:-minimal}" = minimal ] && wanted=()  # everything is built in
for m in "${wanted[@]}"; do
  while read -r verb path _; do
    [ "$verb" = insmod ] && mods+=("${path#"$kmods"/}")
  done < <(modprobe -d "$kroot" -S "$release" --show-depends "$m")
done
if [ ${#mods[@]} -gt 0 ]; then
  mapfile -t mods < <(printf '%s\n' "${mods[@]}" | awk '!seen[$0]++')
fi

stamp=$( { sha256sum "$agent" | cut -d' ' -f1; echo "$release $COMPRESS ${mods[*]}"; \
           sha256sum "$0" | cut -d' ' -f1; } | sha256sum | cut -d' ' -f1)
if [ -s "$OUT/initramfs.img" ] && [ "$(cat "$OUT/initramfs.stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "20-guest: up to date ($release, ${#mods[@]} modules)"
else
  stage=$(mktemp -d)
  trap 'rm -rf "$stage"' EXIT
  install -m 0755 "$agent" "$stage/init"
  mkdir -p "$stage/dev" "$stage/proc" "$stage/lib/modules/$release"
  # The kernel opens /dev/console for init before anything is mounted.
  mknod -m 600 "$stage/dev/console" c 5 1
  for m in "${mods[@]}"; do
    mkdir -p "$stage/lib/modules/$release/$(dirname "$m")"
    cp "$kmods/$m" "$stage/lib/modules/$release/$m"
  done
  if [ ${#mods[@]} -gt 0 ]; then
    cp "$kmods/modules.builtin" "$kmods/modules.order" "$kmods/modules.builtin.modinfo" \
       "$stage/lib/modules/$release/"
    depmod -b "$stage" "$release"
    # The agent reads only modules.dep.
    find "$stage/lib/modules/$release" -maxdepth 1 -name 'modules.*' ! -name modules.dep -delete
  fi
  case "$COMPRESS" in
    none) (cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --reproducible -R 0:0 --quiet) > "$OUT/initramfs.img.tmp" ;;
    gzip) (cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --reproducible -R 0:0 --quiet | gzip -6 -n) > "$OUT/initramfs.img.tmp" ;;
    *) echo "20-guest: H8S_INITRAMFS_COMPRESS must be none or gzip" >&2; exit 1 ;;
  esac
  mv "$OUT/initramfs.img.tmp" "$OUT/initramfs.img"
  echo "$stamp" > "$OUT/initramfs.stamp"
  rm -rf "$stage"; trap - EXIT
  echo "20-guest: built initramfs ($release, ${#mods[@]} modules: ${mods[*]##*/})"
fi

# --- the warm-up image ------------------------------------------------------------------------
# Warm clones (docs/runtime.md) run one container from it before they wait for a pod: Debian's
# static busybox as /bin/sh, /bin/true and /bin/echo, in erofs. Rebuilt when busybox changes.
wstamp="busybox-static $(dpkg-query -W -f '${Version}' busybox-static), erofs-utils $(dpkg-query -W -f '${Version}' erofs-utils)"
if [ ! -s "$OUT/warmup.erofs" ] || [ "$(cat "$OUT/warmup.stamp" 2>/dev/null)" != "$wstamp" ]; then
  wdir=$(mktemp -d)
  mkdir -p "$wdir/bin" "$wdir/tmp" "$wdir/proc" "$wdir/dev" "$wdir/sys" "$wdir/etc"
  cp /bin/busybox "$wdir/bin/busybox"
  for a in sh true echo; do ln -s busybox "$wdir/bin/$a"; done
  mkfs.erofs --quiet -T0 --all-root "$OUT/warmup.erofs.tmp" "$wdir" >/dev/null
  rm -rf "$wdir"
  mv "$OUT/warmup.erofs.tmp" "$OUT/warmup.erofs"
  echo "$wstamp" > "$OUT/warmup.stamp"
  echo "20-guest: built the warm-up image ($(du -h "$OUT/warmup.erofs" | cut -f1))"
fi

env_text="KERNEL=$OUT/vmlinuz
INITRAMFS=$OUT/initramfs.img
RELEASE=$release
KERNEL_SOURCE=$kernel_desc"
# Rewritten only on change: the guest crate's build script watches it.
[ "$(cat "$OUT/guest.env" 2>/dev/null)" = "$env_text" ] || printf '%s\n' "$env_text" > "$OUT/guest.env"
echo "20-guest: kernel    $OUT/vmlinuz ($kernel_desc, $(du -h "$OUT/vmlinuz" | cut -f1))"
echo "20-guest: initramfs $OUT/initramfs.img ($(du -h "$OUT/initramfs.img" | cut -f1), $COMPRESS)"
