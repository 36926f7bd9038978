"""Test harness: the real ComfyUI runtime (in-process and as a server), model and data fixtures.

The server is the product's own (scripts/comfy_server.py, which the demo runs on): its folder joins the import
path here, so every test, benchmark and GPU-kit entry point that imports the harness finds it.
"""
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
# scripts/ for the server; the repo root for loralab_cli's in-process boot (benchmarks and the GPU kit run as plain
# scripts, where `python -m pytest`'s working-directory entry is missing). Appended: ComfyUI's own modules come first.
for folder in (str(REPO / "scripts"), str(REPO)):
    if folder not in sys.path:
        sys.path.append(folder)
