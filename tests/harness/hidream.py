"""A random-weight HiDream I1 built through ComfyUI's own classes: its MoE transformer (double- and single-stream
blocks whose image feed-forward routes each token to 2 of 4 experts), ComfyUI's HiDream text encoder (CLIP-L,
CLIP-G, T5-XXL and Llama 3.1 with their real tokenizers, shrunk) and Flux's 16-channel 8x latent space.

ComfyUI's detection recognises HiDream by its caption projections and fixes every other entry (heads, rotary
axes, caption widths, block counts, the Llama layer each block reads, the pooled width) at the released 17B's
values, so the toy geometry (`toy_geometry`) replaces them, as the other DiT fixtures do. The pooled width is
CLIP-L's projection plus CLIP-G's, the caption widths T5's and Llama's hidden sizes. Llama's heads stay 128 wide
(ComfyUI's config fixes them) and its vocabulary real (128256 ids), since the real Llama 3 tokenizer feeds it.
"""
from __future__ import annotations

from typing import Any

import torch

from .models import (
    ModelBundle, assemble_vae, cached_dit_bundle, detected_with_toy_geometry, initialise_, shrunk_text_encoder,
    tiny_encoder_overrides, tiny_vae_config, vae_weights,
)

LATENT_CHANNELS = 16
TINY_CLIP_L = tiny_encoder_overrides(hidden_size=32)
TINY_CLIP_G = tiny_encoder_overrides(hidden_size=32)
TINY_T5 = {"d_model": 32, "d_ff": 64, "d_kv": 16, "num_heads": 2, "num_layers": 2}
TINY_LLAMA = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "num_key_value_heads": 1}
DOUBLE_BLOCKS, SINGLE_BLOCKS = 2, 2


def toy_geometry() -> dict[str, Any]:
    """What detection fixes at the 17B's size, for the toy: 2 heads of 32 (rotary 16 + 8 + 8, the released 2:1:1),
    two blocks of each kind, each reading one of the toy Llama's two layers (the released model reads 0..31 and
    then the last layer again), the caption and pooled widths of the toy encoders."""
    return {"attention_head_dim": 32, "num_attention_heads": 2, "axes_dims_rope": [16, 8, 8],
            "num_layers": DOUBLE_BLOCKS, "num_single_layers": SINGLE_BLOCKS, "llama_layers": [0, 1, 1, 1],
            "caption_channels": [TINY_T5["d_model"], TINY_LLAMA["hidden_size"]],
            "text_emb_dim": TINY_CLIP_L["projection_dim"] + TINY_CLIP_G["projection_dim"]}


def hidream_config() -> dict[str, Any]:
    """Constructor arguments of ComfyUI's HiDreamImageTransformer2DModel at toy size (2x2 patches of 16 channels,
    the released 4 routed experts with 2 active)."""
    return {"image_model": "hidream", "patch_size": 2, "in_channels": LATENT_CHANNELS, "out_channels": LATENT_CHANNELS,
            "num_routed_experts": 4, "num_activated_experts": 2, "max_resolution": [128, 128], **toy_geometry()}


def diffusion_weights(config: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
    import comfy.ldm.hidream.model
    import comfy.ops

    return initialise_(comfy.ldm.hidream.model.HiDreamImageTransformer2DModel(
        **config, operations=comfy.ops.disable_weight_init), seed).state_dict()


def hidream_clip_target() -> Any:
    """ComfyUI's HiDream text encoder and tokenizer: CLIP-L and CLIP-G pooled, T5-XXL's last state, and every
    Llama layer's states (`conditioning_llama3`), each encoder at toy width."""
    import comfy.supported_models_base
    import comfy.text_encoders.hidream as hidream

    clip = shrunk_text_encoder(hidream.hidream_clip(), clip_l=TINY_CLIP_L, clip_g=TINY_CLIP_G, t5xxl=TINY_T5,
                               llama=TINY_LLAMA)
    return comfy.supported_models_base.ClipTarget(hidream.HiDreamTokenizer, clip)


def tiny_hidream(seed: int = 0) -> ModelBundle:
    """HiDream I1: MoE double/single-stream DiT, four text encoders, Flux's latent space."""
    config = hidream_config()
    vae_config = tiny_vae_config(latent_channels=LATENT_CHANNELS)
    text = {"clip_l": TINY_CLIP_L, "clip_g": TINY_CLIP_G, "t5xxl": TINY_T5, "llama": TINY_LLAMA}
    return cached_dit_bundle(
        "hidream_i1", "tiny-hidream-i1", {"diffusion": config, "text": text, "vae": vae_config, "seed": seed},
        lambda: diffusion_weights(config, seed), hidream_clip_target(), lambda: vae_weights(vae_config, seed + 2),
        lambda unet_sd: detected_with_toy_geometry(unet_sd, "hidream", toy_geometry()),
        lambda vae_sd: assemble_vae(vae_sd, vae_config, latent_channels=LATENT_CHANNELS))


def full_size_hidream_on_meta() -> Any:
    """HiDream I1 (Full, Dev and Fast share it: 16 double and 32 single blocks, 17B weights) on the meta device,
    at the geometry ComfyUI's detection gives it: shapes without weights, for the memory estimate's figures."""
    import comfy.ldm.hidream.model
    import comfy.model_detection
    import comfy.ops

    released = comfy.model_detection.detect_unet_config({"caption_projection.0.linear.weight": None}, "")
    weights = comfy.ldm.hidream.model.HiDreamImageTransformer2DModel(
        **released, device="meta", operations=comfy.ops.disable_weight_init).state_dict()
    model_config = comfy.model_detection.model_config_from_unet(weights, "")
    return model_config.get_model(weights, "", device="meta")
