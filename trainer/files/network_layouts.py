"""How each kind of adapter is laid out in kohya/LyCORIS files, and how a file's tensors become the trainer's layout.

A layout names the tensors stored per layer (`<module>.lora_down.weight`, `<module>.hada_w1_a`, ...) and
normalises what a file holds (kohya's, LyCORIS', ComfyUI-trainer's) into what the trainer writes: fp32 CPU
tensors, 4-D conv LoRA weights. The network table (trainer/training/networks.py) says which network uses which.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Collection

import torch

from ..errors import LoraFileError

# One layer of a file in the trainer's layout, its rank (None for an undecomposed LoKr) and the delta it makes [out, in*k*k].
Normalised = tuple[dict[str, torch.Tensor], "int | None", tuple[int, int]]


@dataclass(frozen=True)
class FileLayout:
    """The tensors one adapted layer stores, and how peft's parameters map onto them."""

    parts: tuple[str, ...]  # tensor names after the module name; any of them identifies the layout on import
    normalise: Callable[[str, dict[str, torch.Tensor], "torch.Size | None", str], Normalised]
    file_names: dict[str, str] = field(default_factory=dict)  # peft parameter -> file tensor name, where they differ
    # The peft parameter that carries alpha/rank in the file because the loader applies no scale to it (or None).
    baked_scale: Callable[[Collection[str]], "str | None"] = lambda names: None

    def file_name(self, peft_name: str) -> str:
        return self.file_names.get(peft_name, peft_name)


def require(name: str, parts: dict[str, torch.Tensor], required: tuple[str, ...], file_name: str) -> list[torch.Tensor]:
    missing = [part for part in required if part not in parts]
    if missing:
        raise LoraFileError(f"{file_name}: layer {name} lacks {', '.join(missing)}; the file is incomplete.")
    return [parts[part].detach().to("cpu", torch.float32).contiguous() for part in required]


def check_fits(name: str, delta_shape: tuple[int, int], weight_shape: torch.Size, file_name: str) -> None:
    """The adapter's delta, as [out, in*k*k], must have the shape of the layer's weight."""
    if delta_shape != (weight_shape[0], math.prod(weight_shape[1:])):
        raise LoraFileError(f"{file_name}: layer {name} makes a {delta_shape[0]}x{delta_shape[1]} change but the "
                            f"connected model's weight is {list(weight_shape)}; connect the model the LoRA was made for.")


def _lora_layout(down: torch.Tensor, up: torch.Tensor, weight_shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
    """kohya's layout: Linear [r, in] / [out, r]; conv down [r, in, k, k] and up [out, r, 1, 1].

    ComfyUI's trainer stores conv adapters flattened to 2-D, so they are reshaped from the layer's shape.
    """
    rank = down.shape[0]
    if len(weight_shape) == 4:
        return down.reshape(rank, *weight_shape[1:]), up.reshape(weight_shape[0], rank, 1, 1)
    return down.reshape(rank, *weight_shape[1:]), up.reshape(weight_shape[0], rank)


def _normalise_lora(name: str, parts: dict[str, torch.Tensor], weight_shape: torch.Size | None,
                    file_name: str) -> Normalised:
    down, up = require(name, parts, ("lora_down.weight", "lora_up.weight"), file_name)
    rank = down.shape[0]
    if up.ndim < 2 or up.shape[1] != rank:
        raise LoraFileError(f"{file_name}: layer {name} has lora_up {list(up.shape)} for lora_down "
                            f"{list(down.shape)}; the file is damaged.")
    delta_shape = (up.shape[0], down.numel() // rank)
    if weight_shape is not None:
        check_fits(name, delta_shape, weight_shape, file_name)
        down, up = _lora_layout(down, up, weight_shape)
    return {f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up}, rank, delta_shape


def _normalise_loha(name: str, parts: dict[str, torch.Tensor], weight_shape: torch.Size | None,
                    file_name: str) -> Normalised:
    w1a, w1b, w2a, w2b = require(name, parts, LOHA.parts, file_name)
    tensors = {f"{name}.hada_w1_a": w1a, f"{name}.hada_w1_b": w1b, f"{name}.hada_w2_a": w2a, f"{name}.hada_w2_b": w2b}
    return tensors, w1b.shape[0], (w1a.shape[0], w1b.shape[1])


def _normalise_lokr(name: str, parts: dict[str, torch.Tensor], weight_shape: torch.Size | None,
                    file_name: str) -> Normalised:
    (w1,) = require(name, parts, ("lokr_w1",), file_name)
    tensors = {f"{name}.lokr_w1": w1}
    if "lokr_w2" in parts:
        (w2,) = require(name, parts, ("lokr_w2",), file_name)
        tensors[f"{name}.lokr_w2"] = w2
        rank, rows, columns = None, w2.shape[0], w2[0].numel()
    else:
        w2a, w2b = require(name, parts, ("lokr_w2_a", "lokr_w2_b"), file_name)
        tensors.update({f"{name}.lokr_w2_a": w2a, f"{name}.lokr_w2_b": w2b})
        rank, rows, columns = w2b.shape[0], w2a.shape[0], w2b[0].numel()
    return tensors, rank, (w1.shape[0] * rows, w1.shape[1] * columns)


def _lokr_baked_scale(names: Collection[str]) -> str | None:
    """With no decomposed factor ComfyUI and LyCORIS apply scale 1, so alpha/r is baked into w1."""
    return "lokr_w1" if "lokr_w1_a" not in names and "lokr_w2_a" not in names else None


LORA = FileLayout(("lora_down.weight", "lora_up.weight"), _normalise_lora,
                  file_names={"lora_A": "lora_down.weight", "lora_B": "lora_up.weight"})
LOHA = FileLayout(("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"), _normalise_loha)
LOKR = FileLayout(("lokr_w1", "lokr_w2", "lokr_w2_a", "lokr_w2_b"), _normalise_lokr, baked_scale=_lokr_baked_scale)
