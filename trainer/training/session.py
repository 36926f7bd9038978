"""A training session on the graph's own MODEL and CLIP, leaving them exactly as they were afterwards.

The adapters are registered as a ModelPatcher injection on clones of the graph's patchers: ComfyUI ejects
injections around every load (0.3.75 and current versions alike), so its loaders only ever see the original
modules, and the adapters are in the module tree only while our clone is the loaded one. Nothing is merged
into base weights. On exit, our clones are unloaded, which restores the original modules and weights.
"""
from __future__ import annotations

import contextlib
import gc
import logging
from typing import Iterator

import comfy.model_management as mm
import comfy.patcher_extension
import torch
from comfy.clip_model import CLIPLayer
from comfy.ldm.flux.layers import DoubleStreamBlock, SingleStreamBlock

from .adapters import FP8_STORAGE, AdapterSet

log = logging.getLogger(__name__)
INJECTION_KEY = "loralab_training"


def isolated_clone(model_patcher):
    """A clone of the graph's MODEL patcher that training may load and inject into.

    On current ComfyUI with dynamic VRAM, base weights are cast per layer into shared, evictable buffers,
    which a backward pass through forward-time adapters can read stale; there we ask for a legacy
    (non-dynamic) clone, as ComfyUI does for torch.compile. 0.3.75 has no dynamic mode.
    """
    is_dynamic = getattr(model_patcher, "is_dynamic", lambda: False)()
    if is_dynamic:
        try:
            return model_patcher.clone(disable_dynamic=True)
        except (TypeError, RuntimeError) as error:
            log.warning("LoRA Lab: could not make a non-dynamic copy of the model (%s); training on the dynamic one.", error)
    return model_patcher.clone()


def compute_fp8_weights_in(patcher, dtype: torch.dtype) -> None:
    """Train an fp8-stored UNet (Load Diffusion Model weight_dtype fp8_*) in the dtype mixed_precision names.

    fp8 is storage only: ComfyUI's manual-cast layers upcast each weight per forward to the model's compute
    dtype, which ComfyUI picks for inference on the device (fp16 on most GPUs, fp32 on CPU). Training asks
    for the mixed_precision dtype instead, so fp32 really is fp32 (fp16 gradients without a grad scaler can
    underflow) and the memory estimate's cast weights are what gets cast. An object patch on our clone only:
    ComfyUI sets it when the clone loads and restores the graph's value when it unloads.
    """
    if patcher.model.get_dtype() in FP8_STORAGE:
        patcher.set_model_compute_dtype(dtype)


# Blocks that add their residuals in place (`img += ...`) onto tensors their own norms saved for the backward pass:
# ComfyUI's Flux and Chroma blocks.
IN_PLACE_RESIDUAL_BLOCKS = (DoubleStreamBlock, SingleStreamBlock)


class ResidualsOutOfPlace(torch.overrides.TorchFunctionMode):
    """`x += y` becomes `x = x + y` (in x's dtype): Python binds the name to what the in-place add returns, so
    the block computes the same values, but no tensor autograd saved is overwritten. The blocks call add_ only
    through `+=` (ComfyUI 0.3.75 and 0.33), so no other add_ changes meaning."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.add_:
            return torch.add(*args, **kwargs).to(args[0].dtype)
        return func(*args, **kwargs)


def _out_of_place_residuals_forward(module: torch.nn.Module):
    original = module.forward

    def forward(*args, **kwargs):
        with ResidualsOutOfPlace():
            return original(*args, **kwargs)

    return forward


def _checkpointed_forward(module: torch.nn.Module):
    original = module.forward  # the class's, or the out-of-place one: recomputation must run what the forward ran

    def forward(*args, **kwargs):
        return torch.utils.checkpoint.checkpoint(original, *args, use_reentrant=False, **kwargs)

    return forward


def _out_of_place_clip_forward(layer: CLIPLayer):
    """CLIPLayer adds its residuals in place, which autograd cannot differentiate through adapters."""

    def forward(x, mask=None, optimized_attention=None):
        x = x + layer.self_attn(layer.layer_norm1(x), mask, optimized_attention)
        return x + layer.mlp(layer.layer_norm2(x))

    return forward


def _make_autograd_safe(root: torch.nn.Module) -> None:
    """Replace inference-mode tensors (made while ComfyUI loaded the checkpoint) by equal normal tensors.

    Autograd cannot save inference tensors for backward; the values are unchanged.
    """
    for module in root.modules():
        for name, parameter in list(module._parameters.items()):
            if parameter is not None and parameter.is_inference():
                module._parameters[name] = torch.nn.Parameter(parameter.clone(), requires_grad=False)
        for name, buffer in list(module._buffers.items()):
            if buffer is not None and buffer.is_inference():
                module._buffers[name] = buffer.clone()


class PartInjection:
    """Adapters, gradient checkpointing and autograd fixes for one module tree, applied only while injected."""

    def __init__(self, root: torch.nn.Module, adapters: AdapterSet | None, checkpoint_blocks: list[torch.nn.Module],
                 out_of_place_clip: bool, device: torch.device) -> None:
        self.root = root
        self.adapters = adapters
        self.checkpoint_blocks = checkpoint_blocks
        self.out_of_place_clip = out_of_place_clip
        self.device = device
        self._requires_grad: dict[str, bool] = {}
        self._patched_forwards: list[torch.nn.Module] = []

    def inject(self, patcher) -> None:
        with torch.inference_mode(False):
            _make_autograd_safe(self.root)
        self._requires_grad = {name: p.requires_grad for name, p in self.root.named_parameters()}
        self.root.requires_grad_(False)
        if self.adapters is not None:
            self.adapters.to(self.device)
            self.adapters.swap_in()
        for block in self.root.modules():
            if isinstance(block, IN_PLACE_RESIDUAL_BLOCKS):
                block.forward = _out_of_place_residuals_forward(block)
                self._patched_forwards.append(block)
        for block in self.checkpoint_blocks:
            block.forward = _checkpointed_forward(block)
            self._patched_forwards.append(block)
        if self.out_of_place_clip:
            for layer in self.root.modules():
                if isinstance(layer, CLIPLayer):
                    layer.forward = _out_of_place_clip_forward(layer)
                    self._patched_forwards.append(layer)

    def eject(self, patcher) -> None:
        if self.adapters is not None:
            self.adapters.swap_out()
        for module in self._patched_forwards:
            module.__dict__.pop("forward", None)
        self._patched_forwards.clear()
        for name, parameter in self.root.named_parameters():
            parameter.requires_grad_(self._requires_grad.get(name, parameter.requires_grad))


def checkpoint_blocks(diffusion_model: torch.nn.Module) -> list[torch.nn.Module]:
    """Modules to recompute in backward: the layers of the UNet's input/middle/output blocks, or DiT blocks.

    ComfyUI's UNet never calls a block's own forward: `forward_timestep_embed` calls the block's layers
    (ResBlock, SpatialTransformer, Down/Upsample) one by one, so a patched block forward would never run and
    nothing would be checkpointed. The layers are what gets called, so they are what is patched.
    """
    blocks: list[torch.nn.Module] = []
    for name, child in diffusion_model.named_children():
        if isinstance(child, torch.nn.ModuleList):
            candidates = list(child)
        elif name == "middle_block":
            candidates = [child]
        else:
            continue
        for block in candidates:
            blocks.extend(block if isinstance(block, torch.nn.Sequential) else [block])
    return blocks


def unload(patcher) -> None:
    """Take our clone out of ComfyUI's loaded models, which ejects it and restores the original weights."""
    for index in reversed(range(len(mm.current_loaded_models))):
        loaded = mm.current_loaded_models[index]
        if loaded.model is patcher:
            mm.current_loaded_models.pop(index).model_unload()
    if patcher.is_injected:
        patcher.eject_model()
    patcher.remove_injections(INJECTION_KEY)


@contextlib.contextmanager
def training_flag() -> Iterator[None]:
    """Current ComfyUI switches off inference-only kernels while `in_training` is set (absent in 0.3.75)."""
    previous = getattr(mm, "in_training", None)
    mm.in_training = True
    try:
        yield
    finally:
        if previous is None:
            del mm.in_training
        else:
            mm.in_training = previous


def inject(patcher, part: PartInjection) -> None:
    patcher.set_injections(INJECTION_KEY, [comfy.patcher_extension.PatcherInjection(inject=part.inject, eject=part.eject)])


def release_memory() -> None:
    gc.collect()
    mm.soft_empty_cache()
