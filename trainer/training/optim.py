"""Optimizers and learning-rate schedules by name; each comes from its maintained package."""
from __future__ import annotations

from typing import Any

import torch

from ..errors import SettingsError


def build_optimizer(name: str, groups: list[dict[str, Any]], device: torch.device) -> torch.optim.Optimizer:
    """`groups` are torch param groups with their own `lr` (UNet and text encoder)."""
    if name == "AdamW":
        return torch.optim.AdamW(groups, weight_decay=0.01)
    if name == "SGD":
        return torch.optim.SGD(groups, momentum=0.9)
    if name == "Lion":
        from lion_pytorch import Lion

        return Lion(groups, weight_decay=0.01)
    if name == "Prodigy":
        from prodigyopt import Prodigy

        return Prodigy(groups, weight_decay=0.01, safeguard_warmup=True, use_bias_correction=True)
    if name == "Adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(groups, scale_parameter=False, relative_step=False, warmup_init=False)
    if name == "AdamW8bit":
        if device.type != "cuda":
            raise SettingsError(f"optimizer AdamW8bit needs an NVIDIA GPU (bitsandbytes); this run is on {device.type}. "
                                "Choose AdamW (same maths, more memory) or Adafactor (less memory).")
        try:
            import bitsandbytes
        except ImportError as error:
            raise SettingsError("optimizer AdamW8bit needs the bitsandbytes package: `pip install bitsandbytes` in "
                                "ComfyUI's Python, or choose AdamW / Adafactor.") from error
        return bitsandbytes.optim.AdamW8bit(groups, weight_decay=0.01)
    raise SettingsError(f"optimizer '{name}' is unknown.")


def build_scheduler(name: str, optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    """transformers' schedules (the same ones kohya uses), stepped once per optimizer step."""
    from transformers import get_scheduler

    return get_scheduler(name, optimizer, num_warmup_steps=warmup_steps, num_training_steps=max(1, total_steps))
