"""The family table: which model family a MODEL is, and every fact that differs between families.

One entry per family holds how it is detected (the ComfyUI model-config class, and the model type where one
class serves two families), its layers' names in files (kohya/ComfyUI naming, text-encoder prefixes), its
metadata (`ss_base_model_version`, `ss_v2`, `modelspec.*`), its native resolution and bucket step, its
prediction type and sampling default, and which text encoders can be trained; for flow-matching families the
timestep sampler, the guidance the model is trained and sampled with, and T5's token limit. Adding a family (Flux, SD3.5...)
is one entry here (plus its layer targets in targets.py when they are not the generic DiT ones).
"""
from __future__ import annotations

from dataclasses import dataclass

import comfy.model_base
import comfy.supported_models

from ..errors import SettingsError
from ..toy_world.flow_model import FlowToyWorld
from ..toy_world.model import ToyWorld

IMPLEMENTATION_DIFFUSERS = "diffusers"  # modelspec.implementation
IMPLEMENTATION_SGM = "https://github.com/Stability-AI/generative-models"
IMPLEMENTATION_FLUX = "https://github.com/black-forest-labs/flux"
IMPLEMENTATION_CHROMA = "https://huggingface.co/lodestones/Chroma"


@dataclass(frozen=True)
class Family:
    """Facts kohya's tools and A1111 key on, plus our defaults for the family."""

    name: str
    config_class: type  # ComfyUI's model config (comfy.supported_models) that identifies the family
    base_model_version: str  # kohya ss_base_model_version
    architecture: str  # modelspec.architecture
    prediction_type: str  # eps, v or flow
    native_resolution: int
    unet_naming: str  # "diffusers" (SD1/SD2 kohya names) or "comfy" (SGM/MMDiT paths as ComfyUI has them)
    text_encoder_prefixes: dict[str, str]  # trainable ComfyUI encoder attribute -> kohya key prefix
    bucket_step: int = 64
    latent_scale: int = 8  # image pixels per latent pixel, each way (the family's VAE)
    text_encoder_layers: dict[str, int] | None = None  # layers kohya's text encoder has, when fewer than ComfyUI's
    model_type: comfy.model_base.ModelType | None = None  # required as well, where one config class has two families
    is_v2: bool = False  # kohya's ss_v2
    implementation: str = IMPLEMENTATION_DIFFUSERS  # modelspec.implementation
    sample_cfg: float = 7.0  # CFG scale of samples rendered during training
    same_layers_as: str | None = None  # a family whose LoRAs fit this one's layers (v-prediction changes only the objective)
    excluded_classes: tuple[type, ...] = ()  # subclasses of config_class that are other architectures
    # Flow matching: the timestep sampler kohya's documentation recommends (None: the model's own schedule)
    timestep_sampling: str | None = None
    guidance_setting: bool = False  # a guidance-distilled model (Flux dev): trained at the guidance_scale setting
    fixed_guidance: float | None = None  # the guidance value other Flux-type models receive (Chroma: 0)
    sample_guidance: float | None = None  # FluxGuidance of samples and sweeps (cfg is then sample_cfg)
    sample_steps: int = 20  # sampler steps of samples and sweeps (timestep-distilled models need few)
    t5_max_tokens: int | None = None  # kohya's t5xxl_max_token_length, where T5 carries the caption


V_PREDICTION = comfy.model_base.ModelType.V_PREDICTION
SD15 = Family("sd15", comfy.supported_models.SD15, "sd_v1", "stable-diffusion-v1/lora", "eps", 512, "diffusers",
              {"clip_l": "lora_te"})
# SD2 reads OpenCLIP-H's penultimate layer; kohya's (diffusers') SD2 text encoder has only those 23 layers.
SD2 = Family("sd2", comfy.supported_models.SD20, "sd_v2", "stable-diffusion-v2-512/lora", "eps", 512, "diffusers",
             {"clip_h": "lora_te"}, text_encoder_layers={"clip_h": 23}, is_v2=True)
SD2_V = Family("sd2_v", comfy.supported_models.SD20, "sd_v2_v", "stable-diffusion-v2-768-v/lora", "v", 768, "diffusers",
               {"clip_h": "lora_te"}, text_encoder_layers={"clip_h": 23}, model_type=V_PREDICTION, is_v2=True,
               same_layers_as="sd2")
SDXL = Family("sdxl", comfy.supported_models.SDXL, "sdxl_base_v1-0", "stable-diffusion-xl-v1-base/lora", "eps", 1024,
              "comfy", {"clip_l": "lora_te1", "clip_g": "lora_te2"}, implementation=IMPLEMENTATION_SGM)
SD3 = Family("sd3", comfy.supported_models.SD3, "sd3", "stable-diffusion-3-medium/lora", "flow", 1024, "comfy",
             {"clip_l": "lora_te1", "clip_g": "lora_te2"}, sample_cfg=5.0)  # flow matching wants a lower CFG
# LoRA Lab's built-in demo model (trainer/toy_world): SD1.5 architecture and file format at 32x32 pixels.
TOY_WORLD = Family("toy_world", ToyWorld, "sd_v1", "stable-diffusion-v1/lora", "eps", 32, "diffusers",
                   {"clip_l": "lora_te"}, bucket_step=8)
# Flux.1 (Black Forest Labs' module paths, which ComfyUI keeps, are kohya's names) and Chroma, with kohya's documented
# defaults (docs/flux_train_network.md): shift sampling at 3.1582 for Flux, sigmoid and guidance 0 for Chroma.
# Latents are 8x the pixels in 2x2 patches, so buckets step by 16 px. T5-XXL is never trained; CLIP-L can be.
FLUX_DEV = Family("flux_dev", comfy.supported_models.Flux, "flux1", "flux-1-dev/lora", "flow", 1024, "comfy",
                  {"clip_l": "lora_te1"}, bucket_step=16, implementation=IMPLEMENTATION_FLUX, sample_cfg=1.0,
                  excluded_classes=(comfy.supported_models.FluxInpaint, comfy.supported_models.Flux2),
                  timestep_sampling="shift", guidance_setting=True, sample_guidance=3.5, t5_max_tokens=512)
FLUX_SCHNELL = Family("flux_schnell", comfy.supported_models.FluxSchnell, "flux1", "flux-1-schnell/lora", "flow", 1024,
                      "comfy", {"clip_l": "lora_te1"}, bucket_step=16, implementation=IMPLEMENTATION_FLUX,
                      sample_cfg=1.0, timestep_sampling="shift", sample_steps=4, t5_max_tokens=256)
CHROMA = Family("chroma", comfy.supported_models.Chroma, "chroma", "chroma/lora", "flow", 1024, "comfy", {},
                bucket_step=16, implementation=IMPLEMENTATION_CHROMA, sample_cfg=4.0,
                excluded_classes=(comfy.supported_models.ChromaRadiance,), timestep_sampling="sigmoid",
                fixed_guidance=0.0, t5_max_tokens=512)
# LoRA Lab's flow demo model (trainer/toy_world/flow_model.py): Flux.1 dev's architecture and file format at 32x32
# pixels; its VAE is 4x, so buckets step by 8 px. Pretrained with logit-normal timesteps and random guidance, and not
# guidance-distilled, so it samples with real CFG as Chroma does.
FLOW_TOY_WORLD = Family("flow_toy_world", FlowToyWorld, "flux1", "flux-1-dev/lora", "flow", 32, "comfy",
                        {"clip_l": "lora_te1"}, bucket_step=8, latent_scale=4, implementation=IMPLEMENTATION_FLUX,
                        sample_cfg=4.0, timestep_sampling="sigmoid", guidance_setting=True, sample_guidance=3.5,
                        t5_max_tokens=512)
BY_NAME = {family.name: family for family in (SD15, SD2, SD2_V, SDXL, SD3, TOY_WORLD, FLUX_DEV, FLUX_SCHNELL, CHROMA,
                                              FLOW_TOY_WORLD)}


def detect_family(model_patcher) -> Family:
    """Family of a ComfyUI MODEL, from its model config class and model type: the most specific entry that
    matches (the toy world's config is an SD15 config; sd2_v is the SD2 config with v-prediction)."""
    base_model = model_patcher.model
    config = base_model.model_config
    matches = [family for family in BY_NAME.values()
               if isinstance(config, family.config_class) and not isinstance(config, family.excluded_classes)
               and family.model_type in (None, base_model.model_type)]
    if matches:
        return max(matches, key=lambda family: (len(family.config_class.__mro__), family.model_type is not None))
    raise SettingsError(
        f"LoRA Lab trains SD1.x, SD2.x, SDXL, SD3, Flux.1 and Chroma models; the connected model is "
        f"{type(config).__name__}. Load a supported checkpoint (Load Checkpoint, or Load Diffusion Model for Flux)."
    )


def layers_family(name: str) -> str:
    """The family whose layers a family's LoRAs have (sd2_v's are sd2's); any other name as it is."""
    family = BY_NAME.get(name)
    return family.same_layers_as or family.name if family else name
