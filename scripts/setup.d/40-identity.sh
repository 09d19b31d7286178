#!/usr/bin/env bash
# The real OpenStack pieces the identity tests speak to h8s with, each in a venv under the
# cache (pip only):
#   $H8S_CACHE/openstack/bin/openstack        python-openstackclient (with keystoneauth1)
#   $H8S_CACHE/keystone/bin/keystone-manage   OpenStack Keystone + gunicorn: the external
#                                             Keystone of tests/tenancy_keystone.rs (SQLite)
# Idempotent: an existing, working venv is kept.
set -euo pipefail
CACHE="${H8S_CACHE:-$HOME/.cache/h8s}"

if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends python3-venv
fi

VENV="$CACHE/openstack"
if ! { [ -x "$VENV/bin/openstack" ] && "$VENV/bin/openstack" --version >/dev/null 2>&1; }; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check python-openstackclient
  "$VENV/bin/openstack" --version
fi

VENV="$CACHE/keystone"
if ! { [ -x "$VENV/bin/keystone-manage" ] && [ -x "$VENV/bin/gunicorn" ] \
       && "$VENV/bin/python" -c 'import keystone.server.wsgi' >/dev/null 2>&1; }; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check keystone gunicorn
  "$VENV/bin/python" -c 'import keystone.server.wsgi'
fi
