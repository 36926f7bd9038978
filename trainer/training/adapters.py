"""Trainable adapters built with peft on ComfyUI's layers, and their kohya/LyCORIS state dicts.

peft wraps each target layer (the LoRA acts on activations: base(x) + up(down(x)) * alpha/r). The wrappers
are created on a throwaway holder module, so peft never touches the graph's model; `swap_in`/`swap_out`
put them into the real module tree only while the training patcher is loaded (see session.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import peft
import torch

from ..models.targets import Target
from .networks import Network

ADAPTER = "default"
FP8_STORAGE = (torch.float8_e4m3fn, torch.float8_e5m2)  # storage-only dtypes: never computed in


@dataclass
class AdapterSlot:
    """One adapted layer: where it sits in the real model, and the peft wrapper that replaces it while training."""

    kohya_name: str
    parent: torch.nn.Module
    attribute: str
    base: torch.nn.Module
    wrapper: torch.nn.Module

    def adapter_tensors(self) -> dict[str, torch.nn.Parameter]:
        """peft's adapter parameters by short name (lora_A, hada_w1_a, lokr_w1, ...)."""
        tensors = {}
        for name in self.wrapper.adapter_layer_names:
            container = getattr(self.wrapper, name)
            if ADAPTER in container:
                item = container[ADAPTER]
                tensors[name] = item.weight if isinstance(item, torch.nn.Module) else item
        return tensors

    @property
    def scaling(self) -> float:
        return float(self.wrapper.scaling[ADAPTER])


class AdapterSet:
    """The adapters of one model part (the UNet, or the text encoders)."""

    def __init__(self, network: Network, slots: list[AdapterSlot], ranks: dict[str, int], alphas: dict[str, float]) -> None:
        self.network = network
        self.slots = slots
        self.ranks = ranks
        self.alphas = alphas

    def parameters(self) -> list[torch.nn.Parameter]:
        return [tensor for slot in self.slots for tensor in slot.adapter_tensors().values()]

    def swap_in(self) -> None:
        for slot in self.slots:
            setattr(slot.parent, slot.attribute, slot.wrapper)

    def swap_out(self) -> None:
        for slot in self.slots:
            setattr(slot.parent, slot.attribute, slot.base)

    def to(self, device: torch.device, dtype: torch.dtype = torch.float32) -> None:
        """Adapters live on the training device in fp32, whatever dtype the frozen base weights have."""
        for slot in self.slots:
            for name in slot.wrapper.adapter_layer_names:
                getattr(slot.wrapper, name).to(device=device, dtype=dtype)

    def raw_state(self) -> dict[str, torch.Tensor]:
        """Exact peft tensors, for resumable checkpoints."""
        return {f"{slot.kohya_name}.{name}": tensor.detach().cpu().clone()
                for slot in self.slots for name, tensor in slot.adapter_tensors().items()}

    def load_raw_state(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for slot in self.slots:
                for name, tensor in slot.adapter_tensors().items():
                    tensor.copy_(state[f"{slot.kohya_name}.{name}"])

    def kohya_state_dict(self) -> dict[str, torch.Tensor]:
        """kohya (LoRA/LoCon) or LyCORIS (LoHa/LoKr) keys, fp32 on CPU, as ComfyUI and A1111 load them."""
        layout = self.network.layout
        state: dict[str, torch.Tensor] = {}
        for slot in self.slots:
            tensors = {name: tensor.detach().float().cpu().clone() for name, tensor in slot.adapter_tensors().items()}
            baked = layout.baked_scale(tensors)
            for name, tensor in tensors.items():
                state[f"{slot.kohya_name}.{layout.file_name(name)}"] = tensor * slot.scaling if name == baked else tensor
            state[f"{slot.kohya_name}.alpha"] = torch.tensor(float(self.alphas[slot.kohya_name]))
        return state

    def load_kohya_state_dict(self, state: dict[str, torch.Tensor]) -> list[str]:
        """Start from an existing LoRA's weights; returns the module names the file lacked."""
        layout = self.network.layout
        missing = []
        with torch.no_grad():
            for slot in self.slots:
                tensors = slot.adapter_tensors()
                baked = layout.baked_scale(tensors)
                for name, tensor in tensors.items():
                    key = f"{slot.kohya_name}.{layout.file_name(name)}"
                    if key not in state:
                        missing.append(slot.kohya_name)
                        break
                    value = state[key].to(tensor.dtype)
                    if name == baked:
                        value = value / slot.scaling
                    tensor.copy_(value.reshape(tensor.shape))
        return missing


def _initialise_in_fp32(wrapper: torch.nn.Module) -> None:
    """peft creates an adapter in its base layer's dtype; for fp8-stored weights (Load Diffusion Model
    weight_dtype fp8_*) that rounds the initial values to 3 mantissa bits. Such adapters are drawn again in
    fp32, by peft's own initialiser."""
    containers = [getattr(wrapper, name) for name in wrapper.adapter_layer_names]
    if not any(tensor.dtype in FP8_STORAGE for container in containers for tensor in container.parameters()):
        return
    for container in containers:
        container.to(torch.float32)
    if hasattr(wrapper, "reset_lora_parameters"):
        wrapper.reset_lora_parameters(ADAPTER, True)
    else:
        wrapper.reset_adapter_parameters(ADAPTER)


def create_adapters(targets: list[Target], names: dict[str, str], root: torch.nn.Module, network: Network,
                    rank: int, alpha: float, conv_rank: int, conv_alpha: float) -> AdapterSet:
    """peft adapters for `targets` (paths under `root`), 3x3 convs at conv_rank/conv_alpha."""
    slots: list[AdapterSlot] = []
    ranks: dict[str, int] = {}
    alphas: dict[str, float] = {}
    for is_conv in (False, True):
        group = [target for target in targets if target.is_conv3x3 == is_conv]
        if not group:
            continue
        holder = torch.nn.Module()
        for index, target in enumerate(group):
            holder.add_module(f"m{index}", target.module)
        group_rank, group_alpha = (conv_rank, conv_alpha) if is_conv else (rank, alpha)
        peft.inject_adapter_in_model(network.peft_config(group_rank, group_alpha, [f"m{i}" for i in range(len(group))]), holder)
        for index, target in enumerate(group):
            parent_path, _, attribute = target.path.rpartition(".")
            parent = root.get_submodule(parent_path) if parent_path else root
            kohya_name = names[target.path]
            wrapper = getattr(holder, f"m{index}")
            _initialise_in_fp32(wrapper)
            slots.append(AdapterSlot(kohya_name, parent, attribute, target.module, wrapper))
            ranks[kohya_name] = group_rank
            alphas[kohya_name] = group_alpha
    return AdapterSet(network, slots, ranks, alphas)
