#!/usr/bin/env bash
# Pod VM guest: Debian's cloud kernel (downloaded and extracted, never installed on the host),
# the static h8s guest agent, and an initramfs holding the agent as /init plus the kernel
# modules the pod VM needs. Writes into $H8S_CACHE/guest:
#   vmlinuz          the guest kernel
#   initramfs.img    /init = h8s-guest, /lib/modules/<release>/{*.ko,modules.dep}
#   guest.env        KERNEL=… INITRAMFS=… RELEASE=… (for scripts and tests)
# Idempotent: re-running only rebuilds what changed.
#
# Knobs: H8S_INITRAMFS_COMPRESS=none|gzip (default none: measured faster to boot under TCG,
# see docs/guest.md).
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

# --- 1. the kernel package: the versioned image linux-image-cloud-amd64 points to ----------
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
cp -u "$kroot/boot/vmlinuz-$release" "$OUT/vmlinuz"

# --- 2. the agent, static ------------------------------------------------------------------
# A separate --target keeps these flags (static CRT) away from the host build's artifacts.
RUSTFLAGS="-C target-feature=+crt-static" CARGO_PROFILE_RELEASE_STRIP=symbols \
  cargo build -q -p h8s-guest --release --target x86_64-unknown-linux-gnu --bin h8s-guest
agent=target/x86_64-unknown-linux-gnu/release/h8s-guest
if ! file "$agent" 2>/dev/null | grep -q 'static' && ldd "$agent" >/dev/null 2>&1; then
  echo "20-guest: $agent is not statically linked" >&2; exit 1
fi

# --- 3. the initramfs -----------------------------------------------------------------------
# What the pod VM needs that this kernel builds as modules (built-ins are skipped by modprobe).
wanted=(virtio_mmio virtio_blk virtio_net virtio_console erofs overlay)
mods=()
for m in "${wanted[@]}"; do
  while read -r verb path _; do
    [ "$verb" = insmod ] && mods+=("${path#"$kmods"/}")
  done < <(modprobe -d "$kroot" -S "$release" --show-depends "$m")
done
mapfile -t mods < <(printf '%s\n' "${mods[@]}" | awk '!seen[$0]++')

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
  cp "$kmods/modules.builtin" "$kmods/modules.order" "$kmods/modules.builtin.modinfo" \
     "$stage/lib/modules/$release/"
  depmod -b "$stage" "$release"
  # The agent reads only modules.dep.
  find "$stage/lib/modules/$release" -maxdepth 1 -name 'modules.*' ! -name modules.dep -delete
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

env_text="KERNEL=$OUT/vmlinuz
INITRAMFS=$OUT/initramfs.img
RELEASE=$release
KERNEL_PACKAGE=$(basename "$deb")"
# Rewritten only on change: the guest crate's build script watches it.
[ "$(cat "$OUT/guest.env" 2>/dev/null)" = "$env_text" ] || printf '%s\n' "$env_text" > "$OUT/guest.env"
echo "20-guest: kernel    $OUT/vmlinuz ($(basename "$deb"), $(du -h "$OUT/vmlinuz" | cut -f1))"
echo "20-guest: initramfs $OUT/initramfs.img ($(du -h "$OUT/initramfs.img" | cut -f1), $COMPRESS)"
