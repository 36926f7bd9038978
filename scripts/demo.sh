#!/usr/bin/env bash
# The demo: provisions the runtime (idempotent), starts ComfyUI headless with LoRA Lab, trains a LoRA for a new
# concept on the built-in toy-world model (about a minute on a CPU; the toy-world example workflow) and prints
# where the LoRA, the sweep grid and the loss chart were written. --checkpoint runs the SD1.5 example instead.
#   bash scripts/demo.sh [--dataset folder] [--checkpoint sd15.safetensors] [--base-directory dir]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
eval "$(bash "$repo/scripts/provision.sh" | sed 's/^/export /')"
export COMFYUI_PATH
exec "$PYTHON" "$repo/scripts/demo.py" "$@"
