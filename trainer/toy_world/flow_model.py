"""The flow toy world: a Flux.1-architecture text-to-image model at toy size, built from ComfyUI's own classes.

It draws the same scenes as the toy world (trainer/toy_world/scenes.py) but the way most LoRAs are now trained
for: a rectified-flow transformer (two double-stream and two single-stream blocks, 128 wide, guidance
embedding as Flux.1 dev has), a VAE with Flux's 16 latent channels (two downsamples: 32x32 images give 8x8
latents, 4x4 tokens in 2x2 patches), and Flux's CLIP-L + T5-XXL text encoders with their real tokenizers
at width 64. The config subclasses ComfyUI's Flux, so every ComfyUI node (CLIPTextEncode, FluxGuidance,
KSampler, LoraLoader) handles it as Flux.1 dev and its LoRAs carry kohya's Flux names; `detect_family` reports
`flow_toy_world` (native size 32 px). It is not guidance-distilled, so it samples with real CFG.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import comfy.latent_formats
import comfy.supported_models
import comfy.supported_models_base
import comfy.text_encoders.flux
import torch

from .kind import DemoModelKind, with_latent_statistics

WEIGHTS_PATH = pathlib.Path(__file__).with_name("flow_toy_world.safetensors")
FORMAT = "loralab-flow-toy-world-1"
LATENT_CHANNELS = 16
# Applied by SDClipModel / T5XXLModel over their json configs (`clip_l_model_config`, `t5xxl_model_config`).
CLIP_L_CONFIG: dict[str, Any] = {
    "hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4, "projection_dim": 64,
}
T5_CONFIG: dict[str, Any] = {"d_model": 64, "d_ff": 256, "d_kv": 16, "num_heads": 4, "num_layers": 2}
T5_MIN_TOKENS = 32
# The constructor arguments of comfy.ldm.flux.model.Flux (Flux.1 dev: 3072 wide, 24 heads, 19 + 38 blocks).
DIFFUSION_CONFIG: dict[str, Any] = {
    "image_model": "flux", "in_channels": LATENT_CHANNELS, "out_channels": LATENT_CHANNELS,
    "vec_in_dim": CLIP_L_CONFIG["hidden_size"], "context_in_dim": T5_CONFIG["d_model"], "hidden_size": 128,
    "mlp_ratio": 4.0, "num_heads": 4, "depth": 2, "depth_single_blocks": 2, "axes_dim": [8, 12, 12], "theta": 10000,
    "patch_size": 2, "qkv_bias": True, "guidance_embed": True,
}
VAE_CONFIG: dict[str, Any] = {"params": {"embed_dim": LATENT_CHANNELS, "ddconfig": {
    "double_z": True, "z_channels": LATENT_CHANNELS, "resolution": 32, "in_channels": 3, "out_ch": 3, "ch": 64,
    "ch_mult": [1, 1, 1], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0,
}}}


class FlowToyWorldLatentFormat(comfy.latent_formats.Flux):
    """Flux's 16 channels at 1/4 of the image size; scale, shift and preview factors come from the weights file."""

    spacial_downscale_ratio = 4  # ComfyUI >= 0.4 resizes empty latents made for another ratio

    def __init__(self) -> None:
        super().__init__()
        self.taesd_decoder_name = None


class FlowToyWorld(comfy.supported_models.Flux):
    """Flux.1 dev with toy sizes. Not registered with ComfyUI's detection: only the demo loader builds it.
    Sampling: Flux's shifted flow schedule (ComfyUI's default shift 1.15 for a Flux config without one)."""

    latent_format = FlowToyWorldLatentFormat


def diffusion_config() -> dict[str, Any]:
    """DIFFUSION_CONFIG plus what this ComfyUI's FluxParams also requires (newer trees: text position axes)."""
    import comfy.ldm.flux.model

    fields = {field.name for field in dataclasses.fields(comfy.ldm.flux.model.FluxParams)}
    return {**DIFFUSION_CONFIG, **({"txt_ids_dims": []} if "txt_ids_dims" in fields else {})}


def model_config(metadata: dict[str, str] | None = None) -> FlowToyWorld:
    return with_latent_statistics(FlowToyWorld(diffusion_config()), metadata)


def text_encoder_class(device: Any = "cpu", dtype: Any = None, model_options: dict[str, Any] | None = None) -> torch.nn.Module:
    """ComfyUI's Flux text encoders (CLIP-L pooled + T5-XXL sequence), built at toy width through their config options."""
    options = {**(model_options or {}), "clip_l_model_config": CLIP_L_CONFIG, "t5xxl_model_config": T5_CONFIG}
    return comfy.text_encoders.flux.flux_clip()(device=device, dtype=dtype, model_options=options)


class FlowToyWorldTokenizer(comfy.text_encoders.flux.FluxTokenizer):
    """Flux's tokenizers, with T5 padded to 32 tokens instead of 256 (ComfyUI's own `t5xxl_min_length` option): toy
    captions stay under 20, and 48 tokens instead of 272 per sample make training and sampling five times faster."""

    def __init__(self, embedding_directory: Any = None, tokenizer_data: dict[str, Any] | None = None) -> None:
        super().__init__(embedding_directory=embedding_directory,
                         tokenizer_data={"t5xxl_min_length": T5_MIN_TOKENS, **(tokenizer_data or {})})


def clip_target() -> comfy.supported_models_base.ClipTarget:
    return comfy.supported_models_base.ClipTarget(FlowToyWorldTokenizer, text_encoder_class)


KIND = DemoModelKind("flow_toy_world", FORMAT, WEIGHTS_PATH, model_config, clip_target, VAE_CONFIG,
                     latent_channels=LATENT_CHANNELS)
