"""The toy-world model: an SD1.5-architecture text-to-image model at toy size, built from ComfyUI's own classes.

Only the sizes differ from SD1.5: the UNet has two levels of 64/128 channels, the CLIP text model
two layers of width 64 (with the real SD1 tokenizer), and the VAE (64 channels, two downsamples)
reduces 32x32 images four-fold to 8x8x4 latents. Because the model config subclasses ComfyUI's SD15,
every ComfyUI node (CLIPTextEncode, KSampler, VAEDecode, LoraLoader) handles it as an SD1.5 model, and its
LoRAs use SD1.5's kohya names; LoRA Lab's `detect_family` reports it as `toy_world` (native size 32 px).
"""
from __future__ import annotations

import pathlib
from typing import Any

import comfy.latent_formats
import comfy.model_management as mm
import comfy.sd1_clip
import comfy.supported_models
import comfy.supported_models_base
import torch

from .kind import DemoModelKind, with_latent_statistics

WEIGHTS_PATH = pathlib.Path(__file__).with_name("toy_world.safetensors")
FORMAT = "loralab-toy-world-1"
DOWNSCALE = 4  # pixels per latent cell: two VAE downsamples, where SD VAEs have three
NATIVE_RESOLUTION = 32

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


def model_config(metadata: dict[str, str] | None = None) -> ToyWorld:
    """A fresh ToyWorld config; with a weights file's metadata, its latent scale and preview factors."""
    return with_latent_statistics(ToyWorld(UNET_CONFIG), metadata)


def text_encoder_class(device: Any = "cpu", dtype: Any = None, model_options: dict[str, Any] | None = None) -> torch.nn.Module:
    """ComfyUI's SD1 text encoder (last layer, like SD1.5), built at toy width through its own config option."""
    options = {**(model_options or {}), "clip_l_model_config": TEXT_ENCODER_CONFIG}
    return comfy.sd1_clip.SD1ClipModel(device=device, dtype=dtype, model_options=options)


def clip_target() -> comfy.supported_models_base.ClipTarget:
    return comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, text_encoder_class)


KIND = DemoModelKind("toy_world", FORMAT, WEIGHTS_PATH, model_config, clip_target, VAE_CONFIG, latent_channels=4,
                     downscale=DOWNSCALE)


def empty_latent(width: int, height: int, batch_size: int) -> dict[str, Any]:
    """A LATENT of zeros for `width` x `height` pixels, each rounded down to a multiple of 8 (4x VAE, and the
    UNet halves the latent once, as Flux's 2x2 patches do). KSampler widens zeros to a model's 16 channels."""
    samples = torch.zeros([batch_size, 4, _latent_cells(height), _latent_cells(width)], device=mm.intermediate_device())
    return {"samples": samples, "downscale_ratio_spacial": DOWNSCALE}


def _latent_cells(pixels: int) -> int:
    return max(1, pixels // 8) * 8 // DOWNSCALE
