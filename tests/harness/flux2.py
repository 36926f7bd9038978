"""A random-weight Flux.2 Klein built through ComfyUI's own classes: Flux.2's transformer (global modulation, 128-channel
packed latents, one token per latent pixel), ComfyUI's Klein text encoder (Qwen3 hidden states of three layers) and
tokenizer at toy width, and Flux.2's VAE (32 channels, batch-normalised and packed 2x2 into 128 at 16x).

ComfyUI's detection reads the widths and block counts from the weights and fixes the heads and rotary geometry at
the released model's; the toy geometry replaces them. ComfyUI's VAE loader builds Flux.2's VAE at its released
width whatever the file holds, so the toy VAE is assembled from its config as the other fixtures' are, with the
packed latent's channels and scale. Klein's text encoder exists from ComfyUI 0.3.76 on: on older trees the fixture
skips, and Flux.2 dev's own encoder cannot tokenize there either (0.3.75 converts Mistral's vocabulary with an API
transformers 5 no longer has).
"""
from __future__ import annotations

from typing import Any

import pytest
import torch

from .flow_models import bfl_names, diffusion_weights, flux_module
from .models import (
    ModelBundle, assemble_vae, cached_dit_bundle, detected_with_toy_geometry, shrunk_text_encoder, tiny_vae_config,
    vae_weights,
)

VAE_CHANNELS, LATENT_CHANNELS = 32, 128  # the VAE's latent, then packed 2x2
# Klein reads Qwen3's layers 9, 18 and 27; Qwen3's head width stays 128 in ComfyUI.
TINY_QWEN3 = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 28, "num_attention_heads": 2,
              "num_key_value_heads": 1}
TOY_GEOMETRY = {"num_heads": 2, "axes_dim": [8, 8, 8, 8]}


def flux2_config(guidance_embed: bool = False) -> dict[str, Any]:
    """The constructor arguments of ComfyUI's Flux for a toy Flux.2 (Klein without guidance, dev with)."""
    return {"image_model": "flux2", "in_channels": LATENT_CHANNELS, "out_channels": LATENT_CHANNELS, "vec_in_dim": None,
            "context_in_dim": 3 * TINY_QWEN3["hidden_size"], "hidden_size": 64, "mlp_ratio": 3.0, "depth": 1,
            "depth_single_blocks": 1, "theta": 2000, "patch_size": 1, "qkv_bias": False, "guidance_embed": guidance_embed,
            "global_modulation": True, "mlp_silu_act": True, "ops_bias": False, "default_ref_method": "index",
            "ref_index_scale": 10.0, **TOY_GEOMETRY}


def flux2_vae_config() -> dict[str, Any]:
    config = tiny_vae_config(latent_channels=VAE_CHANNELS)
    config["params"]["ddconfig"]["batch_norm_latent"] = True
    return config


def flux2_vae(vae_sd: dict[str, torch.Tensor]) -> Any:
    """Flux.2's VAE as ComfyUI sets it up: 8x convolutions, then latents packed 2x2 into 128 channels."""
    vae = assemble_vae(vae_sd, flux2_vae_config(), latent_channels=LATENT_CHANNELS)
    vae.downscale_ratio = vae.upscale_ratio = 16
    return vae


def klein_clip_target() -> Any:
    import comfy.supported_models_base
    import comfy.text_encoders.flux as flux

    if not hasattr(flux, "klein_te"):
        pytest.skip("this ComfyUI has no Flux.2 Klein text encoder (it came after 0.3.75), and its Flux.2 dev encoder "
                    "cannot tokenize with transformers 5")
    return comfy.supported_models_base.ClipTarget(flux.KleinTokenizer,
                                                  shrunk_text_encoder(flux.klein_te(), qwen3_4b=TINY_QWEN3))


def tiny_flux2(family: str, guidance_embed: bool, seed: int = 0) -> ModelBundle:
    config = flux2_config(guidance_embed)
    vae_config = flux2_vae_config()
    return cached_dit_bundle(
        family, f"tiny-{family}", {"diffusion": config, "qwen3": TINY_QWEN3, "vae": vae_config, "seed": seed},
        lambda: diffusion_weights(config, seed), klein_clip_target(), lambda: vae_weights(vae_config, seed + 2),
        lambda unet_sd: detected_with_toy_geometry(unet_sd, "flux2", TOY_GEOMETRY), flux2_vae)


def tiny_flux2_klein(seed: int = 0) -> ModelBundle:
    """Flux.2 Klein: double and single stream blocks with global modulation, no guidance input, Qwen3 context."""
    return tiny_flux2("flux_2_klein", False, seed)


def tiny_flux2_dev(seed: int = 0) -> ModelBundle:
    """Flux.2 dev: Klein's architecture plus the guidance embedding of a guidance-distilled model. Its real text
    encoder is Mistral 3 24B, whose tokenizer comes from its own weights file; the toy reads Klein's encoder, of the
    width its context input expects."""
    return tiny_flux2("flux_2_dev", True, seed)


# The released transformers (their detection fixes the rest): widths, block counts and text widths (three layers
# of Mistral 3 24B for dev, of Qwen3 4B / 8B for Klein).
RELEASED = {
    "Flux.2 dev": {"hidden_size": 6144, "num_heads": 48, "depth": 8, "depth_single_blocks": 48, "context": 3 * 5120,
                   "guidance_embed": True},
    "Flux.2 Klein 4B": {"hidden_size": 3072, "num_heads": 24, "depth": 5, "depth_single_blocks": 20, "context": 3 * 2560,
                        "guidance_embed": False},
    "Flux.2 Klein 9B": {"hidden_size": 4096, "num_heads": 32, "depth": 8, "depth_single_blocks": 24, "context": 3 * 4096,
                        "guidance_embed": False},
}


def released_on_meta(name: str) -> Any:
    """A released Flux.2 transformer on the meta device, detected by ComfyUI: shapes without weights, for the
    memory estimate's figures."""
    import comfy.model_detection

    sizes = RELEASED[name]
    config = {**flux2_config(sizes["guidance_embed"]), "hidden_size": sizes["hidden_size"], "num_heads": sizes["num_heads"],
              "depth": sizes["depth"], "depth_single_blocks": sizes["depth_single_blocks"],
              "context_in_dim": sizes["context"], "axes_dim": [32, 32, 32, 32]}
    weights = bfl_names(flux_module(config, device="meta").state_dict())
    model_config = comfy.model_detection.model_config_from_unet(weights, "")
    return model_config.get_model(weights, "", device="meta")
