"""Existing LoRA files back into a TrainedLora (LORALAB_LORA), so training can continue from them.

Accepts kohya/LyCORIS files (ours, sd-scripts', LyCORIS') and ComfyUI's own trainer files, whose keys are
ComfyUI module paths (`diffusion_model.input_blocks.1.1.proj_in.lora_up.weight`) with conv weights
flattened to 2-D. Everything comes out in the layout the trainer produces: kohya module names, fp32
tensors, 4-D conv LoRA weights and a 0-dim float `alpha` for every module.
"""
from __future__ import annotations

import logging
import math
import re
from collections import Counter
from typing import Any

import comfy.lora
import torch

from . import diffusers_lora
from .errors import LoraFileError
from .families import Family, detect_family
from .kohya_names import unet_names
from .lora_metadata import dataset_summary_from_metadata, family_from_metadata, settings_from_metadata
from .trained_lora import EpochWeights, TrainedLora

logger = logging.getLogger(__name__)

ADAPTER_PARTS = {
    "LoRA": ("lora_down.weight", "lora_up.weight"),
    "LoHa": ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"),
    "LoKr": ("lokr_w1", "lokr_w2", "lokr_w2_a", "lokr_w2_b"),
}
UNSUPPORTED_PARTS = {
    "lora_mid.weight": "LoCon with Tucker decomposition (lora_mid)",
    "hada_t1": "LoHa with Tucker decomposition", "hada_t2": "LoHa with Tucker decomposition",
    "lokr_t2": "LoKr with Tucker decomposition",
    "lokr_w1_a": "LoKr with a decomposed w1", "lokr_w1_b": "LoKr with a decomposed w1",
    "dora_scale": "DoRA", "oft_blocks": "OFT", "oft_diag": "OFT", "w_norm": "norm deltas", "b_norm": "norm deltas",
}
# ComfyUI's trainer also trains full deltas of biases and norm weights; no kohya/LyCORIS network holds them.
FULL_DELTA_PARTS = ("diff", "diff_b")
KNOWN_PARTS = sorted({*sum(ADAPTER_PARTS.values(), ()), *UNSUPPORTED_PARTS, *FULL_DELTA_PARTS, "alpha"}, key=len, reverse=True)
KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")
TEXT_ENCODER_PREFIXES = ("lora_te_", "lora_te1_", "lora_te2_")
COMFY_PREFIX = "diffusion_model."
# kohya/LyCORIS UNet modules that are 3x3 convs (resnet convs, down/upsamplers), in diffusers and SGM naming.
CONV3X3_NAME = re.compile(r"(resnets_\d+_conv[12]|samplers_0_conv|in_layers_2|out_layers_3|_op|output_blocks_\d+_\d+_conv)$")


def import_lora(tensors: dict[str, torch.Tensor], metadata: dict[str, str], file_name: str, model: Any = None) -> TrainedLora:
    """A TrainedLora with one epoch holding the adapter of a LoRA file.

    `model` (a ComfyUI MODEL) is needed for files without kohya metadata (to know the family) and for
    ComfyUI-trainer files (to name their modules); when given, every UNet module must exist in it.
    """
    family = _resolve_family(metadata, model, file_name)
    if diffusers_lora.is_diffusers_lora(tensors):
        tensors = _from_diffusers_names(tensors, model, file_name)
    modules = _group_by_module(tensors, file_name)
    if model is not None:
        modules = _canonical_unet_names(modules, model, family, file_name)
    elif any(name.startswith(COMFY_PREFIX) for name in modules):
        raise LoraFileError(f"{file_name} is a ComfyUI-trainer LoRA (keys 'diffusion_model.…'); connect the MODEL it "
                            "was trained on to Load LoRA so its layers can be named.")
    _check_text_encoder_names(modules, family, file_name)
    network = _adapter_type(modules, file_name)
    shapes = _weight_shapes(model) if model is not None else {}
    weights: dict[str, torch.Tensor] = {}
    ranks, conv_ranks = Counter(), Counter()
    for name, parts in sorted(modules.items()):
        module_weights, rank, alpha = _normalise(name, network, parts, shapes.get(name), file_name)
        weights.update(module_weights)
        is_conv = _is_conv3x3(name, module_weights, shapes.get(name))
        if rank is not None:
            (conv_ranks if is_conv else ranks)[(rank, alpha)] += 1
    if network == "LoRA" and conv_ranks:
        network = "LoCon"  # 3x3 convs are what kohya's conv_dim and LyCORIS' LoCon add
    rank, alpha = _most_common(ranks or conv_ranks, metadata, tensors)
    conv_rank, conv_alpha = _most_common(conv_ranks, metadata, tensors) if conv_ranks else (None, None)
    epoch = _int_metadata(metadata, "ss_epoch")
    settings = settings_from_metadata(metadata)
    return TrainedLora(
        family=family.name, network=network, rank=rank, alpha=alpha, conv_rank=conv_rank, conv_alpha=conv_alpha,
        epochs={epoch: EpochWeights(epoch=epoch, step=_int_metadata(metadata, "ss_steps"), weights=weights,
                                    train_loss=math.nan)},
        settings=settings, dataset_summary=dataset_summary_from_metadata(metadata),
        started_at=_float_metadata(metadata, "ss_training_started_at"),
        finished_at=_float_metadata(metadata, "ss_training_finished_at"),
    )


def _from_diffusers_names(tensors: dict[str, torch.Tensor], model: Any, file_name: str) -> dict[str, torch.Tensor]:
    if model is None:
        raise LoraFileError(f"{file_name} names its layers as diffusers does ('transformer.…'); connect the MODEL it "
                            "was made for to Load LoRA so its layers can be placed.")
    shapes = {key: value.shape for key, value in model.model.state_dict().items()}
    return diffusers_lora.to_comfy_modules(tensors, comfy.lora.model_lora_keys_unet(model.model, {}), shapes, file_name)


def _resolve_family(metadata: dict[str, str], model: Any, file_name: str) -> Family:
    declared = family_from_metadata(metadata)
    if model is None:
        if declared is None:
            raise LoraFileError(f"{file_name} does not say which model it is for (no kohya metadata); connect the "
                                "MODEL to Load LoRA so LoRA Lab can tell.")
        return declared
    connected = detect_family(model)
    same_layers = declared is None or (declared.unet_naming, declared.text_encoder_prefixes) == (
        connected.unet_naming, connected.text_encoder_prefixes)
    if not same_layers:
        raise LoraFileError(f"{file_name} was trained for {declared.name} ({declared.base_model_version}) but the "
                            f"connected model is {connected.name}; connect the model the LoRA was made for.")
    return connected


def _split_key(key: str) -> tuple[str, str] | None:
    for part in KNOWN_PARTS:
        if key.endswith("." + part):
            return key[: -len(part) - 1], part
    return None


def _group_by_module(tensors: dict[str, torch.Tensor], file_name: str) -> dict[str, dict[str, torch.Tensor]]:
    modules: dict[str, dict[str, torch.Tensor]] = {}
    dropped: list[str] = []
    for key, tensor in tensors.items():
        split = _split_key(key)
        if split is None or not split[0].startswith((*KOHYA_PREFIXES, COMFY_PREFIX)):
            raise LoraFileError(
                f"{file_name} is not a kohya/LyCORIS or ComfyUI-trainer LoRA (unexpected key {key!r}); "
                "LoRA Lab continues training from those formats only."
            )
        module, part = split
        if part in UNSUPPORTED_PARTS:
            raise LoraFileError(f"{file_name} is a {UNSUPPORTED_PARTS[part]} network (key {key!r}); LoRA Lab continues "
                                "plain LoRA, LoCon, LoHa and LoKr networks only.")
        if part in FULL_DELTA_PARTS:
            dropped.append(key)
            continue
        modules.setdefault(module, {})[part] = tensor
    if dropped:
        logger.warning("%s: left out %d bias/norm deltas (e.g. %s) that ComfyUI's trainer adds; kohya LoRA files "
                       "cannot hold them, so the imported LoRA differs from the file by those deltas.",
                       file_name, len(dropped), dropped[0])
    if not modules:
        raise LoraFileError(f"{file_name} holds no LoRA layers.")
    return modules


def _canonical_unet_names(modules: dict[str, dict[str, torch.Tensor]], model: Any, family: Family,
                          file_name: str) -> dict[str, dict[str, torch.Tensor]]:
    """Rename UNet modules, whatever alias ComfyUI accepts them under, to kohya's name for the same layer."""
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    paths: dict[str, str] = {}
    for name in modules:
        if name.startswith(TEXT_ENCODER_PREFIXES):
            continue
        target = key_map.get(name)
        if not isinstance(target, str) or not target.startswith(COMFY_PREFIX):
            raise LoraFileError(f"{file_name} has layer {name!r}, which the connected {family.name} model does not "
                                "have; connect the model the LoRA was made for.")
        paths[name] = target[len(COMFY_PREFIX): -len(".weight")]
    try:
        kohya = unet_names(model.model.model_config.unet_config, family, sorted(set(paths.values())))
    except KeyError as error:
        raise LoraFileError(f"{file_name}: {error.args[0]}; LoRA Lab cannot give these layers kohya names.") from error
    renamed: dict[str, dict[str, torch.Tensor]] = {}
    for name, parts in modules.items():
        canonical = kohya[paths[name]] if name in paths else name
        if canonical in renamed:
            raise LoraFileError(f"{file_name} holds two adapters for the layer {canonical}; it cannot be continued.")
        renamed[canonical] = parts
    return renamed


def _check_text_encoder_names(modules: dict[str, Any], family: Family, file_name: str) -> None:
    prefixes = tuple(f"{prefix}_" for prefix in family.text_encoder_prefixes.values())
    foreign = [name for name in modules if name.startswith(TEXT_ENCODER_PREFIXES) and not name.startswith(prefixes)]
    if foreign:
        raise LoraFileError(f"{file_name} has text-encoder layers such as {foreign[0]!r} that {family.name} models do "
                            f"not have (expected {' or '.join(prefixes)}…); it was made for another model family.")


def _adapter_type(modules: dict[str, dict[str, torch.Tensor]], file_name: str) -> str:
    types = set()
    for name, parts in modules.items():
        kinds = [kind for kind, names in ADAPTER_PARTS.items() if any(part in parts for part in names)]
        if len(kinds) != 1:
            raise LoraFileError(f"{file_name}: layer {name} has {'no' if not kinds else 'mixed'} adapter weights "
                                f"({', '.join(sorted(parts))}); the file is damaged or not a LoRA.")
        types.add(kinds[0])
    if len(types) > 1:
        raise LoraFileError(f"{file_name} mixes {' and '.join(sorted(types))} layers; LoRA Lab continues one network "
                            "type at a time.")
    return types.pop()


def _weight_shapes(model: Any) -> dict[str, torch.Size]:
    """Shape of the weight each kohya UNet name patches in the connected model."""
    state = model.model.state_dict()
    return {name: state[target].shape for name, target in comfy.lora.model_lora_keys_unet(model.model, {}).items()
            if name.startswith("lora_unet_") and isinstance(target, str) and target in state}


def _require(name: str, parts: dict[str, torch.Tensor], required: tuple[str, ...], file_name: str) -> list[torch.Tensor]:
    missing = [part for part in required if part not in parts]
    if missing:
        raise LoraFileError(f"{file_name}: layer {name} lacks {', '.join(missing)}; the file is incomplete.")
    return [parts[part].detach().to("cpu", torch.float32).contiguous() for part in required]


def _normalise(name: str, network: str, parts: dict[str, torch.Tensor], weight_shape: torch.Size | None,
               file_name: str) -> tuple[dict[str, torch.Tensor], int | None, float]:
    """One module in the trainer's layout, with its rank (None for an undecomposed LoKr) and alpha."""
    if network == "LoRA":
        down, up = _require(name, parts, ("lora_down.weight", "lora_up.weight"), file_name)
        rank = down.shape[0]
        if up.ndim < 2 or up.shape[1] != rank:
            raise LoraFileError(f"{file_name}: layer {name} has lora_up {list(up.shape)} for lora_down "
                                f"{list(down.shape)}; the file is damaged.")
        delta_shape = (up.shape[0], down.numel() // rank)
        if weight_shape is not None:
            _check_fits(name, delta_shape, weight_shape, file_name)
            down, up = _lora_layout(down, up, weight_shape)
        tensors = {f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up}
    elif network == "LoHa":
        w1a, w1b, w2a, w2b = _require(name, parts, ADAPTER_PARTS["LoHa"], file_name)
        rank = w1b.shape[0]
        delta_shape = (w1a.shape[0], w1b.shape[1])
        tensors = {f"{name}.hada_w1_a": w1a, f"{name}.hada_w1_b": w1b, f"{name}.hada_w2_a": w2a, f"{name}.hada_w2_b": w2b}
    else:
        (w1,) = _require(name, parts, ("lokr_w1",), file_name)
        tensors = {f"{name}.lokr_w1": w1}
        if "lokr_w2" in parts:
            (w2,) = _require(name, parts, ("lokr_w2",), file_name)
            tensors[f"{name}.lokr_w2"] = w2
            rank, rows, columns = None, w2.shape[0], w2[0].numel()
        else:
            w2a, w2b = _require(name, parts, ("lokr_w2_a", "lokr_w2_b"), file_name)
            tensors.update({f"{name}.lokr_w2_a": w2a, f"{name}.lokr_w2_b": w2b})
            rank, rows, columns = w2b.shape[0], w2a.shape[0], w2b[0].numel()
        delta_shape = (w1.shape[0] * rows, w1.shape[1] * columns)
    if weight_shape is not None:
        _check_fits(name, delta_shape, weight_shape, file_name)
    alpha = float(parts["alpha"].item()) if "alpha" in parts else float(rank or 1)
    tensors[f"{name}.alpha"] = torch.tensor(alpha, dtype=torch.float32)
    return tensors, rank, alpha


def _check_fits(name: str, delta_shape: tuple[int, int], weight_shape: torch.Size, file_name: str) -> None:
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


def _is_conv3x3(name: str, module_weights: dict[str, torch.Tensor], weight_shape: torch.Size | None) -> bool:
    if weight_shape is not None:
        return len(weight_shape) == 4 and tuple(weight_shape[2:]) != (1, 1)
    down = module_weights.get(f"{name}.lora_down.weight")
    if down is not None:
        return down.ndim == 4 and tuple(down.shape[2:]) != (1, 1)
    return bool(CONV3X3_NAME.search(name))


def _most_common(counts: Counter, metadata: dict[str, str], tensors: dict[str, torch.Tensor]) -> tuple[int, float]:
    """The rank and alpha most layers use (kohya files can vary them per block); metadata for undecomposed LoKr."""
    if counts:
        (rank, alpha), _ = counts.most_common(1)[0]
        return rank, alpha
    rank = _int_metadata(metadata, "ss_network_dim") or max(max(tensor.shape) for tensor in tensors.values() if tensor.ndim)
    alpha = _float_metadata(metadata, "ss_network_alpha") or float(rank)
    return rank, alpha


def _int_metadata(metadata: dict[str, str], key: str) -> int:
    value = _float_metadata(metadata, key)
    return int(value) if math.isfinite(value) else 0


def _float_metadata(metadata: dict[str, str], key: str) -> float:
    try:
        return float(metadata.get(key, 0))
    except ValueError:
        logger.warning("Ignoring metadata %s=%r: not a number.", key, metadata[key])
        return 0.0
