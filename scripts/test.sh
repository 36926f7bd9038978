#!/usr/bin/env bash
# The test command: provisions the runtime (idempotent), then runs the whole suite against it.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k train -x`; LORALAB_TEST_WORKERS=1 runs in one process.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
eval "$(bash "$repo/scripts/provision.sh" | sed 's/^/export /')"
# The browser test drives Debian's chromium (a test tool's own browser download cannot work offline).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "[test] installing chromium for the browser test" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
cd "$repo"
export COMFYUI_PATH
# One test worker per core (pytest-xdist), each test file on one worker (its module fixtures built once), one torch
# thread per worker: small models run fastest single-threaded, and two workers' threads would only wait on each other.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
set +e
"$PYTHON" -m pytest -n "${LORALAB_TEST_WORKERS:-auto}" --dist loadfile "$@"
status=$?
set -e
# pytest exits 5 when it collected no tests: that must not pass as green.
if [ "$status" -eq 5 ]; then echo "no tests were collected" >&2; exit 1; fi
exit "$status"
