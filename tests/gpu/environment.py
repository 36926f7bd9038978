"""What the machine and each ComfyUI tree are, as the report's first section: enough to read the figures by."""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from typing import Any

PACKAGES = ("torch", "torchvision", "torchaudio", "transformers", "peft", "safetensors", "accelerate", "bitsandbytes",
            "comfy-aimdo", "comfy-kitchen", "torchsde", "nvidia-ml-py", "av")
IMPORT_NAMES = {"comfy-aimdo": "comfy_aimdo", "comfy-kitchen": "comfy_kitchen", "nvidia-ml-py": "pynvml"}


def package(name: str) -> dict[str, Any]:
    """Version and whether it imports; the module's own version first (a stand-in says it is one)."""
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        version = None
    try:
        module = importlib.import_module(IMPORT_NAMES.get(name, name))
        return {"version": getattr(module, "__version__", None) or version, "imports": True}
    except Exception as error:  # noqa: BLE001  (a package that fails to import is what this records)
        return {"version": version, "imports": False, "error": f"{type(error).__name__}: {error}"[:300]}


def nvidia_smi() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit", "--format=csv,noheader"]
    try:
        return subprocess.run(query, capture_output=True, text=True, timeout=20).stdout.strip() or None
    except (OSError, subprocess.SubprocessError) as error:
        return f"nvidia-smi failed: {error}"


def bitsandbytes_step() -> str:
    """One AdamW8bit step on the GPU: proves bitsandbytes found its CUDA library, before any case needs it."""
    import bitsandbytes
    import torch

    parameter = torch.nn.Parameter(torch.randn(4096, device="cuda"))
    optimizer = bitsandbytes.optim.AdamW8bit([parameter], lr=1e-3)
    parameter.grad = torch.randn_like(parameter)
    before = parameter.detach().clone()
    optimizer.step()
    return f"ok (moved {float((parameter - before).abs().max()):.2g})"


def machine() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
        "nvidia_smi": nvidia_smi(), "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
        "packages": {name: package(name) for name in PACKAGES},
    }
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        info.update(gpu=properties.name, capability=f"{properties.major}.{properties.minor}",
                    gpu_memory_gib=round(properties.total_memory / 1024**3, 1), bf16=torch.cuda.is_bf16_supported())
        try:
            info["bitsandbytes_step"] = bitsandbytes_step()
        except Exception as error:  # noqa: BLE001  (recorded: the 8-bit cases will fail with it too)
            info["bitsandbytes_step"] = f"failed: {type(error).__name__}: {error}"[:500]
    return info


def comfyui_tree() -> dict[str, Any]:
    """The booted tree: version, whether dynamic VRAM is on, allocator, attention kernel, VRAM state."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfyui_version
    import torch
    from comfy.ldm.modules import attention
    from harness import runtime

    memory_management = importlib.import_module("comfy.memory_management") if importlib.util.find_spec("comfy.memory_management") else None
    device = mm.get_torch_device()
    return {
        "version": comfyui_version.__version__,
        "dynamic_vram": bool(getattr(memory_management, "aimdo_enabled", False)),
        "dynamic_vram_failure": runtime.dynamic_vram_failure,
        "core_model_patcher": getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher).__name__,
        "allocator": torch.cuda.get_allocator_backend() if device.type == "cuda" else "cpu",
        "attention": attention.optimized_attention.__name__,
        "vram_state": mm.vram_state.name,
        "device": mm.get_torch_device_name(device),
        "torch": torch.__version__,
    }
