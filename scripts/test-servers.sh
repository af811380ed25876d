#!/usr/bin/env bash
# Start the local test servers (SeaweedFS for S3, fake-gcs-server, Azurite) the way the test
# fixtures do, print the `export` lines that point hangar at them, and stop them on Ctrl-C.
#   scripts/test-servers.sh [s3] [gcs] [azure] [--dir DIR] [--env-file FILE]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$repo/.venv/bin/python}"
[ -x "$python" ] || python=python3
cd "$repo"
PYTHONPATH="$repo/tests${PYTHONPATH:+:$PYTHONPATH}" exec "$python" -m servers "$@"
