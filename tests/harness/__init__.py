"""Test harness: the real ComfyUI runtime (in-process and as a server), model and data fixtures."""
