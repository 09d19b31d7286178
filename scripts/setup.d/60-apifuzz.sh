#!/usr/bin/env bash
# schemathesis (PyPI), the property-based API fuzzer the api_fuzz test points at h8s's own
# OpenAPI document, in a venv under the cache.
#   $H8S_CACHE/schemathesis/bin/schemathesis
# Idempotent: an existing, working venv is kept.
set -euo pipefail
CACHE="${H8S_CACHE:-$HOME/.cache/h8s}"
VENV="$CACHE/schemathesis"

if [ -x "$VENV/bin/schemathesis" ] && "$VENV/bin/schemathesis" --version >/dev/null 2>&1; then
  exit 0
fi
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends python3-venv
fi
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check 'schemathesis>=4,<5'
"$VENV/bin/schemathesis" --version
