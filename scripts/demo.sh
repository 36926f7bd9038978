#!/usr/bin/env bash
# The demo: provisions the runtime (idempotent), starts ComfyUI headless with LoRA Lab, trains a LoRA for a new
# concept on the built-in toy-world model (a few minutes on a CPU; the toy-world example workflow) and prints
# where the LoRA, the sweep grid and the loss chart were written; a rerun with nothing changed reuses them.
# --checkpoint runs the SD1.5 example instead.
#   bash scripts/demo.sh [--dataset folder [--caption]] [--checkpoint sd15.safetensors] [--retrain] [--base-directory dir]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
eval "$(bash "$repo/scripts/provision.sh" | sed 's/^/export /')"
export COMFYUI_PATH
exec "$PYTHON" "$repo/scripts/demo.py" "$@"
