#!/usr/bin/env bash
# Builds a small test image from Debian's busybox-static into an OCI image layout:
#   scripts/build-test-image.sh [OUT_DIR]   (default: $H8S_CACHE/images/busybox-oci)
# One gzip layer (/bin/busybox, its applet symlinks, /etc/passwd+group, /tmp, /root …),
# an OCI config (Cmd ["sh"], PATH), a manifest, and index.json naming it busybox:latest.
# Deterministic (fixed mtimes, sorted, numeric root ownership, gzip -n): the same
# busybox-static gives the same digests, so re-running only checks.
set -euo pipefail

H8S_CACHE="${H8S_CACHE:-$HOME/.cache/h8s}"
out="${1:-$H8S_CACHE/images/busybox-oci}"
name="${H8S_TEST_IMAGE_NAME:-busybox:latest}"

if ! [ -x /bin/busybox ] || ! dpkg -s busybox-static >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends busybox-static
fi
bb=/bin/busybox
stamp="$(sha256sum "$bb" | cut -c1-64) $name"
if [ -f "$out/.h8s-source" ] && [ "$(cat "$out/.h8s-source")" = "$stamp" ]; then
  echo "test image: $out is up to date"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp,proc,sys,dev,var/tmp,home}
chmod 1777 "$root/tmp" "$root/var/tmp"
chmod 0700 "$root/root"
cp "$bb" "$root/bin/busybox"
chmod 0755 "$root/bin/busybox"
# One symlink per applet, at the path busybox itself reports.
"$bb" --list-full | while read -r applet; do
  [ "$applet" = "bin/busybox" ] && continue
  mkdir -p "$root/$(dirname "$applet")"
  ln -sf /bin/busybox "$root/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
printf 'h8s-test\n' >"$root/etc/hostname"

blobs="$work/oci/blobs/sha256"
mkdir -p "$blobs"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -C "$root" -cf "$work/layer.tar" .
diff_id="$(sha256sum "$work/layer.tar" | cut -c1-64)"
gzip -n -9 <"$work/layer.tar" >"$work/layer.tar.gz"
layer="$(sha256sum "$work/layer.tar.gz" | cut -c1-64)"
layer_size="$(stat -c %s "$work/layer.tar.gz")"
mv "$work/layer.tar.gz" "$blobs/$layer"

version="$("$bb" --help 2>&1 | sed -n 1p | awk '{print $2}' || true)"
printf '%s' '{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z",'\
'"config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"],'\
'"Labels":{"org.opencontainers.image.description":"busybox-static '"$version"' test image built by h8s"}},'\
'"rootfs":{"type":"layers","diff_ids":["sha256:'"$diff_id"'"]},'\
'"history":[{"created":"1970-01-01T00:00:00Z","created_by":"scripts/build-test-image.sh"}]}' >"$work/config.json"
config="$(sha256sum "$work/config.json" | cut -c1-64)"
config_size="$(stat -c %s "$work/config.json")"
mv "$work/config.json" "$blobs/$config"

printf '%s' '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'\
'"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:'"$config"'","size":'"$config_size"'},'\
'"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:'"$layer"'","size":'"$layer_size"'}]}' \
  >"$work/manifest.json"
manifest="$(sha256sum "$work/manifest.json" | cut -c1-64)"
manifest_size="$(stat -c %s "$work/manifest.json")"
mv "$work/manifest.json" "$blobs/$manifest"

printf '{"imageLayoutVersion":"1.0.0"}' >"$work/oci/oci-layout"
printf '%s' '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":['\
'{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:'"$manifest"'","size":'"$manifest_size"','\
'"platform":{"architecture":"amd64","os":"linux"},'\
'"annotations":{"org.opencontainers.image.ref.name":"'"$name"'"}}]}' >"$work/oci/index.json"
printf '%s' "$stamp" >"$work/oci/.h8s-source"

mkdir -p "$(dirname "$out")"
rm -rf "$out.old"
[ -e "$out" ] && mv "$out" "$out.old"
mv "$work/oci" "$out"
rm -rf "$out.old"
echo "test image: $out (manifest sha256:$manifest, layer $layer_size bytes)"
