#!/usr/bin/env bash
# QEMU's library stand-ins (docs/runtime.md "QEMU's libraries"): libcapstone.so.4 and
# libpmem.so.1, built from crates/runtime/qemu-lib into $H8S_CACHE/qemu-lib. Debian's QEMU links
# both for features h8s never uses (the debug disassembler, persistent-memory backends); the real
# ones cost every pod's QEMU 1.8 MiB of private memory. The runtime puts this directory first on
# QEMU's library path only while qemu.id (written here once QEMU started with the stand-ins)
# names the QEMU binary in use: after a QEMU upgrade pods load the system's libraries until this
# step runs again. Redone when the sources or the QEMU binary change.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${H8S_CACHE:?}"
OUT="$H8S_CACHE/qemu-lib"
src=crates/runtime/qemu-lib

qemu=$(command -v "${H8S_QEMU:-qemu-system-x86_64}")
qemu=$(readlink -f "$qemu")
id="$(stat -L -c '%s %Y' "$qemu") $qemu"
stamp="$(cat "$src"/* | sha256sum | cut -c1-16)"
if [ "$(cat "$OUT/qemu.id" 2>/dev/null)" = "$id" ] && [ "$(cat "$OUT/stamp" 2>/dev/null)" = "$stamp" ]; then
  exit 0
fi

if ! command -v cc >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends gcc libc6-dev
fi
tmp="$OUT.tmp"
rm -rf "$tmp"
mkdir -p "$tmp"
flags=(-O2 -shared -fPIC -Wall -Werror -Wl,-z,relro,-z,now)
cc "${flags[@]}" -Wl,-soname,libcapstone.so.4 -o "$tmp/libcapstone.so.4" "$src/capstone.c"
cc "${flags[@]}" -Wl,-soname,libpmem.so.1 -Wl,--version-script="$src/pmem.map" \
  -o "$tmp/libpmem.so.1" "$src/pmem.c"
# QEMU is linked with BIND_NOW: a symbol a stand-in lacks fails its start, here.
LD_LIBRARY_PATH="$tmp" "$qemu" -version >/dev/null
loaded=$(LD_LIBRARY_PATH="$tmp" ldd "$qemu")
for lib in libcapstone.so.4 libpmem.so.1; do
  grep -qF "$tmp/$lib" <<< "$loaded" || { echo "qemu-lib: $qemu does not load $tmp/$lib" >&2; exit 1; }
done
echo "$stamp" > "$tmp/stamp"
echo "$id" > "$tmp/qemu.id"
chmod 0755 "$tmp"
chmod 0644 "$tmp"/*
rm -rf "$OUT"
mv "$tmp" "$OUT"
echo "qemu-lib: stand-ins for libcapstone and libpmem in $OUT (for $qemu)"
