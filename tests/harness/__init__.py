"""Test harness: the real ComfyUI runtime (in-process and as a server), model and data fixtures.

The server is the product's own (scripts/comfy_server.py, which the demo runs on): its folder joins the import
path here, so every test, benchmark and GPU-kit entry point that imports the harness finds it.
"""
import pathlib
import sys

SCRIPTS = str(pathlib.Path(__file__).resolve().parents[2] / "scripts")
if SCRIPTS not in sys.path:
    sys.path.append(SCRIPTS)
