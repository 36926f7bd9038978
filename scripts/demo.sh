#!/usr/bin/env bash
# The demo: provisions the runtime (idempotent), starts ComfyUI headless with LoRA Lab, runs the example
# pipeline and prints where the LoRA, the sweep grid and the loss chart were written.
#   bash scripts/demo.sh [--checkpoint model.safetensors] [--dataset folder]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
eval "$(bash "$repo/scripts/provision.sh" | sed 's/^/export /')"
export COMFYUI_PATH
exec "$PYTHON" "$repo/scripts/demo.py" "$@"
