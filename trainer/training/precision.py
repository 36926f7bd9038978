"""mixed_precision `auto`: the training dtype the device computes natively, decided once at the start of a run.

bf16 where the device has it natively (NVIDIA Ampere and newer, recent AMD, Intel XPU, Apple on macOS 14+),
fp16 with loss scaling on older NVIDIA GPUs that compute fp16 fast (T4, V100, RTX 20xx), fp32 elsewhere: on
CPUs without native bf16, autocast made a conv block 17x slower than fp32 (700 ms vs 40 ms, measured on AVX2).
Which GPUs compute what is ComfyUI's knowledge (`should_use_bf16`/`should_use_fp16`, which also honour
--force-fp16/--force-fp32), so LoRA Lab asks it instead of keeping a second list of GPU names.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

AUTO = "auto"
PRECISIONS = (AUTO, "bf16", "fp16", "fp32")  # the mixed_precision choices
COMPUTE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}  # by resolved precision


@dataclass(frozen=True)
class PrecisionChoice:
    value: str  # "bf16", "fp16" or "fp32"
    reason: str  # said at the start of training


def autocast(precision: str, device: torch.device):
    """The autocast context a resolved precision computes in (none for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=COMPUTE_DTYPES[precision])


def choose_precision(requested: str, device: torch.device) -> PrecisionChoice:
    """What `mixed_precision` means on `device`: an explicit choice as set, `auto` resolved."""
    if requested != AUTO:
        slow = (" (on a CPU it is emulated and usually several times slower than fp32, which auto would pick)"
                if device.type == "cpu" and requested != "fp32" else "")
        return PrecisionChoice(requested, f"mixed_precision {requested} as set{slow}")
    import comfy.model_management as mm

    if device.type == "cpu":
        return PrecisionChoice("fp32", "mixed_precision auto: fp32 on the CPU (bf16 and fp16 are emulated there, "
                                       "many times slower)")
    name = mm.get_torch_device_name(device)
    if mm.should_use_bf16(device):
        return PrecisionChoice("bf16", f"mixed_precision auto: bf16, native on {name}")
    if device.type == "mps":  # no native bf16 before macOS 14; fp16 training would need loss scaling on MPS
        return PrecisionChoice("fp32", f"mixed_precision auto: fp32 on {name} (no native bf16 before macOS 14)")
    if mm.should_use_fp16(device):
        return PrecisionChoice("fp16", f"mixed_precision auto: fp16 with loss scaling ({name} has no native bf16)")
    return PrecisionChoice("fp32", f"mixed_precision auto: fp32 ({name} computes neither bf16 nor fp16 fast)")
