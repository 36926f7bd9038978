"""Optimizers and learning-rate schedules by name; each comes from its maintained package."""
from __future__ import annotations

from typing import Any, Callable

import torch

from ..errors import SettingsError

Groups = list[dict[str, Any]]  # torch param groups with their own `lr` (UNet and text encoder)
SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
FACTORED = ("Adafactor", "AdamW8bit")  # per-parameter state in row/column factors or quantised blocks, not its shape


def _adamw(groups: Groups, device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, weight_decay=0.01)


def _adamw_8bit(groups: Groups, device: torch.device) -> torch.optim.Optimizer:
    if device.type != "cuda":
        raise SettingsError(f"optimizer AdamW8bit needs an NVIDIA GPU (bitsandbytes); this run is on {device.type}. "
                            "Choose AdamW (same maths, more memory) or Adafactor (less memory).")
    try:
        import bitsandbytes
    except ImportError as error:
        raise SettingsError("optimizer AdamW8bit needs the bitsandbytes package: `pip install bitsandbytes` in "
                            "ComfyUI's Python, or choose AdamW / Adafactor.") from error
    return bitsandbytes.optim.AdamW8bit(groups, weight_decay=0.01)


def _lion(groups: Groups, device: torch.device) -> torch.optim.Optimizer:
    from lion_pytorch import Lion

    return Lion(groups, weight_decay=0.01)


def _prodigy(groups: Groups, device: torch.device) -> torch.optim.Optimizer:
    from prodigyopt import Prodigy

    return Prodigy(groups, weight_decay=0.01, safeguard_warmup=True, use_bias_correction=True)


def _adafactor(groups: Groups, device: torch.device) -> torch.optim.Optimizer:
    from transformers.optimization import Adafactor

    return Adafactor(groups, scale_parameter=False, relative_step=False, warmup_init=False)


def _sgd(groups: Groups, device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, momentum=0.9)


BUILDERS: dict[str, Callable[[Groups, torch.device], torch.optim.Optimizer]] = {
    "AdamW": _adamw, "AdamW8bit": _adamw_8bit, "Lion": _lion, "Prodigy": _prodigy, "Adafactor": _adafactor, "SGD": _sgd}
OPTIMIZERS = tuple(BUILDERS)


def build_optimizer(name: str, groups: Groups, device: torch.device) -> torch.optim.Optimizer:
    if name not in BUILDERS:
        raise SettingsError(f"optimizer '{name}' is unknown.")
    return BUILDERS[name](groups, device)


def build_scheduler(name: str, optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    """transformers' schedules (the same ones kohya uses), stepped once per optimizer step."""
    from transformers import get_scheduler

    return get_scheduler(name, optimizer, num_warmup_steps=warmup_steps, num_training_steps=max(1, total_steps))
