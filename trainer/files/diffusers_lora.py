"""LoRA files in peft's layout (`lora_A`/`lora_B`: diffusers, ai-toolkit, SimpleTuner, musubi-tuner's converted
files), as LoRAs on ComfyUI's layers.

These files name layers as their trainer's model does: diffusers' Flux transformer
(`transformer.transformer_blocks.0.attn.to_q`), Qwen-Image and HiDream (`transformer.<ComfyUI's path>`), Z-Image and
Lumina 2 (`diffusion_model.layers.0.attention.to_q`). Some split layers that ComfyUI fuses: a Flux double block's
`img_attn.qkv` is diffusers' to_q/to_k/to_v, a single block's `linear1` is to_q/to_k/to_v/proj_mlp, Z-Image's
`attention.qkv` is to_q/to_k/to_v. ComfyUI's LoRA key map says where each named layer lands, as a whole weight or as
a row slice of a fused one.

The LoRAs on the slices of one weight become one LoRA on the whole, exactly: the downs stacked, each up placed
in its rows and its own columns (scaled by its alpha/rank), so the result's rank is the sum of the parts' ranks
and its alpha equals that rank.
"""
from __future__ import annotations

from typing import Any

import torch

from ..errors import LoraFileError

PEFT_PARTS = {"lora_A.weight": "lora_down.weight", "lora_B.weight": "lora_up.weight", "alpha": "alpha"}
PEFT_WEIGHTS = (".lora_A.weight", ".lora_B.weight")


def is_diffusers_lora(keys: Any) -> bool:
    return any(key.endswith(PEFT_WEIGHTS) for key in keys)


def to_comfy_modules(tensors: dict[str, torch.Tensor], key_map: dict[str, Any], weight_shapes: dict[str, torch.Size],
                     file_name: str) -> dict[str, torch.Tensor]:
    """The file's tensors with its peft-layout LoRA layers moved onto ComfyUI module paths
    (`diffusion_model.<path>.lora_down.weight` ...); other keys pass through unchanged.

    `key_map` is `comfy.lora.model_lora_keys_unet` of the connected model, `weight_shapes` its weights' shapes
    by ComfyUI key.
    """
    slices: dict[str, list[tuple[int, int, dict[str, torch.Tensor]]]] = {}
    out: dict[str, torch.Tensor] = {}
    modules = _peft_modules(tensors, file_name)
    for module, parts in modules.items():
        target = key_map.get(module)
        if target is None:
            raise LoraFileError(f"{file_name} has layer {module!r}, which the connected model does not have; connect "
                                "the model the LoRA was made for.")
        if isinstance(target, str):
            out.update({f"{target[: -len('.weight')]}.{part}": tensor for part, tensor in _kohya_parts(parts).items()})
        else:
            weight_key, (dim, offset, size) = target
            if dim != 0:
                raise LoraFileError(f"{file_name}: layer {module!r} maps to a column slice of {weight_key}, which "
                                    "LoRA Lab cannot fuse.")
            slices.setdefault(weight_key, []).append((offset, size, parts))
    for weight_key, pieces in slices.items():
        out.update({f"{weight_key[: -len('.weight')]}.{part}": tensor
                    for part, tensor in fuse_row_slices(pieces, weight_shapes[weight_key][0]).items()})
    moved = {f"{module}.{part}" for module, parts in modules.items() for part in parts}
    out.update({key: value for key, value in tensors.items() if key not in moved})
    return out


def fuse_row_slices(pieces: list[tuple[int, int, dict[str, torch.Tensor]]], rows: int) -> dict[str, torch.Tensor]:
    """One kohya LoRA (down, up, alpha) whose change equals the sum of LoRAs on row slices of a weight.

    `pieces` are (first row, row count, {"lora_A.weight", "lora_B.weight"[, "alpha"]}) of each slice's LoRA.
    """
    downs, ups = [], []
    for offset, size, parts in pieces:
        down, up = parts["lora_A.weight"].float(), parts["lora_B.weight"].float()
        rank = down.shape[0]
        alpha = float(parts["alpha"].item()) if "alpha" in parts else float(rank)
        placed = torch.zeros(rows, rank)
        placed[offset: offset + size] = up * (alpha / rank)
        downs.append(down)
        ups.append(placed)
    down, up = torch.cat(downs), torch.cat(ups, dim=1)
    return {"lora_down.weight": down, "lora_up.weight": up, "alpha": torch.tensor(float(down.shape[0]))}


def _peft_modules(tensors: dict[str, torch.Tensor], file_name: str) -> dict[str, dict[str, torch.Tensor]]:
    """The file's layers that hold peft tensors, with their alphas."""
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        part = next((part for part in PEFT_PARTS if key.endswith("." + part)), None)
        if part is not None:
            modules.setdefault(key[: -len(part) - 1], {})[part] = tensor
    modules = {module: parts for module, parts in modules.items() if set(parts) != {"alpha"}}  # kohya layers' alphas
    for module, parts in modules.items():
        if not {"lora_A.weight", "lora_B.weight"} <= set(parts):
            raise LoraFileError(f"{file_name}: layer {module} lacks lora_A or lora_B; the file is incomplete.")
    return modules


def _kohya_parts(parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    renamed = {PEFT_PARTS[part]: tensor for part, tensor in parts.items()}
    renamed.setdefault("alpha", torch.tensor(float(parts["lora_A.weight"].shape[0])))
    return renamed
