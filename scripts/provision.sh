#!/usr/bin/env bash
# Provision a Python environment and a ComfyUI tree for the tests and the demo.
# Idempotent: a second run only checks a stamp and prints the two paths.
#
#   COMFYUI_PATH=/path/to/ComfyUI  use that tree (0.3.x or a current 0.33-style tree)
#   LORALAB_HOME=dir               where environments and caches live (default ~/.cache/comfyui-lora-lab)
#
# Prints two lines: "PYTHON=<venv python>" and "COMFYUI_PATH=<tree>".
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
home=${LORALAB_HOME:-$HOME/.cache/comfyui-lora-lab}
base_python=${PYTHON:-python3}
mkdir -p "$home"
log() { echo "[provision] $*" >&2; }

if [ -n "${COMFYUI_PATH:-}" ]; then
  comfy=$(cd "$COMFYUI_PATH" && pwd)
else
  comfy=$(LORALAB_HOME=$home PYTHON=$base_python bash "$repo/scripts/comfyui_0375.sh")
fi
[ -f "$comfy/comfyui_version.py" ] || { echo "COMFYUI_PATH=$comfy is not a ComfyUI tree (no comfyui_version.py)" >&2; exit 2; }
version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$comfy/comfyui_version.py")

# Torch builds verified with each ComfyUI line on CPU-only machines: ComfyUI imports torchvision, and
# current ComfyUI also imports torchaudio, whose newest registry build pairs with torch 2.11.
case "$version" in
  0.3.*) torch_pins="torch==2.12.0 torchvision==0.27.0" ;;
  *)     torch_pins="torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0" ;;
esac

venv=$home/venv-comfyui-$version
stamp_value=$(cat "$comfy/requirements.txt" "$repo/requirements.txt" "$repo/requirements-dev.txt" <(echo "$torch_pins") | sha256sum | cut -c1-16)
if [ -f "$venv/.loralab-stamp" ] && [ "$(cat "$venv/.loralab-stamp")" = "$stamp_value" ]; then
  echo "PYTHON=$venv/bin/python"; echo "COMFYUI_PATH=$comfy"; exit 0
fi

log "building $venv for ComfyUI $version ($torch_pins)"
[ -x "$venv/bin/python" ] || "$base_python" -m venv "$venv"
pip() { "$venv/bin/python" -m pip -q --disable-pip-version-check "$@"; }
constraints=$(mktemp)
tr ' ' '\n' <<<"$torch_pins" >"$constraints"
pip install $torch_pins
# torch/torchvision/torchaudio come from the pins above; 0.3.75 runs without torchaudio.
grep -vE '^\s*(torch|torchvision|torchaudio)\s*$' "$comfy/requirements.txt" >"$venv/comfyui-requirements.txt"
pip install -c "$constraints" -r "$venv/comfyui-requirements.txt"
pip install -c "$constraints" -r "$repo/requirements.txt" -r "$repo/requirements-dev.txt"
rm -f "$constraints"
echo "$stamp_value" >"$venv/.loralab-stamp"
echo "PYTHON=$venv/bin/python"; echo "COMFYUI_PATH=$comfy"
