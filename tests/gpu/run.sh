#!/usr/bin/env bash
# The GPU check kit (README, Development): correctness, speed and memory of Train LoRA against ComfyUI core's
# TrainLoraNode, on every ComfyUI tree of the bundle, within 8 minutes; writes gpu_report.md/.json and
# gpu_logs.txt to $OUT (else test-artifacts/gpu/).
#
#   bash tests/gpu/run.sh            on the GPU machine, with .gpu-bundle/ from tests/gpu/prepare.sh carried along
#   bash tests/gpu/run.sh --smoke    on CPU at toy sizes against $COMFYUI_PATH (the test suite runs this)
#   bash tests/gpu/run.sh --help     sections, time limits, output folder
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
export PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" "$repo/tests/gpu/kit.py" "$@"
