"""Headless LoRA Lab: queue a workflow on a running ComfyUI, follow it, print what it produced.

Run `python -m loralab_cli --help` from the pack's folder (custom_nodes/<this pack>).
"""
