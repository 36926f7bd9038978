"""The family table: which model family a MODEL is, and every fact that differs between families.

One entry per family holds how it is detected (the ComfyUI model-config class, and the model type where one
class serves two families), its layers' names in files (kohya/ComfyUI naming, text-encoder prefixes, the block
layers its trainer leaves out), its metadata (`ss_base_model_version`, `ss_v2`, `modelspec.*`), its native
resolution and bucket step, its prediction type and sampling default, and which text encoders can be trained; for
flow-matching families the timestep sampler and shift, the guidance the model is trained and sampled with, and
T5's token limit. Adding a family is one entry here. Any other model ComfyUI samples gets a generic family built
from its config class; a model that needs inputs a captioned dataset cannot give is refused by name.
"""
from __future__ import annotations

from dataclasses import dataclass

import comfy.model_base
import comfy.supported_models

from ..errors import SettingsError
from ..training.flow_matching import FLUX_SHIFT
from ..training.objectives import prediction_type
from .targets import DIT_BLOCKS, DIT_EXCLUDE
from ..toy_world.flow_model import FlowToyWorld
from ..toy_world.model import ToyWorld

IMPLEMENTATION_DIFFUSERS = "diffusers"  # modelspec.implementation
IMPLEMENTATION_SGM = "https://github.com/Stability-AI/generative-models"
IMPLEMENTATION_FLUX = "https://github.com/black-forest-labs/flux"
IMPLEMENTATION_CHROMA = "https://huggingface.co/lodestones/Chroma"


@dataclass(frozen=True)
class CaptionTokens:
    """The caption's tokenizer (the first of these that ComfyUI's CLIP tokenizer holds), its name in the report, and
    how many of its tokens the family's trainer reads (more are cut off)."""

    tokenizers: tuple[str, ...]
    name: str
    limit: int
    source: str


def t5_tokens(limit: int) -> CaptionTokens:
    return CaptionTokens(("t5xxl",), "T5", limit, "kohya's t5xxl_max_token_length")


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
    latent_patch: int = 2  # latent pixels per transformer token, each way (flux_shift counts tokens)
    text_encoder_layers: dict[str, int] | None = None  # layers kohya's text encoder has, when fewer than ComfyUI's
    model_type: comfy.model_base.ModelType | None = None  # required as well, where one config class has two families
    is_v2: bool = False  # kohya's ss_v2
    implementation: str = IMPLEMENTATION_DIFFUSERS  # modelspec.implementation
    sample_cfg: float = 7.0  # CFG scale of samples rendered during training
    same_layers_as: str | None = None  # a family whose LoRAs fit this one's layers (v-prediction changes only the objective)
    excluded_classes: tuple[type, ...] = ()  # subclasses of config_class that are other architectures
    unet_config_match: tuple[tuple[str, object], ...] = ()  # detected config entries that tell variants of one class apart
    # Flow matching: the timestep sampler kohya's documentation recommends (None: the model's own schedule)
    timestep_sampling: str | None = None
    guidance_setting: bool = False  # a guidance-distilled model (Flux dev): trained at the guidance_scale setting
    fixed_guidance: float | None = None  # the guidance value other Flux-type models receive (Chroma: 0)
    sample_guidance: float | None = None  # FluxGuidance of samples and sweeps (cfg is then sample_cfg)
    sample_steps: int = 20  # sampler steps of samples and sweeps (timestep-distilled models need few)
    caption_tokens: CaptionTokens | None = None  # the tokenizer that carries the caption, where CLIP's 75 do not
    flow_shift: float = FLUX_SHIFT  # the shift sampler's discrete_flow_shift (musubi-tuner's documented value)
    adapter_blocks: str = DIT_BLOCKS  # DiT families: regex of the module paths whose linears get adapters
    adapter_exclude: str | None = DIT_EXCLUDE  # regex of those the family's trainer leaves out (modulations)


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
                  timestep_sampling="shift", guidance_setting=True, sample_guidance=3.5, caption_tokens=t5_tokens(512))
FLUX_SCHNELL = Family("flux_schnell", comfy.supported_models.FluxSchnell, "flux1", "flux-1-schnell/lora", "flow", 1024,
                      "comfy", {"clip_l": "lora_te1"}, bucket_step=16, implementation=IMPLEMENTATION_FLUX,
                      sample_cfg=1.0, timestep_sampling="shift", sample_steps=4, caption_tokens=t5_tokens(256))
CHROMA = Family("chroma", comfy.supported_models.Chroma, "chroma", "chroma/lora", "flow", 1024, "comfy", {},
                bucket_step=16, implementation=IMPLEMENTATION_CHROMA, sample_cfg=4.0,
                excluded_classes=(comfy.supported_models.ChromaRadiance,), timestep_sampling="sigmoid",
                fixed_guidance=0.0, caption_tokens=t5_tokens(512))
# LoRA Lab's flow demo model (trainer/toy_world/flow_model.py): Flux.1 dev's architecture and file format at 32x32
# pixels; its VAE is 4x, so buckets step by 8 px. Pretrained with logit-normal timesteps and random guidance, and not
# guidance-distilled, so it samples with real CFG as Chroma does.
FLOW_TOY_WORLD = Family("flow_toy_world", FlowToyWorld, "flux1", "flux-1-dev/lora", "flow", 32, "comfy",
                        {"clip_l": "lora_te1"}, bucket_step=8, latent_scale=4, implementation=IMPLEMENTATION_FLUX,
                        sample_cfg=4.0, timestep_sampling="sigmoid", guidance_setting=True, sample_guidance=3.5,
                        caption_tokens=t5_tokens(512))
# Qwen-Image and Z-Image, as musubi-tuner trains them (docs/qwen_image.md, docs/zimage.md, networks/lora_*.py): the
# shift sampler at its documented shift, and its metadata names (utils/sai_model_spec.py). Latents are 8x the pixels
# in 2x2 patches (16 px buckets); their LLM text encoders are never trained.
# Qwen-Image: every linear of the transformer blocks but the modulations (`img_mod`, `txt_mod`); musubi-tuner's names
# are the module paths, which ComfyUI's modules keep.
QWEN_IMAGE = Family("qwen_image", comfy.supported_models.QwenImage, "qwen_image", "Qwen-Image/lora", "flow", 1328,
                    "comfy", {}, bucket_step=16, implementation="https://github.com/QwenLM/Qwen-Image", sample_cfg=4.0,
                    timestep_sampling="shift", flow_shift=2.2, adapter_exclude=r"adaLN|_mod\.",
                    caption_tokens=CaptionTokens(("qwen25_7b",), "Qwen2.5-VL", 1024, "diffusers' max_sequence_length"))
# Z-Image: the linears of the main layers, not of the refiner layers nor the modulations. ComfyUI fuses q/k/v into
# one `attention.qkv`, so the files carry ComfyUI's module paths (`lora_unet_layers_0_attention_qkv`). Samples follow
# Z-Image Turbo, the distilled release most people run: cfg 1, 8 steps.
Z_IMAGE = Family("z_image", comfy.supported_models.ZImage, "z_image", "Z-Image/lora", "flow", 1024, "comfy", {},
                 bucket_step=16, implementation="https://github.com/Tongyi-MAI/Z-Image", sample_cfg=1.0, sample_steps=8,
                 timestep_sampling="shift", flow_shift=2.0, adapter_blocks=r"^layers\.",
                 adapter_exclude="adaLN_modulation",
                 caption_tokens=CaptionTokens(("qwen3_4b",), "Qwen3", 512, "diffusers' max_sequence_length"))
# Lumina 2, as kohya's sd-scripts trains it (docs/lumina_train_network.md, networks/lora_lumina.py): every linear of
# the main and refiner layers and the final layer, modulations included; its recommended `nextdit_shift` sampler
# (`shift` at 6.0 on request); ComfyUI's module paths are kohya's Lumina names (`lora_unet_layers_0_attention_qkv`).
# Gemma 2 stays frozen.
LUMINA2 = Family("lumina2", comfy.supported_models.Lumina2, "lumina2", "lumina-2/lora", "flow", 1024, "comfy", {},
                 bucket_step=16, implementation="https://github.com/Alpha-VLLM/Lumina-Image-2.0", sample_cfg=4.0,
                 timestep_sampling="nextdit_shift", flow_shift=6.0,
                 adapter_blocks=r"^(layers|noise_refiner|context_refiner|final_layer)\.", adapter_exclude=None,
                 caption_tokens=CaptionTokens(("gemma2_2b",), "Gemma 2", 256, "kohya's gemma2_max_token_length"))
# Wan 2.1 / 2.2 text-to-video, trained on still images as one-frame videos. ComfyUI's WAN21_T2V is Wan 2.1 T2V
# (1.3B, 14B) and Wan 2.2 T2V A14B (its high- and low-noise files alike). musubi-tuner's defaults: every linear of
# the attention blocks but its excluded names (networks/lora_wan.py:37), the shift sampler at 3.0 (docs/wan.md:177),
# names from the module paths, which ComfyUI's modules keep, and its metadata (ss_base_model_version "wan":
# dataset/architectures.py:5; modelspec "wan2.1/lora" and Wan2.1's repository: utils/sai_model_spec.py:77,101).
# 640 px: 640x640 has the area of 832x480, the 480p size both Wan 2.1 sizes generate (ComfyUI's Wan template,
# musubi's `--video_size 832 480`, docs/wan.md:293), and 832x480 is one of its buckets. Latents are 8x the pixels in
# 1x2x2 patches (musubi's RESOLUTION_STEPS_WAN = 16, dataset/bucket.py:42). Samples use Wan's CFG 5
# (wan/configs/wan_t2v_14B.py:40) at the model's own shift. UMT5-XXL is never trained. Every subclass of WAN21_T2V
# is another model and never this family: those NEEDS_OTHER_INPUTS names or that concatenate an input are refused,
# the rest (WAN22_T2V, Wan 2.2 TI2V 5B with its 48-channel 16x VAE, which musubi-tuner does not train; the causal
# WAN21_CausalAR_T2V; newer trees' pose and reference variants) take the generic path.
IMPLEMENTATION_WAN = "https://github.com/Wan-Video/Wan2.1"


def _variants_of(config_class: type) -> tuple[type, ...]:
    """ComfyUI's subclasses of a model config class: other models that share its detection keys and loader."""
    return tuple(config for config in vars(comfy.supported_models).values()
                 if isinstance(config, type) and issubclass(config, config_class) and config is not config_class)


WAN = Family("wan", comfy.supported_models.WAN21_T2V, "wan", "wan2.1/lora", "flow", 640, "comfy", {},
             bucket_step=16, implementation=IMPLEMENTATION_WAN, sample_cfg=5.0,
             excluded_classes=_variants_of(comfy.supported_models.WAN21_T2V), timestep_sampling="shift", flow_shift=3.0,
             adapter_exclude=r"patch_embedding|text_embedding|time_embedding|time_projection|norm|head",
             caption_tokens=CaptionTokens(("clip_umt5xxl",), "UMT5", 512, "Wan's text_len"))
# Flux.2 (dev, guidance-distilled, and Klein 4B/9B, which have no guidance input), as musubi-tuner trains it
# (docs/flux_2.md, networks/lora_flux_2.py, flux_2_train_network.py): every linear of the double and single blocks
# (Black Forest Labs' names, which ComfyUI keeps) but the modulations; its `flux2_shift` sampler, which is Flux's
# resolution shift counting one token per latent pixel (ComfyUI's Flux.2 latents are already 2x2-packed: 128
# channels at 16x); dev trained at guidance 1 and sampled with FluxGuidance 4, Klein sampled at cfg 4 (musubi-tuner's
# defaults for the base models); metadata as musubi-tuner writes it (utils/sai_model_spec.py; it names Klein's size,
# which LoRA Lab leaves out). The text encoders (Mistral 3 24B, Qwen3 4B/8B) are never trained.
IMPLEMENTATION_FLUX2 = "https://github.com/black-forest-labs/flux2"
FLUX2_TOKENS = CaptionTokens(("mistral3_24b", "qwen3_4b", "qwen3_8b"), "LLM", 512, "diffusers' max_sequence_length")
FLUX2_DEV = Family("flux_2_dev", comfy.supported_models.Flux2, "flux_2_dev", "Flux.2-dev/lora", "flow", 1024, "comfy", {},
                   bucket_step=16, latent_scale=16, latent_patch=1, implementation=IMPLEMENTATION_FLUX2, sample_cfg=1.0,
                   timestep_sampling="flux_shift", guidance_setting=True, sample_guidance=4.0,
                   adapter_exclude=r"adaLN|_mod\.lin|modulation\.lin", unet_config_match=(("guidance_embed", True),),
                   caption_tokens=FLUX2_TOKENS)
FLUX2_KLEIN = Family("flux_2_klein", comfy.supported_models.Flux2, "flux_2_klein", "Flux.2-klein/lora", "flow", 1024,
                     "comfy", {}, bucket_step=16, latent_scale=16, latent_patch=1, implementation=IMPLEMENTATION_FLUX2,
                     sample_cfg=4.0, timestep_sampling="flux_shift", adapter_exclude=r"adaLN|_mod\.lin|modulation\.lin",
                     unet_config_match=(("guidance_embed", False),), caption_tokens=FLUX2_TOKENS)
# HiDream I1 (Full, Dev and Fast: one architecture, ComfyUI's HiDream config class), as ai-toolkit trains it: every
# linear of the double- and single-stream blocks (its transformer_only default, toolkit/config_modules.py:202, over
# get_transformer_block_names, extensions_built_in/diffusion_models/hidream/hidream_model.py:432), modulations
# included, but not the routed MoE experts (`ignore_if_contains: ff_i.experts, ff_i.gate`,
# config/examples/train_lora_hidream_48.yaml:31-33: only 2 of 4 see each token); the shared experts are trained, and
# the router's gate is a bare weight, no linear, in ComfyUI as in diffusers, so it never gets an adapter. (SimpleTuner's
# default is the image stream's to_q/k/v/out only, simpletuner/helpers/models/hidream/model.py:57.) The shift sampler
# at 3.0: ai-toolkit's `timestep_type: shift` (yaml:56) with its scheduler's shift 3.0 (hidream_model.py:45), and
# SimpleTuner's example `flow_schedule_shift: 3` (simpletuner/examples/hidream.peft-lora/config.json:17) over its
# sigmoid draw, which is LoRA Lab's `shift` exactly (ai-toolkit shifts a uniform draw). ss_base_model_version
# "hidream_i1" is ai-toolkit's (hidream_model.py:452, written at jobs/process/BaseSDTrainProcess.py:392); neither
# trainer writes a flavour-free modelspec (SimpleTuner's is "hidream-<flavour>/lora", save_hooks.py:457), so
# "hidream-i1/lora" is OneTrainer's (resources/sd_model_spec/hi_dream_full-lora.json). Files carry ComfyUI's module
# paths; ai-toolkit's `diffusion_model.<path>` and SimpleTuner's `transformer.<path>` files load as well. Samples as
# ComfyUI's HiDream I1 Full template (hidream_i1_full.json: KSampler 50 steps, cfg 5, as the
# HiDream-I1 paper's "Full ... 50+ steps", arXiv 2505.22705):
# Full is the one to train (yaml:75). 1024 px, 16 px buckets (8x latents in 2x2 patches). CLIP-L, CLIP-G, T5
# and Llama 3.1 stay frozen (yaml:53).
HIDREAM_I1 = Family("hidream_i1", comfy.supported_models.HiDream, "hidream_i1", "hidream-i1/lora", "flow", 1024, "comfy",
                    {}, bucket_step=16, implementation="https://github.com/HiDream-ai/HiDream-I1", sample_cfg=5.0,
                    sample_steps=50, timestep_sampling="shift", flow_shift=3.0, adapter_exclude=r"ff_i\.experts\.",
                    caption_tokens=CaptionTokens(("t5xxl",), "T5", 128, "ComfyUI's and diffusers' max_sequence_length"))
# HunyuanImage 2.1 (the 17B text-to-image model; its refiner concatenates an image and is refused), as kohya's
# sd-scripts trains it (docs/hunyuan_image_train_network.md, hunyuan_image_train_network.py, networks/
# lora_hunyuan_image.py): every linear of the double- and single-stream blocks, modulations included
# (lora_hunyuan_image.py:194-195 targets MMDoubleStreamBlock/MMSingleStreamBlock and creates a LoRA on each of
# their Linears, :276-285), none of the token refiner, byT5 mapper or embedders; files under ComfyUI's module paths
# (`lora_unet_double_blocks_0_img_mod_lin`), which are kohya's `lora_unet` names after its
# networks/convert_hunyuan_image_lora_to_comfy.py. Noise levels: kohya's default `--timestep_sampling sigma`
# (hunyuan_image_train_network.py:650-652) draws uniformly over its scheduler's timesteps at
# `--discrete_flow_shift 5.0` (:672-675, :511; library/flux_train_utils.py:500-512 with train_util.py:4280's
# weighting_scheme uniform), which is ComfyUI's own schedule for the model (supported_models.py HunyuanImage21
# sampling shift 5.0), so the family default is the model's own schedule; `shift` on request at kohya's 5.0 (docs
# :137, :300-302 "Recommended Settings").
# Metadata as kohya writes it: ss_base_model_version "hunyuan-image-2.1" (library/hunyuan_image_utils.py:16,
# hunyuan_image_train_network.py:374), modelspec "hunyuan-image-2.1/lora" and the official repository
# (library/sai_model_spec.py:82,96). 2048 px in 32 px buckets: the model generates 2K (2048x2048, the official
# README), ComfyUI's EmptyHunyuanImageLatent defaults to 2048 in steps of 32 (comfy_extras/nodes_hunyuan.py:354 in
# 0.3.75, :371 in 0.33); latents are 32x the pixels, one token per latent pixel (patch 1). Samples at cfg 3.5 and
# 20 steps, kohya's sample defaults (hunyuan_image_train_network.py:162,165; 3.5 is the official guidance_scale).
# The released base model has no guidance input; the guidance value 6.0 is what ComfyUI gives its distilled
# sibling when sampling (model_base.py HunyuanImage21.extra_conds), so training feeds it the same. Qwen2.5-VL and
# byT5 stay frozen (`--network_train_unet_only` is required, docs :143).
HUNYUAN_IMAGE_2_1 = Family("hunyuan_image_2_1", comfy.supported_models.HunyuanImage21, "hunyuan-image-2.1",
                           "hunyuan-image-2.1/lora", "flow", 2048, "comfy", {}, bucket_step=32, latent_scale=32,
                           latent_patch=1, implementation="https://github.com/Tencent-Hunyuan/HunyuanImage-2.1",
                           sample_cfg=3.5, fixed_guidance=6.0, flow_shift=5.0,
                           adapter_blocks=r"^(double|single)_blocks\.", adapter_exclude=None,
                           caption_tokens=CaptionTokens(("qwen25_7b",), "Qwen2.5-VL", 1024,
                                                        "kohya's TOKENIZER_MAX_LENGTH"))
BY_NAME = {family.name: family for family in (SD15, SD2, SD2_V, SDXL, SD3, TOY_WORLD, FLUX_DEV, FLUX_SCHNELL,
                                              CHROMA, FLOW_TOY_WORLD, QWEN_IMAGE, Z_IMAGE,
                                              LUMINA2, WAN, FLUX2_DEV, FLUX2_KLEIN, HIDREAM_I1,
                                              HUNYUAN_IMAGE_2_1)}
GENERIC_PREFIX = "comfyui"  # generic families are named comfyui:<ComfyUI config class>:<prediction type>
# Models whose conditioning needs what Load Dataset cannot give, by ComfyUI config class (the generic rule below
# catches any model that concatenates an image or mask to its input).
NEEDS_OTHER_INPUTS = {"WAN22_S2V": "audio", "WAN21_HuMo": "audio", "WAN22_Animate": "a reference video and pose",
                      "WAN21_Vace": "control video frames", "WAN21_Camera": "camera poses",
                      "WAN22_Camera": "camera poses", "WAN_Animate2": "a reference video and pose",
                      "WAN21_SCAIL": "a pose video and reference image", "WAN21_SCAIL2": "a pose video and reference image",
                      "WAN21_FlowRVS": "a source video", "StableAudio": "audio (it is an audio model)",
                      "ACEStep": "audio (it is an audio model)"}


def detect_family(model_patcher) -> Family:
    """Family of a ComfyUI MODEL, from its model config class and model type: the most specific entry that
    matches (the toy world's config is an SD15 config; sd2_v is the SD2 config with v-prediction), else the
    generic family of any other model ComfyUI samples. A model that needs inputs a dataset cannot give is refused."""
    base_model = model_patcher.model
    config = base_model.model_config
    _refuse_unsupported_conditioning(base_model)
    matches = [family for family in BY_NAME.values()
               if isinstance(config, family.config_class) and not isinstance(config, family.excluded_classes)
               and family.model_type in (None, base_model.model_type)
               and all(config.unet_config.get(key) == value for key, value in family.unet_config_match)]
    if matches:
        return max(matches, key=lambda family: (len(family.config_class.__mro__), family.model_type is not None,
                                                len(family.unet_config_match)))
    return generic_family(type(config), prediction_type(base_model.model_sampling))


def _refuse_unsupported_conditioning(base_model) -> None:
    config_name = type(base_model.model_config).__name__
    needs = NEEDS_OTHER_INPUTS.get(config_name)
    if needs is None and base_model.concat_keys:
        needs = "a mask and masked image concatenated to its input (an inpainting model)"
    if needs is None and _concatenates_an_image(base_model):
        needs = "an image concatenated to its input (an image-to-video or edit model)"
    if needs:
        raise SettingsError(f"The connected model ({config_name}) needs {needs}, which Load Dataset cannot give: "
                            "LoRA Lab trains text-to-image models. Load the model's text-to-image version.")


def _concatenates_an_image(base_model) -> bool:
    """Whether the diffusion model takes more input channels than its latents have (I2V and inpaint variants)."""
    import torch

    latent_format = base_model.latent_format
    shape = (1, latent_format.latent_channels) + (8,) * getattr(latent_format, "latent_dimensions", 2)
    try:
        extra = base_model.concat_cond(noise=torch.zeros(shape), device=torch.device("cpu"))
    except (TypeError, AttributeError, KeyError):  # a concat_cond that needs the image it concatenates
        return True
    return extra is not None


def generic_family(config_class: type, prediction: str) -> Family:
    """Any other model ComfyUI samples: adapters on its transformer blocks' linears under ComfyUI's own module
    paths (`lora_unet_<path>`, which LoraLoader maps for every model), 1024 px in 64 px buckets, the model's own
    noise schedule, and no text-encoder training."""
    return Family(f"{GENERIC_PREFIX}:{config_class.__name__}:{prediction}", config_class,
                  f"{GENERIC_PREFIX}:{config_class.__name__}", f"comfyui-{config_class.__name__.lower()}/lora",
                  prediction, 1024, "comfy", {}, implementation="https://github.com/comfyanonymous/ComfyUI",
                  sample_cfg=4.0 if prediction == "flow" else 7.0)


def family_named(name: str) -> Family:
    """The family a LoRA names: a table entry, or a generic family rebuilt from its ComfyUI config class."""
    if name in BY_NAME:
        return BY_NAME[name]
    prefix, _, rest = name.partition(":")
    class_name, _, prediction = rest.partition(":")
    config_class = getattr(comfy.supported_models, class_name, None)
    if prefix != GENERIC_PREFIX or config_class is None or prediction not in ("eps", "v", "flow"):
        raise SettingsError(f"{name!r} is not a model family LoRA Lab knows.")
    return generic_family(config_class, prediction)


def layers_family(name: str) -> str:
    """The family whose layers a family's LoRAs have (sd2_v's are sd2's); any other name as it is."""
    family = BY_NAME.get(name)
    return family.same_layers_as or family.name if family else name
