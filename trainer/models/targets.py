"""Which layers get adapters: the modules kohya's sd-scripts targets, found in ComfyUI's module tree.

UNet: every Linear and 1x1 conv inside a transformer block (attention q/k/v/out, feed-forward, proj_in/out).
LoCon adds the resnet, downsample and upsample layers (3x3 convs at `conv_rank`, their linears at `rank`).
Text encoders: attention q/k/v/out and MLP fc1/fc2 of every CLIP layer.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from comfy.ldm.modules.attention import SpatialTransformer
from comfy.ldm.modules.diffusionmodules.openaimodel import Downsample, ResBlock, Upsample

DIT_BLOCKS = r"blocks\."  # the transformer blocks of most DiTs (double_blocks, transformer_blocks, joint_blocks...)
DIT_EXCLUDE = "adaLN"  # their modulation layers, which kohya leaves out
TEXT_ENCODER_LAYER = re.compile(r"(?P<encoder>clip_[lgh])\.transformer\.text_model\.encoder\.layers\.(?P<index>\d+)\."
                                r"(?P<part>self_attn\.(q|k|v|out)_proj|mlp\.fc[12])$")


@dataclass(frozen=True)
class Target:
    """A layer that gets an adapter: its path under the model root, the module, and whether it is a 3x3 conv."""

    path: str
    module: torch.nn.Module
    is_conv3x3: bool


def _is_linear_like(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.Linear) or (isinstance(module, torch.nn.Conv2d) and module.kernel_size == (1, 1))


def _is_conv3x3(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.Conv2d) and module.kernel_size == (3, 3)


def unet_targets(diffusion_model: torch.nn.Module, include_convs: bool, blocks: str = DIT_BLOCKS,
                 exclude: str | None = DIT_EXCLUDE) -> list[Target]:
    """Adapter targets in a UNet (SD1/SD2/SDXL) or, for DiT models, every Linear whose module path matches the
    family's `blocks` pattern and not its `exclude` pattern (regexes searched in the path)."""
    containers = [(path, module) for path, module in diffusion_model.named_modules() if isinstance(module, SpatialTransformer)]
    if include_convs:
        containers += [(path, module) for path, module in diffusion_model.named_modules()
                       if isinstance(module, (ResBlock, Downsample, Upsample))]
    if not containers:  # MMDiT / DiT: blocks of Linear layers
        included, excluded = re.compile(blocks), re.compile(exclude) if exclude else None
        return [Target(path, module, False) for path, module in diffusion_model.named_modules()
                if isinstance(module, torch.nn.Linear) and included.search(path)
                and not (excluded and excluded.search(path))]
    targets: dict[str, Target] = {}
    for container_path, container in containers:
        for child_path, child in container.named_modules():
            path = f"{container_path}.{child_path}" if child_path else container_path
            if _is_linear_like(child):
                targets[path] = Target(path, child, False)
            elif include_convs and _is_conv3x3(child):
                targets[path] = Target(path, child, True)
    return sorted(targets.values(), key=lambda target: target.path)


def text_encoder_targets(cond_stage_model: torch.nn.Module, encoders: dict[str, str],
                         layer_limits: dict[str, int] | None = None) -> list[Target]:
    """Attention and MLP linears of the CLIP layers of the named encoders (e.g. clip_l, clip_g).

    `layer_limits` caps an encoder's layer count where kohya's text encoder is shorter than ComfyUI's.
    """
    limits = layer_limits or {}
    targets = []
    for path, module in cond_stage_model.named_modules():
        match = TEXT_ENCODER_LAYER.match(path)
        if (match and match["encoder"] in encoders and isinstance(module, torch.nn.Linear)
                and int(match["index"]) < limits.get(match["encoder"], 10**6)):
            targets.append(Target(path, module, False))
    return targets
