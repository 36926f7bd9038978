"""The toy-world model: an SD1.5-architecture text-to-image model at toy size, built from ComfyUI's own classes.

Only the sizes differ from SD1.5: the UNet has two levels of 64/128 channels, the CLIP text model
two layers of width 64 (with the real SD1 tokenizer), and the VAE (64 channels, two downsamples)
reduces 32x32 images four-fold to 8x8x4 latents. Because the model config subclasses ComfyUI's SD15,
every ComfyUI node (CLIPTextEncode, KSampler, VAEDecode, LoraLoader) handles it as an SD1.5 model, and its
LoRAs use SD1.5's kohya names; LoRA Lab's `detect_family` reports it as `toy_world` (native size 32 px).
"""
from __future__ import annotations

import inspect
import json
import pathlib
from dataclasses import dataclass
from typing import Any

import comfy.latent_formats
import comfy.model_management as mm
import comfy.model_patcher
import comfy.sd
import comfy.sd1_clip
import comfy.supported_models
import comfy.supported_models_base
import comfy.utils
import torch

from ..errors import SettingsError

WEIGHTS_PATH = pathlib.Path(__file__).with_name("toy_world.safetensors")
FORMAT = "loralab-toy-world-1"
DOWNSCALE = 4  # pixels per latent cell: two VAE downsamples, where SD VAEs have three
NATIVE_RESOLUTION = 32
UNET_PREFIX = "model.diffusion_model."
CLIP_PREFIX = "cond_stage_model."
VAE_PREFIX = "first_stage_model."

# The UNet config in the per-block form ComfyUI's model detection produces.
UNET_CONFIG: dict[str, Any] = {
    "use_checkpoint": False, "image_size": NATIVE_RESOLUTION // DOWNSCALE, "in_channels": 4, "out_channels": 4,
    "model_channels": 64, "num_res_blocks": [1, 1], "channel_mult": [1, 2],
    "transformer_depth": [1, 1], "transformer_depth_output": [1, 1, 1, 1], "transformer_depth_middle": 1,
    "use_spatial_transformer": True, "legacy": False, "context_dim": 64, "use_linear_in_transformer": False,
    "adm_in_channels": None, "use_temporal_resblock": False, "use_temporal_attention": False,
}
# Applied by SDClipModel over its CLIP-L json config (`clip_l_model_config` model option).
TEXT_ENCODER_CONFIG: dict[str, Any] = {
    "hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4, "projection_dim": 64,
}
# 64 channels at every level: ComfyUI's VAE normalises in 32 groups, and with 32 channels each channel would be
# normalised on its own, which erases flat colours; at 32 channels the VAE learned colour several times slower.
VAE_CONFIG: dict[str, Any] = {"params": {"embed_dim": 4, "ddconfig": {
    "double_z": True, "z_channels": 4, "resolution": NATIVE_RESOLUTION, "in_channels": 3, "out_ch": 3, "ch": 64,
    "ch_mult": [1, 1, 1], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0,
}}}


class ToyWorldLatentFormat(comfy.latent_formats.LatentFormat):
    """4 channels at 1/4 of the image size; scale and preview factors come from the weights file."""

    latent_channels = 4
    spacial_downscale_ratio = DOWNSCALE  # ComfyUI >= 0.4 resizes empty latents made for another ratio

    def __init__(self) -> None:
        self.scale_factor = 1.0
        self.latent_rgb_factors = None
        self.latent_rgb_factors_bias = None
        self.taesd_decoder_name = None


class ToyWorld(comfy.supported_models.SD15):
    """SD1.5 with toy sizes. Not registered with ComfyUI's detection: only `load_toy_world` builds it."""

    unet_config = UNET_CONFIG
    unet_extra_config = {"num_heads": 4, "num_head_channels": -1}
    latent_format = ToyWorldLatentFormat  # sampling: SD1.5's 1000-step linear beta schedule, eps prediction


@dataclass
class ToyWorldModels:
    """MODEL, CLIP and VAE as a checkpoint loader returns them."""

    model: Any
    clip: Any
    vae: Any


# ---------------------------------------------------------------- building blocks (shared with pretraining)


def model_config(metadata: dict[str, str] | None = None) -> ToyWorld:
    """A fresh ToyWorld config; with a weights file's metadata, its latent scale and preview factors."""
    config = ToyWorld(UNET_CONFIG)
    if metadata is not None:
        latent_format = config.latent_format
        latent_format.scale_factor = float(metadata["latent_scale"])
        latent_format.latent_rgb_factors = json.loads(metadata["latent_rgb_factors"])
        latent_format.latent_rgb_factors_bias = json.loads(metadata["latent_rgb_factors_bias"])
    return config


def text_encoder_class(device: Any = "cpu", dtype: Any = None, model_options: dict[str, Any] | None = None) -> torch.nn.Module:
    """ComfyUI's SD1 text encoder (last layer, like SD1.5), built at toy width through its own config option."""
    options = {**(model_options or {}), "clip_l_model_config": TEXT_ENCODER_CONFIG}
    return comfy.sd1_clip.SD1ClipModel(device=device, dtype=dtype, model_options=options)


def clip_target() -> comfy.supported_models_base.ClipTarget:
    return comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, text_encoder_class)


def new_vae_module() -> torch.nn.Module:
    import comfy.ldm.models.autoencoder

    return comfy.ldm.models.autoencoder.AutoencoderKL(**VAE_CONFIG["params"])


def as_comfy_vae(vae_sd: dict[str, torch.Tensor]) -> comfy.sd.VAE:
    """ComfyUI's VAE wrapper over the toy AutoencoderKL, told about its 4x scale (it assumes 8x)."""
    vae = comfy.sd.VAE(sd=vae_sd, config=VAE_CONFIG)
    vae.downscale_ratio = DOWNSCALE
    vae.upscale_ratio = DOWNSCALE
    return vae


def empty_latent(width: int, height: int, batch_size: int) -> dict[str, Any]:
    """A LATENT of zeros for `width` x `height` pixels, each rounded down to a multiple of 8
    (4x VAE, and the UNet halves the latent once)."""
    samples = torch.zeros([batch_size, 4, _latent_cells(height), _latent_cells(width)], device=mm.intermediate_device())
    return {"samples": samples, "downscale_ratio_spacial": DOWNSCALE}


def _latent_cells(pixels: int) -> int:
    return max(1, pixels // 8) * 8 // DOWNSCALE


# ---------------------------------------------------------------- loading the shipped weights


def read_weights(path: pathlib.Path = WEIGHTS_PATH) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.is_file():
        raise SettingsError(
            f"The toy-world weights {path} are missing. Rebuild them with `python scripts/pretrain_toy_world.py` "
            "(about 20 minutes on a CPU) or restore the file from the repository."
        )
    sd, metadata = comfy.utils.load_torch_file(str(path), return_metadata=True)
    if (metadata or {}).get("format") != FORMAT:
        raise SettingsError(f"{path} is not a toy-world weights file (format {FORMAT} expected); rebuild it with "
                            "scripts/pretrain_toy_world.py.")
    return sd, metadata


def load_toy_world(path: pathlib.Path = WEIGHTS_PATH, embedding_directory: Any = None) -> ToyWorldModels:
    sd, metadata = read_weights(path)
    return ToyWorldModels(model=_model_patcher(sd, metadata, path), clip=_clip(sd, embedding_directory), vae=_vae(sd))


def load_toy_world_model(path: str, disable_dynamic: bool = False) -> Any:
    """The MODEL alone; ComfyUI >= 0.12 calls this (as `cached_patcher_init`) when it needs a fresh copy."""
    sd, metadata = read_weights(pathlib.Path(path))
    return _model_patcher(sd, metadata, pathlib.Path(path), disable_dynamic=disable_dynamic)


def _model_patcher(sd: dict[str, torch.Tensor], metadata: dict[str, str], path: pathlib.Path,
                   disable_dynamic: bool = False) -> Any:
    """MODEL as `comfy.sd.load_state_dict_guess_config` builds one, from the known config instead of detection."""
    config = model_config(metadata)
    parameters = comfy.utils.calculate_parameters(sd, UNET_PREFIX)
    load_device = mm.get_torch_device()
    unet_dtype = mm.unet_dtype(model_params=parameters, supported_dtypes=config.supported_inference_dtypes)
    config.set_inference_dtype(unet_dtype, mm.unet_manual_cast(unet_dtype, load_device, config.supported_inference_dtypes))
    model = config.get_model(sd, UNET_PREFIX, device=mm.unet_inital_load_device(parameters, unet_dtype))
    patcher_class = comfy.model_patcher.ModelPatcher
    if not disable_dynamic:
        patcher_class = getattr(comfy.model_patcher, "CoreModelPatcher", patcher_class)
    patcher = patcher_class(model, load_device=load_device, offload_device=mm.unet_offload_device())
    if "assign" in inspect.signature(model.load_model_weights).parameters:
        model.load_model_weights(sd, UNET_PREFIX, assign=patcher.is_dynamic())
    else:
        model.load_model_weights(sd, UNET_PREFIX)
    patcher.cached_patcher_init = (load_toy_world_model, (str(path),))
    return patcher


def _clip(sd: dict[str, torch.Tensor], embedding_directory: Any) -> comfy.sd.CLIP:
    clip_sd = comfy.utils.state_dict_prefix_replace(sd, {CLIP_PREFIX: ""}, filter_keys=True)
    clip = comfy.sd.CLIP(target=clip_target(), embedding_directory=embedding_directory,
                         parameters=comfy.utils.calculate_parameters(clip_sd))
    missing, _ = clip.load_sd(clip_sd, full_model=True)
    if missing:
        raise SettingsError(f"The toy-world weights lack text-encoder tensors ({missing[:3]}...); rebuild them with "
                            "scripts/pretrain_toy_world.py.")
    return clip


def _vae(sd: dict[str, torch.Tensor]) -> comfy.sd.VAE:
    return as_comfy_vae(comfy.utils.state_dict_prefix_replace(sd, {VAE_PREFIX: ""}, filter_keys=True))
