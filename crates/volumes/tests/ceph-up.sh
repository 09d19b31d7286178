#!/usr/bin/env bash
# Starts a one-node Ceph cluster (one mon, one mgr, one OSD with BlueStore on a file) in $1,
# on port $2 of address $3 (default loopback; a multi-node test gives its bridge address so
# agents in network namespaces reach it), for the rbd tests; writes $1/ceph.conf (with the
# admin keyring) and creates pool "h8s". Stop it with ceph-down.sh $1.
set -euo pipefail
dir=$1; port=$2; addr=${3:-127.0.0.1}
mkdir -p "$dir"/{mon,mgr,osd,run,log}
fsid=$(cat /proc/sys/kernel/random/uuid)
conf=$dir/ceph.conf
cat > "$conf" <<C
[global]
fsid = $fsid
mon host = v2:$addr:$port
mon initial members = a
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
run dir = $dir/run
admin socket = $dir/run/\$name.asok
log file = $dir/log/\$name.log
pid file = $dir/run/\$name.pid
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
ms bind ipv4 = true
ms bind ipv6 = false
public addr = $addr
mon data = $dir/mon
mgr data = $dir/mgr
osd data = $dir/osd
osd objectstore = bluestore
bluestore block path = $dir/osd/block.file
bluestore block create = true
bluestore block size = 4294967296
bluestore fsck on mount = false
osd memory target = 939524096
bluestore cache autotune = false
bluestore cache size = 134217728
osd op num shards = 1
osd op num threads per shard = 1
mon osd full ratio = 0.97
mon data avail warn = 2
mon data avail crit = 1
auth allow insecure global id reclaim = false
mgr disabled modules = dashboard,prometheus,restful,cephadm,orchestrator,balancer,pg_autoscaler
[client]
keyring = $dir/admin.keyring
[mgr]
keyring = $dir/mgr/keyring
[osd]
keyring = $dir/osd/keyring
C
ceph-authtool --create-keyring "$dir/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool --create-keyring "$dir/admin.keyring" --gen-key -n client.admin \
  --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
ceph-authtool "$dir/mon.keyring" --import-keyring "$dir/admin.keyring" >/dev/null
monmaptool --create --fsid "$fsid" --addv a "[v2:$addr:$port]" "$dir/monmap" >/dev/null
ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/mon.keyring"
ceph-mon -c "$conf" -i a
ceph -c "$conf" auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' -o "$dir/mgr/keyring"
ceph-mgr -c "$conf" -i x --mgr-data "$dir/mgr"
uuid=$(cat /proc/sys/kernel/random/uuid)
id=$(ceph -c "$conf" osd new "$uuid")
ceph -c "$conf" auth get-or-create "osd.$id" mon 'allow profile osd' mgr 'allow profile osd' osd 'allow *' -o "$dir/osd/keyring"
ceph-osd -c "$conf" -i "$id" --mkfs --osd-uuid "$uuid" --osd-data "$dir/osd" --keyring "$dir/osd/keyring" >/dev/null 2>&1
ceph-osd -c "$conf" -i "$id" --osd-data "$dir/osd" --keyring "$dir/osd/keyring"
ceph -c "$conf" osd pool create h8s 8 8 >/dev/null
rbd -c "$conf" pool init h8s
echo ok
