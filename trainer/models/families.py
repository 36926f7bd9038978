"""Which Stable Diffusion family a MODEL belongs to, and what that implies for training and file format."""
from __future__ import annotations

from dataclasses import dataclass

import comfy.model_base
import comfy.supported_models

from ..errors import SettingsError
from ..toy_world.model import ToyWorld


@dataclass(frozen=True)
class Family:
    """Facts kohya's tools and A1111 key on, plus our defaults for the family."""

    name: str
    base_model_version: str  # kohya ss_base_model_version
    architecture: str  # modelspec.architecture
    prediction_type: str  # eps, v or flow
    native_resolution: int
    unet_naming: str  # "diffusers" (SD1/SD2 kohya names) or "comfy" (SGM/MMDiT paths as ComfyUI has them)
    text_encoder_prefixes: dict[str, str]  # ComfyUI encoder attribute -> kohya key prefix
    bucket_step: int = 64
    text_encoder_layers: dict[str, int] | None = None  # layers kohya's text encoder has, when fewer than ComfyUI's

    @property
    def is_v2(self) -> bool:
        return self.name.startswith("sd2")


SD15 = Family("sd15", "sd_v1", "stable-diffusion-v1/lora", "eps", 512, "diffusers", {"clip_l": "lora_te"})
# SD2 reads OpenCLIP-H's penultimate layer; kohya's (diffusers') SD2 text encoder has only those 23 layers.
SD2 = Family("sd2", "sd_v2", "stable-diffusion-v2-512/lora", "eps", 512, "diffusers", {"clip_h": "lora_te"},
             text_encoder_layers={"clip_h": 23})
SD2_V = Family("sd2_v", "sd_v2_v", "stable-diffusion-v2-768-v/lora", "v", 768, "diffusers", {"clip_h": "lora_te"},
               text_encoder_layers={"clip_h": 23})
SDXL = Family("sdxl", "sdxl_base_v1-0", "stable-diffusion-xl-v1-base/lora", "eps", 1024, "comfy",
              {"clip_l": "lora_te1", "clip_g": "lora_te2"})
SD3 = Family("sd3", "sd3", "stable-diffusion-3-medium/lora", "flow", 1024, "comfy",
             {"clip_l": "lora_te1", "clip_g": "lora_te2"})
# LoRA Lab's built-in demo model (trainer/toy_world): SD1.5 architecture and file format at 32x32 pixels.
TOY_WORLD = Family("toy_world", "sd_v1", "stable-diffusion-v1/lora", "eps", 32, "diffusers", {"clip_l": "lora_te"},
                   bucket_step=8)
BY_NAME = {family.name: family for family in (SD15, SD2, SD2_V, SDXL, SD3, TOY_WORLD)}


def detect_family(model_patcher) -> Family:
    """Family of a ComfyUI MODEL, from its model config class and prediction type."""
    base_model = model_patcher.model
    config = base_model.model_config
    model_type = base_model.model_type
    if isinstance(config, comfy.supported_models.SDXL):
        return SDXL
    if isinstance(config, comfy.supported_models.SD20):
        return SD2_V if model_type == comfy.model_base.ModelType.V_PREDICTION else SD2
    if isinstance(config, ToyWorld):
        return TOY_WORLD
    if isinstance(config, comfy.supported_models.SD15):
        return SD15
    if isinstance(config, comfy.supported_models.SD3):
        return SD3
    raise SettingsError(
        f"LoRA Lab trains SD1.x, SD2.x, SDXL and SD3 models; the connected model is {type(config).__name__}. "
        "Load a supported checkpoint with CheckpointLoaderSimple."
    )
