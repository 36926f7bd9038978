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

from ..errors import LoraFileError
from ..models.families import Family, detect_family
from ..training.networks import layouts, network_for_file
from ..training.trained_lora import EpochWeights, TrainedLora
from . import diffusers_lora
from .kohya_names import unet_names
from .metadata import dataset_summary_from_metadata, family_from_metadata, settings_from_metadata
from .network_layouts import FileLayout, check_fits

logger = logging.getLogger(__name__)

UNSUPPORTED_PARTS = {
    "lora_mid.weight": "LoCon with Tucker decomposition (lora_mid)",
    "hada_t1": "LoHa with Tucker decomposition", "hada_t2": "LoHa with Tucker decomposition",
    "lokr_t2": "LoKr with Tucker decomposition",
    "lokr_w1_a": "LoKr with a decomposed w1", "lokr_w1_b": "LoKr with a decomposed w1",
    "dora_scale": "DoRA", "oft_blocks": "OFT", "oft_diag": "OFT", "w_norm": "norm deltas", "b_norm": "norm deltas",
}
# ComfyUI's trainer also trains full deltas of biases and norm weights; no kohya/LyCORIS network holds them.
FULL_DELTA_PARTS = ("diff", "diff_b")
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
    layout = _file_layout(modules, file_name)
    shapes = _weight_shapes(model) if model is not None else {}
    weights: dict[str, torch.Tensor] = {}
    ranks, conv_ranks = Counter(), Counter()
    for name, parts in sorted(modules.items()):
        module_weights, rank, alpha = _normalise(name, layout, parts, shapes.get(name), file_name)
        weights.update(module_weights)
        is_conv = _is_conv3x3(name, module_weights, shapes.get(name))
        if rank is not None:
            (conv_ranks if is_conv else ranks)[(rank, alpha)] += 1
    network = network_for_file(layout, has_convs=bool(conv_ranks)).name
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
        raise LoraFileError(f"{file_name} holds peft-layout layers (lora_A/lora_B, as diffusers and ai-toolkit write); "
                            "connect the MODEL it was made for to Load LoRA so its layers can be placed.")
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
    known = {*(part for layout in layouts() for part in layout.parts), *UNSUPPORTED_PARTS, *FULL_DELTA_PARTS, "alpha"}
    for part in sorted(known, key=len, reverse=True):
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


def _file_layout(modules: dict[str, dict[str, torch.Tensor]], file_name: str) -> FileLayout:
    """The one layout (LoRA, LoHa, LoKr...) every layer of the file is stored in."""
    found: dict[int, FileLayout] = {}
    for name, parts in modules.items():
        kinds = [layout for layout in layouts() if any(part in parts for part in layout.parts)]
        if len(kinds) != 1:
            raise LoraFileError(f"{file_name}: layer {name} has {'no' if not kinds else 'mixed'} adapter weights "
                                f"({', '.join(sorted(parts))}); the file is damaged or not a LoRA.")
        found[id(kinds[0])] = kinds[0]
    if len(found) > 1:
        names = sorted(network_for_file(layout, has_convs=False).name for layout in found.values())
        raise LoraFileError(f"{file_name} mixes {' and '.join(names)} layers; LoRA Lab continues one network "
                            "type at a time.")
    return found.popitem()[1]


def _weight_shapes(model: Any) -> dict[str, torch.Size]:
    """Shape of the weight each kohya UNet name patches in the connected model."""
    state = model.model.state_dict()
    return {name: state[target].shape for name, target in comfy.lora.model_lora_keys_unet(model.model, {}).items()
            if name.startswith("lora_unet_") and isinstance(target, str) and target in state}


def _normalise(name: str, layout: FileLayout, parts: dict[str, torch.Tensor], weight_shape: torch.Size | None,
               file_name: str) -> tuple[dict[str, torch.Tensor], int | None, float]:
    """One module in the trainer's layout, with its rank (None for an undecomposed LoKr) and alpha."""
    tensors, rank, delta_shape = layout.normalise(name, parts, weight_shape, file_name)
    if weight_shape is not None:
        check_fits(name, delta_shape, weight_shape, file_name)
    alpha = float(parts["alpha"].item()) if "alpha" in parts else float(rank or 1)
    tensors[f"{name}.alpha"] = torch.tensor(alpha, dtype=torch.float32)
    return tensors, rank, alpha


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
