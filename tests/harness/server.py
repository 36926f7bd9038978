"""The ComfyUI server the tests drive: the product's own (scripts/comfy_server.py), which the demo runs on too."""
from comfy_server import PACK_LINK_NAME, ComfyServer, PromptRun, free_port, stop_process  # noqa: F401
