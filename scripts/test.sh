#!/usr/bin/env bash
# The test command: provisions the runtime (idempotent), then runs the whole suite against it.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k train -x`.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
eval "$(bash "$repo/scripts/provision.sh" | sed 's/^/export /')"
cd "$repo"
export COMFYUI_PATH
set +e
"$PYTHON" -m pytest "$@"
status=$?
set -e
# pytest exits 5 when it collected no tests: that must not pass as green.
if [ "$status" -eq 5 ]; then echo "no tests were collected" >&2; exit 1; fi
exit "$status"
