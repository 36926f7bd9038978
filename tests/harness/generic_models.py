"""Models outside LoRA Lab's family table, built through ComfyUI's own classes: PixArt Sigma (the generic path)
and an SD1.5 inpainting UNet (refused: it needs a mask and masked image).

PixArt Sigma's detection reads its depth, caption length and position table from the weights and fixes its
width and heads at the released model's; those entries take the toy geometry, as the Flux fixtures do.
"""
from __future__ import annotations

from typing import Any

import torch

from .flow_models import TINY_T5, chroma_clip_target
from .models import (
    TINY_SD15_UNET, ModelBundle, assemble_vae, cached_bundle, cached_dit_bundle, detected_with_toy_geometry,
    initialise_, sd15_clip_target, tiny_clip_config, tiny_vae_config, unet_config, unet_weights, vae_weights,
)

TOY_PIXART_GEOMETRY = {"hidden_size": 64, "num_heads": 2, "caption_channels": TINY_T5["d_model"]}


def pixart_sigma_config() -> dict[str, Any]:
    """PixArtMS's arguments at toy width; a 64-patch position table, so detection's guess of its interpolation is 1."""
    return {"image_model": "pixart_sigma", "input_size": 64, "patch_size": 2, "in_channels": 4, "depth": 2,
            "model_max_length": 300, "micro_condition": False, "pe_interpolation": 1, **TOY_PIXART_GEOMETRY}


def pixart_weights(config: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
    import comfy.ldm.pixart.pixartms
    import comfy.ops

    return initialise_(comfy.ldm.pixart.pixartms.PixArtMS(**config, operations=comfy.ops.disable_weight_init),
                       seed).state_dict()


def tiny_pixart_sigma(seed: int = 0) -> ModelBundle:
    """PixArt Sigma: a DiT with T5 cross-attention, eps prediction with learned variance, SDXL's latent space."""
    config = pixart_sigma_config()
    vae_config = tiny_vae_config()
    return cached_dit_bundle(
        "pixart_sigma", "tiny-pixart-sigma", {"diffusion": config, "t5": TINY_T5, "vae": vae_config, "seed": seed},
        lambda: pixart_weights(config, seed), chroma_clip_target(),  # ComfyUI's PixArt T5 encoder, at toy width
        lambda: vae_weights(vae_config, seed + 2),
        lambda unet_sd: detected_with_toy_geometry(unet_sd, "pixart_sigma", TOY_PIXART_GEOMETRY),
        lambda vae_sd: assemble_vae(vae_sd, vae_config, latent_channels=4))


def tiny_sd15_inpainting(seed: int = 0) -> ModelBundle:
    """SD1.5's inpainting UNet: 9 input channels (latents + mask + masked image), which ComfyUI sets up as such."""
    import comfy.supported_models

    config = {**unet_config(**TINY_SD15_UNET), "in_channels": 9}
    clip_config = tiny_clip_config(hidden_size=32)
    vae_config = tiny_vae_config()
    recipe = {"unet": config, "clip": clip_config, "vae": vae_config, "seed": seed}
    return cached_bundle("sd15_inpainting", "tiny-sd15-inpainting", recipe, comfy.supported_models.SD15(config),
                         lambda: unet_weights(config, seed), sd15_clip_target(clip_config), vae_config)
