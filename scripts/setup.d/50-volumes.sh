#!/usr/bin/env bash
# Block volumes (docs/volumes.md): qemu-img makes, resizes and checks the volumes' backing files;
# QEMU's rbd driver (block-rbd.so) is in qemu-block-extra, only a *recommended* package of
# qemu-system-x86, so it is named here (set-up installs without recommends); e2fsprogs' mkfs.ext4
# formats a freshly made, empty volume file (no mount on the host); fio measures volume I/O for
# BENCHMARKS.md; the ceph packages run the one-node Ceph cluster the rbd tests start themselves
# (ceph-mon, ceph-mgr, ceph-osd; ceph-common has the `ceph` and `rbd` tools).
# Idempotent: a second run only checks.
set -euo pipefail
pkgs=(qemu-utils qemu-block-extra e2fsprogs fio ceph-mon ceph-mgr ceph-osd ceph-common)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "50-volumes: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# QEMU must find its rbd block driver module.
ls /usr/lib/x86_64-linux-gnu/qemu/block-rbd.so >/dev/null
