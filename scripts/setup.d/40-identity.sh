#!/usr/bin/env bash
# The real OpenStack clients the identity tests speak to h8s with: python-openstackclient
# (the `openstack` CLI, with keystoneauth1) in a venv under the cache.
#   $H8S_CACHE/openstack/bin/openstack
# Idempotent: an existing, working venv is kept.
set -euo pipefail
CACHE="${H8S_CACHE:-$HOME/.cache/h8s}"
VENV="$CACHE/openstack"

if [ -x "$VENV/bin/openstack" ] && "$VENV/bin/openstack" --version >/dev/null 2>&1; then
  exit 0
fi
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends python3-venv
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check python-openstackclient
"$VENV/bin/openstack" --version
