#!/usr/bin/env bash
# Stops the Ceph daemons ceph-up.sh started in $1 (by their pid files) and removes $1.
set -u
dir=$1
for f in "$dir"/run/*.pid; do
  [ -e "$f" ] && kill "$(cat "$f")" 2>/dev/null
done
for _ in $(seq 50); do
  alive=0
  for f in "$dir"/run/*.pid; do [ -e "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && alive=1; done
  [ $alive = 0 ] && break
  sleep 0.2
done
rm -rf "$dir"
