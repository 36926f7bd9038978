"""A random-weight Z-Image built through ComfyUI's own classes: its NextDiT (Lumina 2's architecture with Z-Image's
modulation), ComfyUI's Qwen3-4B text encoder and tokenizer at toy width, and a 16-channel 8x VAE as Flux's.

ComfyUI's detection reads the width, the caption width and the layer count from the weights and fixes heads and
rotary geometry for the released widths only; the toy geometry (`TOY_GEOMETRY`) sets them. ComfyUI tells Z-Image
from Lumina 2 by its 3840 width, so the toy's model config is ComfyUI's `ZImage` class built from the detected
config.
"""
from __future__ import annotations

from typing import Any

import torch

from .models import (
    ModelBundle, assemble_clip, assemble_model, assemble_vae, cached_state_dict, initialise_, prefixed,
    shrunk_text_encoder, split, text_encoder_weights, tiny_vae_config, vae_weights,
)

LATENT_CHANNELS = 16
# Qwen3's head width is fixed at 128 in ComfyUI's config; three layers for the penultimate-layer readout.
TINY_QWEN3 = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 2,
              "num_key_value_heads": 1}
# Z-Image's modulation reads a 256-wide timestep embedding whatever the width, so the toy is 256 wide: two heads of
# Z-Image's own 128 (its rotary split 32 + 48 + 48).
TOY_WIDTH = 256
TOY_GEOMETRY = {"n_heads": 2, "n_kv_heads": 2, "axes_dims": [32, 48, 48], "axes_lens": [1536, 512, 512],
                "rope_theta": 256.0, "ffn_dim_multiplier": 8.0 / 3.0, "z_image_modulation": True, "time_scale": 1000.0}


def z_image_config(n_layers: int = 2) -> dict[str, Any]:
    """NextDiT's arguments for a toy Z-Image: 2x2 patches of 16 channels, Qwen3 features as captions."""
    return {"image_model": "lumina2", "patch_size": 2, "in_channels": LATENT_CHANNELS, "dim": TOY_WIDTH,
            "cap_feat_dim": TINY_QWEN3["hidden_size"], "n_layers": n_layers, "qk_norm": True, **TOY_GEOMETRY}


def diffusion_weights(config: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
    import comfy.ldm.lumina.model
    import comfy.ops

    return initialise_(comfy.ldm.lumina.model.NextDiT(**config, operations=comfy.ops.disable_weight_init),
                       seed).state_dict()


def z_image_model_config(diffusion_sd: dict[str, torch.Tensor]) -> Any:
    import comfy.model_detection
    import comfy.supported_models

    unet_config = comfy.model_detection.detect_unet_config(diffusion_sd, "")
    if unet_config is None or unet_config.get("image_model") != "lumina2":
        raise RuntimeError(f"ComfyUI's model detection did not recognise the toy Z-Image weights: {unet_config}")
    return comfy.supported_models.ZImage({**unet_config, **TOY_GEOMETRY})


def z_image_clip_target() -> Any:
    import comfy.supported_models_base
    import comfy.text_encoders.z_image as z_image

    return comfy.supported_models_base.ClipTarget(z_image.ZImageTokenizer,
                                                  shrunk_text_encoder(z_image.te(), qwen3_4b=TINY_QWEN3))


def tiny_z_image(seed: int = 0) -> ModelBundle:
    """Z-Image: single-stream NextDiT with refiner layers, Qwen3 hidden states as captions, Flux's latent space."""
    config = z_image_config()
    clip_target = z_image_clip_target()
    vae_config = tiny_vae_config(latent_channels=LATENT_CHANNELS)
    recipe = {"diffusion": config, "qwen3": TINY_QWEN3, "vae": vae_config, "seed": seed}
    sd = cached_state_dict("tiny-z-image", recipe, lambda: prefixed(
        unet=diffusion_weights(config, seed), clip=text_encoder_weights(clip_target, seed + 1),
        vae=vae_weights(vae_config, seed + 2)))
    unet_sd = split(sd, "unet.")
    return ModelBundle(family="z_image", model=assemble_model(z_image_model_config(unet_sd), unet_sd),
                       clip=assemble_clip(clip_target, split(sd, "clip.")),
                       vae=assemble_vae(split(sd, "vae."), vae_config, latent_channels=LATENT_CHANNELS))
