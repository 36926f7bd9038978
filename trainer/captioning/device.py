"""Which device captioners run on, and giving the memory back to ComfyUI (and training) afterwards."""
from __future__ import annotations

import gc

import comfy.model_management as model_management
import torch


def captioner_device() -> tuple[torch.device, torch.dtype]:
    """ComfyUI's compute device; half precision on GPUs that handle it, else float32."""
    device = model_management.get_torch_device()
    if device.type == "cpu":
        return device, torch.float32
    return device, torch.float16 if model_management.should_use_fp16(device) else torch.float32


def make_room(device: torch.device, bytes_needed: int) -> None:
    """Ask ComfyUI to unload cached models until the captioner fits (no-op on CPU)."""
    if device.type != "cpu":
        model_management.free_memory(bytes_needed, device)


def release_memory() -> None:
    """Collect the dropped captioner and return cached GPU memory."""
    gc.collect()
    model_management.soft_empty_cache()
