#!/usr/bin/env bash
# Build the GPU check kit's bundle in .gpu-bundle/ (ignored by git; the device tool carries it): the ComfyUI
# 0.3.75 tree, the current ComfyUI tree, and the Python packages the GPU machine lacks, built for its Python.
# Needs the package registry. Prints the bundle's size and stops if it exceeds what the 64 MiB transfer limit
# leaves beside the repository.
#
#   bash tests/gpu/prepare.sh [CURRENT_COMFYUI_TREE]    (default: $COMFYUI_PATH)
#   GPU_BUNDLE=dir (default .gpu-bundle)  GPU_PYTHON_VERSION=3.12  PYTHON=python3 (runs pip)
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
current=${1:-${COMFYUI_PATH:-}}
if [ -z "$current" ]; then
  echo "prepare.sh: pass the current ComfyUI tree (a 0.33-style checkout) or set COMFYUI_PATH." >&2
  exit 2
fi
old=$(bash "$repo/scripts/comfyui_0375.sh")
exec "${PYTHON:-python3}" "$repo/tests/gpu/bundle.py" build --out "${GPU_BUNDLE:-$repo/.gpu-bundle}" \
  --tree "$old" --tree "$current" --python-version "${GPU_PYTHON_VERSION:-3.12}"
