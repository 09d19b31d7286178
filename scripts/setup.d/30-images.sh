#!/usr/bin/env bash
# Images: erofs-utils (mkfs.erofs), busybox-static for the test image, docker-registry for
# the registry tests; builds the busybox test image into the cache and imports it into
# the default image store (${H8S_DATA_DIR:-~/.local/share/h8s}/images) as busybox:latest,
# with its erofs root filesystem built, so `h8s run busybox …` works after set-up.
set -euo pipefail
cd "$(dirname "$0")/../.."
export H8S_CACHE="${H8S_CACHE:-$HOME/.cache/h8s}"

missing=()
for p in erofs-utils busybox-static docker-registry; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Debian's docker-registry package starts a registry on :5000 at install; the tests
# start their own on loopback, so keep the system one out of the way.
if systemctl is-active --quiet docker-registry 2>/dev/null; then
  systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi

bash scripts/build-test-image.sh "$H8S_CACHE/images/busybox-oci"

# Build h8s with the profile the caller will use (scripts/up: release; scripts/test: debug), so a
# newcomer waits for one build of it, not two.
profile="${H8S_BUILD_PROFILE:-debug}"
echo "images: building h8s ($profile) to import the test image"
# With the standalone pod supervisor `h8s` runs from beside itself (smaller per pod).
bins=(-p h8s -p h8s-runtime --bin h8s --bin h8s-pod-shim)
if [ "$profile" = release ]; then cargo build --release --locked "${bins[@]}"; else cargo build --locked "${bins[@]}"; fi
h8s=target/$profile/h8s
id="$("$h8s" image import "$H8S_CACHE/images/busybox-oci" --name busybox:latest | awk '{print $2}')"
# Also as busybox:1.35 (Debian's busybox-static version): a tag other than latest has Kubernetes'
# default imagePullPolicy IfNotPresent, so `kubectl create deployment --image=busybox:1.35` runs
# from this imported copy on a machine without Docker Hub, as on any cluster with the image
# pre-loaded (`busybox`/`:latest` means Always: the node agent pulls it from Docker Hub).
"$h8s" image import "$H8S_CACHE/images/busybox-oci" --name busybox:1.35 >/dev/null
"$h8s" image rootfs busybox:latest >/dev/null
echo "images: busybox:latest and busybox:1.35 imported ($id), rootfs built"
