"""A random-weight Wan 2.1 text-to-video model built through ComfyUI's own classes: its DiT (`WanModel`), the
UMT5-XXL text encoder with ComfyUI's Wan tokenizer, and the Wan 2.1 VAE (16 channels, latents with a time axis).

ComfyUI's detection reads the width, depth, feed-forward width and input channels from Wan weights and fixes
the heads at 128 channels each and the text width at UMT5-XXL's 4096, so those entries take the toy geometry
(`TOY_GEOMETRY`), as the Flux fixtures do. UMT5's tokenizer comes from the text-encoder file in ComfyUI (its
`spiece_model` entry); the fixture hands the SentencePiece model ComfyUI ships for Pile-T5 instead, with the toy
encoder's vocabulary cut to its 32000 pieces, so no 256k-token embedding is drawn.
"""
from __future__ import annotations

import pathlib
from typing import Any

import torch

from .models import ModelBundle, cached_dit_bundle, detected_with_toy_geometry, initialise_, shrunk_text_encoder
from .qwen_image import LATENT_CHANNELS, TINY_WAN_VAE_WIDTH, wan21_vae_weights

PILE_T5_PIECES = 32000  # comfy/text_encoders/t5_pile_tokenizer/tokenizer.model
TINY_UMT5 = {"d_model": 32, "d_ff": 64, "d_kv": 16, "num_heads": 2, "num_layers": 2, "vocab_size": PILE_T5_PIECES}
TOY_GEOMETRY = {"num_heads": 2, "text_dim": TINY_UMT5["d_model"]}  # 32-channel heads: rotary dims 12 + 10 + 10
TOY_DIM = 64


def wan21_t2v_config(num_layers: int = 2) -> dict[str, Any]:
    """Constructor arguments of ComfyUI's WanModel for a toy Wan 2.1 text-to-video DiT (1x2x2 patches)."""
    return {"model_type": "t2v", "patch_size": (1, 2, 2), "in_dim": LATENT_CHANNELS, "out_dim": LATENT_CHANNELS,
            "dim": TOY_DIM, "ffn_dim": TOY_DIM * 2, "freq_dim": 256, "num_layers": num_layers, **TOY_GEOMETRY}


def diffusion_weights(config: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
    import comfy.ldm.wan.model
    import comfy.ops

    return initialise_(comfy.ldm.wan.model.WanModel(**config, operations=comfy.ops.disable_weight_init),
                       seed).state_dict()


def pile_t5_spiece_model() -> bytes:
    import comfy.text_encoders.wan

    return (pathlib.Path(comfy.text_encoders.wan.__file__).parent / "t5_pile_tokenizer" / "tokenizer.model").read_bytes()


def wan_clip_target() -> Any:
    """ComfyUI's Wan text encoder (UMT5-XXL, last hidden state, padded to 512 tokens, masked tokens zeroed) at toy
    width, with a tokenizer that holds its SentencePiece model as a loaded UMT5 file's would."""
    import comfy.supported_models_base
    import comfy.text_encoders.wan as wan

    class FixtureWanTokenizer(wan.WanT5Tokenizer):
        def __init__(self, embedding_directory=None, tokenizer_data={}):
            super().__init__(embedding_directory=embedding_directory,
                             tokenizer_data={"spiece_model": pile_t5_spiece_model(), **tokenizer_data})

    clip = shrunk_text_encoder(wan.te(), umt5xxl=TINY_UMT5)
    return comfy.supported_models_base.ClipTarget(FixtureWanTokenizer, clip)


def tiny_wan21_t2v(seed: int = 0) -> ModelBundle:
    """Wan 2.1 T2V: a DiT over 1x2x2 patches of video latents, UMT5 hidden states as context, the Wan 2.1 VAE."""
    import comfy.sd

    config = wan21_t2v_config()
    return cached_dit_bundle(
        "wan", "tiny-wan21-t2v", {"diffusion": config, "umt5": TINY_UMT5, "vae": TINY_WAN_VAE_WIDTH, "seed": seed},
        lambda: diffusion_weights(config, seed), wan_clip_target(), lambda: wan21_vae_weights(seed + 2),
        lambda unet_sd: detected_with_toy_geometry(unet_sd, "wan2.1", TOY_GEOMETRY), lambda vae_sd: comfy.sd.VAE(sd=vae_sd))


def full_size_wan21_14b_on_meta() -> Any:
    """Wan 2.1 T2V 14B at its released size (40 blocks of width 5120) on the meta device, detected by ComfyUI
    with no override: shapes without weights, for the memory estimate's figures."""
    import comfy.ldm.wan.model
    import comfy.model_detection
    import comfy.ops

    weights = comfy.ldm.wan.model.WanModel(
        model_type="t2v", dim=5120, ffn_dim=13824, num_heads=40, num_layers=40, device="meta",
        operations=comfy.ops.disable_weight_init).state_dict()
    model_config = comfy.model_detection.model_config_from_unet(weights, "")
    return model_config.get_model(weights, "", device="meta")
