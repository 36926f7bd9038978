"""kohya sd-scripts module names for the layers we train, built explicitly from ComfyUI's module paths.

SD1/SD2 UNets use diffusers-style names (lora_unet_down_blocks_0_attentions_0_...), SDXL and DiT models
the paths ComfyUI itself has (lora_unet_input_blocks_4_1_...). Text-encoder names are built from the
layer index, never from transformers' module tree, whose shape changed in transformers v5.
"""
from __future__ import annotations

import comfy.utils

from ..models.families import Family
from ..models.targets import TEXT_ENCODER_LAYER


def unet_names(unet_config: dict, family: Family, paths: list[str]) -> dict[str, str]:
    """Map UNet module paths (relative to diffusion_model) to kohya module names."""
    if family.unet_naming == "comfy":
        return {path: "lora_unet_" + path.replace(".", "_") for path in paths}
    to_diffusers = {
        comfy_key[: -len(".weight")]: diffusers_key[: -len(".weight")]
        for diffusers_key, comfy_key in comfy.utils.unet_to_diffusers(unet_config).items()
        if diffusers_key.endswith(".weight")
    }
    missing = [path for path in paths if path not in to_diffusers]
    if missing:
        raise KeyError(f"no diffusers name for UNet modules {missing[:3]}")
    return {path: "lora_unet_" + to_diffusers[path].replace(".", "_") for path in paths}


def text_encoder_name(path: str, family: Family) -> str:
    """kohya name of a CLIP layer given its path under the CLIP's cond_stage_model."""
    match = TEXT_ENCODER_LAYER.match(path)
    if match is None or match["encoder"] not in family.text_encoder_prefixes:
        raise KeyError(f"{path} is not a text-encoder layer LoRA Lab trains for {family.name}")
    prefix = family.text_encoder_prefixes[match["encoder"]]
    return f"{prefix}_text_model_encoder_layers_{match['index']}_{match['part'].replace('.', '_')}"
