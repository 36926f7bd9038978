"""Random-weight flow-matching models built through ComfyUI's own classes: Flux.1 dev, Flux.1 schnell, Chroma,
and the SD3.5 variants of the MMDiT.

Each diffusion model is built at toy size, then its state dict goes through ComfyUI's model detection
(`comfy.model_detection.detect_unet_config` + `model_config_from_unet_config`), which picks the family
class (Flux, FluxSchnell, Chroma) from the tensors as Load Diffusion Model does. Detection reads every
width from the tensors except the attention-head geometry (and Chroma's modulation approximator), which it
fixes at the 12B model's values; those few entries are replaced by the toy geometry (`TOY_GEOMETRY`).
Text encoders are ComfyUI's Flux CLIP-L + T5-XXL (Chroma: T5 only) classes with real tokenizers at toy
width, and the VAE has 16 latent channels. SD3.5's MMDiT is detected by ComfyUI without any override.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

import torch

from .models import (
    ModelBundle, assemble_clip, assemble_model, assemble_vae, cached_file, cached_state_dict, initialise_,
    loaded_completely, mmdit_weights,
    prefixed,
    sd3_clip_target, shrunk_text_encoder, split, text_encoder_weights, tiny_encoder_overrides, tiny_sd3_mmdit_config,
    tiny_vae_config, vae_weights,
)

FLUX_LATENT_CHANNELS = 16
TINY_FLUX_CLIP_L = tiny_encoder_overrides(hidden_size=32)
TINY_T5 = {"d_model": 32, "d_ff": 64, "d_kv": 16, "num_heads": 2, "num_layers": 2}
TOY_HIDDEN = 64
# What detection fixes at full size (24 heads of 128 = 16 + 56 + 56 rotary dims; Chroma's approximator 5120 wide
# with a 3072-wide output) that a toy model needs smaller.
TOY_GEOMETRY = {"num_heads": 2, "axes_dim": [8, 12, 12]}
TOY_CHROMA_APPROXIMATOR = {"out_dim": TOY_HIDDEN, "hidden_dim": 64, "n_layers": 2}


def flux_checkpoint_config(*, guidance_embed: bool, depth: int = 2, depth_single_blocks: int = 2) -> dict[str, Any]:
    """The constructor arguments of `comfy.ldm.flux.model.Flux` for a toy Flux.1 (dev when guidance_embed)."""
    return {
        "image_model": "flux", "in_channels": FLUX_LATENT_CHANNELS, "out_channels": FLUX_LATENT_CHANNELS,
        "vec_in_dim": TINY_FLUX_CLIP_L["hidden_size"], "context_in_dim": TINY_T5["d_model"],
        "hidden_size": TOY_HIDDEN, "mlp_ratio": 4.0, "depth": depth, "depth_single_blocks": depth_single_blocks,
        "theta": 10000, "patch_size": 2, "qkv_bias": True, "guidance_embed": guidance_embed, **TOY_GEOMETRY,
    }


def chroma_checkpoint_config(depth: int = 2, depth_single_blocks: int = 2) -> dict[str, Any]:
    """The constructor arguments of `comfy.ldm.chroma.model.Chroma` for a toy Chroma (patchified 64 channels in)."""
    return {
        "image_model": "chroma", "in_channels": FLUX_LATENT_CHANNELS * 4, "out_channels": FLUX_LATENT_CHANNELS * 4,
        "context_in_dim": TINY_T5["d_model"], "hidden_size": TOY_HIDDEN, "mlp_ratio": 4.0, "depth": depth,
        "depth_single_blocks": depth_single_blocks, "theta": 10000, "patch_size": 2, "qkv_bias": True,
        "in_dim": 64, **TOY_CHROMA_APPROXIMATOR, **TOY_GEOMETRY,
    }


# Arguments newer ComfyUI trees require (0.33's ChromaParams), at the values their detection gives a Flux-style model.
NEWER_TREE_DEFAULTS = {"txt_ids_dims": [], "vec_in_dim": None}
RMS_NORM_WEIGHT = re.compile(r"(query_norm|key_norm|norms\.\d+)\.weight$")


def flux_module(config: dict[str, Any], device: Any = "cpu") -> torch.nn.Module:
    """ComfyUI's Flux or Chroma diffusion model for constructor arguments, with what newer trees also require."""
    import comfy.ldm.chroma.model
    import comfy.ldm.flux.model
    import comfy.ops

    if config["image_model"] == "chroma":
        model_class, params_class = comfy.ldm.chroma.model.Chroma, comfy.ldm.chroma.model.ChromaParams
    else:
        model_class, params_class = comfy.ldm.flux.model.Flux, comfy.ldm.flux.model.FluxParams
    fields = {field.name for field in dataclasses.fields(params_class)}
    newer = {name: value for name, value in NEWER_TREE_DEFAULTS.items() if name in fields and name not in config}
    return model_class(**config, **newer, device=device, operations=comfy.ops.disable_weight_init)


def bfl_names(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights named as Black Forest Labs' checkpoints name them (RMS norms as `.scale`), which every ComfyUI
    reads, whatever its own parameter names (0.33 renames them `.weight` on load)."""
    return {RMS_NORM_WEIGHT.sub(r"\1.scale", key): value for key, value in weights.items()}


def diffusion_weights(config: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
    return bfl_names(initialise_(flux_module(config), seed).state_dict())


def detected_model_config(diffusion_sd: dict[str, torch.Tensor]) -> Any:
    """ComfyUI's model config for these weights, detected as Load Diffusion Model detects it (toy geometry set)."""
    import comfy.model_detection

    unet_config = comfy.model_detection.detect_unet_config(diffusion_sd, "")
    if unet_config is None:
        raise RuntimeError("ComfyUI's model detection did not recognise the toy Flux weights")
    unet_config.update(TOY_GEOMETRY)
    if unet_config["image_model"] == "chroma":
        unet_config.update(TOY_CHROMA_APPROXIMATOR)
    model_config = comfy.model_detection.model_config_from_unet_config(unet_config, diffusion_sd)
    if model_config is None:
        raise RuntimeError(f"ComfyUI has no model class for the detected config {unet_config}")
    return model_config


def flux_clip_target() -> Any:
    import comfy.supported_models_base
    import comfy.text_encoders.flux as flux

    clip = shrunk_text_encoder(flux.flux_clip(), clip_l=TINY_FLUX_CLIP_L, t5xxl=TINY_T5)
    return comfy.supported_models_base.ClipTarget(flux.FluxTokenizer, clip)


def chroma_clip_target() -> Any:
    import comfy.supported_models_base
    import comfy.text_encoders.pixart_t5 as pixart_t5

    clip = shrunk_text_encoder(pixart_t5.pixart_te(), t5xxl=TINY_T5)
    return comfy.supported_models_base.ClipTarget(pixart_t5.PixArtTokenizer, clip)


def flux_bundle(family: str, cache_name: str, config: dict[str, Any], clip_target: Any, seed: int,
                weight_dtype: torch.dtype = torch.float32) -> ModelBundle:
    """Cached random weights for the three parts, with the model config ComfyUI detects from the diffusion weights."""
    vae_config = tiny_vae_config(latent_channels=FLUX_LATENT_CHANNELS)
    recipe = {"diffusion": config, "clip_l": TINY_FLUX_CLIP_L, "t5": TINY_T5, "vae": vae_config, "seed": seed}
    sd = cached_state_dict(cache_name, recipe, lambda: prefixed(
        unet=diffusion_weights(config, seed), clip=text_encoder_weights(clip_target, seed + 1),
        vae=vae_weights(vae_config, seed + 2)))
    unet_sd = split(sd, "unet.")
    return ModelBundle(
        family=family,
        model=loaded_completely(assemble_model(detected_model_config(unet_sd), unet_sd, weight_dtype=weight_dtype), unet_sd),
        clip=assemble_clip(clip_target, split(sd, "clip.")),
        vae=assemble_vae(split(sd, "vae."), vae_config, latent_channels=FLUX_LATENT_CHANNELS),
    )


def tiny_flux_dev(seed: int = 0, weight_dtype: torch.dtype = torch.float32) -> ModelBundle:
    """Flux.1 dev architecture: double + single stream blocks, guidance embedding, CLIP-L pooled + T5 context."""
    return flux_bundle("flux_dev", "tiny-flux-dev", flux_checkpoint_config(guidance_embed=True),
                       flux_clip_target(), seed, weight_dtype)


def tiny_flux_dev_fp8(seed: int = 0) -> ModelBundle:
    """The tiny Flux dev stored in float8_e4m3fn, as Load Diffusion Model with weight_dtype fp8_e4m3fn loads it."""
    return tiny_flux_dev(seed, weight_dtype=torch.float8_e4m3fn)


def tiny_flux_schnell(seed: int = 0) -> ModelBundle:
    """Flux.1 schnell architecture: as dev without the guidance embedding (timestep-distilled, shift 1)."""
    return flux_bundle("flux_schnell", "tiny-flux-schnell", flux_checkpoint_config(guidance_embed=False),
                       flux_clip_target(), seed)


def tiny_chroma(seed: int = 0) -> ModelBundle:
    """Chroma architecture: Flux blocks without per-block modulation (one approximator feeds them), T5 only."""
    return flux_bundle("chroma", "tiny-chroma", chroma_checkpoint_config(), chroma_clip_target(), seed)


FLUX_FAMILIES: dict[str, Callable[..., ModelBundle]] = {
    "flux_dev": tiny_flux_dev, "flux_schnell": tiny_flux_schnell, "chroma": tiny_chroma,
}


# ---------------------------------------------------------------- SD3.5 (MMDiT with q/k RMS norms; medium adds MMDiT-X)

SD35_VARIANTS = {
    "large": {"qk_norm": "rms"},
    "medium": {"qk_norm": "rms", "x_block_self_attn_layers": [0]},  # MMDiT-X: a second self-attention in early blocks
}


def tiny_sd35(variant: str, seed: int = 0) -> ModelBundle:
    """SD3.5 large or medium at toy size, its model config detected by ComfyUI from the MMDiT weights alone."""
    import comfy.model_detection

    config = {**tiny_sd3_mmdit_config(), **SD35_VARIANTS[variant]}
    vae_config = tiny_vae_config(latent_channels=FLUX_LATENT_CHANNELS)
    clip_target = sd3_clip_target()
    recipe = {"mmdit": config, "vae": vae_config, "seed": seed, "clip": "sd3"}
    sd = cached_state_dict(f"tiny-sd35-{variant}", recipe, lambda: prefixed(
        unet=mmdit_weights(config, seed), clip=text_encoder_weights(clip_target, seed + 1),
        vae=vae_weights(vae_config, seed + 2)))
    unet_sd = split(sd, "unet.")
    return ModelBundle(
        family="sd3",
        model=loaded_completely(assemble_model(comfy.model_detection.model_config_from_unet(unet_sd, ""), unet_sd), unet_sd),
        clip=assemble_clip(clip_target, split(sd, "clip.")),
        vae=assemble_vae(split(sd, "vae."), vae_config, latent_channels=FLUX_LATENT_CHANNELS),
    )


# ---------------------------------------------------------------- Flux at full width, shapes only

def full_width_flux_config(guidance_embed: bool = True, depth: int = 19, depth_single_blocks: int = 38) -> dict[str, Any]:
    """Flux.1's constructor arguments at the real widths (3072 hidden, 24 heads, T5-XXL and CLIP-L inputs); the
    default depths are the released model's (11.9B parameters)."""
    return {"image_model": "flux", "in_channels": 16, "out_channels": 16, "vec_in_dim": 768, "context_in_dim": 4096,
            "hidden_size": 3072, "mlp_ratio": 4.0, "num_heads": 24, "depth": depth,
            "depth_single_blocks": depth_single_blocks, "axes_dim": [16, 56, 56], "theta": 10000, "patch_size": 2,
            "qkv_bias": True, "guidance_embed": guidance_embed}


def full_width_flux_file(device: str = "cpu", depth: int = 19, depth_single_blocks: int = 38) -> Any:
    """Flux.1 dev's transformer at the real widths as a diffusion-model file in fp8, as Flux's fp8 releases are
    (11.9 GB at the released depths), random weights drawn on `device`; cached. Load Diffusion Model detects it."""
    config = full_width_flux_config(True, depth, depth_single_blocks)

    def make() -> dict[str, torch.Tensor]:
        transformer = flux_module({**config, "dtype": torch.float8_e4m3fn})
        return bfl_names(initialise_(transformer, 0, device).state_dict())

    return cached_file("flux-dev-transformer", {"flux": config, "seed": 0, "device": device, "dtype": "fp8"}, make)


# Flux's CLIP-L (pooled, 768 wide) and T5-XXL (4096 wide, one narrow layer): the conditioning has Flux's real shapes.
FULL_WIDTH_CLIP_L = tiny_encoder_overrides(hidden_size=768)
FULL_WIDTH_T5 = {"d_model": 4096, "d_ff": 256, "d_kv": 64, "num_heads": 2, "num_layers": 1}


def full_width_flux_clip(seed: int = 1) -> Any:
    import comfy.supported_models_base
    import comfy.text_encoders.flux as flux

    encoder = shrunk_text_encoder(flux.flux_clip(), clip_l=FULL_WIDTH_CLIP_L, t5xxl=FULL_WIDTH_T5)
    target = comfy.supported_models_base.ClipTarget(flux.FluxTokenizer, encoder)
    return assemble_clip(target, text_encoder_weights(target, seed))


def full_width_flux_on_meta(guidance_embed: bool = True, depth: int = 1, depth_single_blocks: int = 1) -> Any:
    """A Flux.1 model at the real widths with few blocks, built on the meta device and detected by ComfyUI with no
    override: its layer names and shapes, without weights.

    diffusers' kohya-Flux conversion hardcodes Flux's widths, so files checked against it need these shapes.
    """
    import comfy.model_detection

    config = full_width_flux_config(guidance_embed, depth, depth_single_blocks)
    weights = bfl_names(flux_module(config, device="meta").state_dict())
    model_config = comfy.model_detection.model_config_from_unet(weights, "")
    return model_config.get_model(weights, "", device="meta")
