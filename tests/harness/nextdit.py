"""Random-weight NextDiT models built through ComfyUI's own classes: Lumina 2 (with ComfyUI's Gemma 2 text encoder)
and Z-Image (Lumina 2's architecture with Z-Image's modulation, ComfyUI's Qwen3-4B encoder), at toy width, with a
16-channel 8x VAE as Flux's.

ComfyUI's detection reads the width, the caption width and the layer count from the weights and fixes heads and
rotary geometry for the released widths only; each toy geometry sets them. ComfyUI tells Z-Image from Lumina 2 by
its 3840 width, so the toy Z-Image's model config is ComfyUI's `ZImage` class built from the detected config.
Gemma's tokenizer is a SentencePiece model that ComfyUI reads from the text encoder's file (`spiece_model`); the
toy's is trained here on a small English vocabulary, so ComfyUI's own tokenizer class runs on it.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from .datasets import COLOURS, SHAPES
from .models import (
    ModelBundle, assemble_vae, cached_dit_bundle, detected_with_toy_geometry, initialise_, shrunk_text_encoder,
    tiny_vae_config, vae_weights,
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


TINY_GEMMA2 = {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
               "num_attention_heads": 2, "num_key_value_heads": 1}  # Gemma 2's heads stay 256 wide in ComfyUI
TOY_LUMINA2_GEOMETRY = {"n_heads": 2, "n_kv_heads": 1, "axes_dims": [8, 12, 12], "axes_lens": [300, 512, 512],
                        "rope_theta": 10000.0, "ffn_dim_multiplier": 4.0}


def lumina2_config(n_layers: int = 2) -> dict[str, Any]:
    """NextDiT's arguments for a toy Lumina 2: 64 wide, 2x2 patches of 16 channels, Gemma 2 features as captions."""
    return {"image_model": "lumina2", "patch_size": 2, "in_channels": LATENT_CHANNELS, "dim": 64,
            "cap_feat_dim": TINY_GEMMA2["hidden_size"], "n_layers": n_layers, "qk_norm": True, **TOY_LUMINA2_GEOMETRY}


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


def toy_gemma_tokenizer() -> torch.Tensor:
    """A SentencePiece model with Gemma's special ids (pad 0, eos 1, bos 2, unk 3), as the uint8 tensor ComfyUI keeps
    in a Gemma text encoder's file."""
    import io

    import sentencepiece

    words = [*COLOURS, *SHAPES, "a", "an", "the", "on", "of", "with", "photo", "background", "sks", "ohwx", "zqx"]
    corpus = [" ".join(words[index:] + words[:index]) for index in range(len(words))]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=model, vocab_size=TINY_GEMMA2["vocab_size"] // 4,
        model_type="bpe", pad_id=0, eos_id=1, bos_id=2, unk_id=3, num_threads=1, minloglevel=2,
        hard_vocab_limit=False)
    return torch.frombuffer(bytearray(model.getvalue()), dtype=torch.uint8)


def lumina2_clip_target() -> Any:
    import comfy.supported_models_base
    import comfy.text_encoders.lumina2 as lumina2

    return comfy.supported_models_base.ClipTarget(lumina2.LuminaTokenizer,
                                                  shrunk_text_encoder(lumina2.te(), gemma2_2b=TINY_GEMMA2))


def nextdit_bundle(family: str, config: dict[str, Any], clip_target: Any, text_config: dict[str, Any],
                   model_config: Callable[[dict[str, torch.Tensor]], Any], seed: int,
                   tokenizer: Callable[[], dict[str, torch.Tensor]] = dict) -> ModelBundle:
    """A NextDiT family's toy: its diffusion model, text encoder (and the tokenizer model its file carries), and
    Flux's 16-channel latent space."""
    vae_config = tiny_vae_config(latent_channels=LATENT_CHANNELS)
    return cached_dit_bundle(
        family, f"tiny-{family}", {"diffusion": config, "text": text_config, "vae": vae_config, "seed": seed},
        lambda: diffusion_weights(config, seed), clip_target, lambda: vae_weights(vae_config, seed + 2), model_config,
        lambda vae_sd: assemble_vae(vae_sd, vae_config, latent_channels=LATENT_CHANNELS), tokenizer)


def tiny_lumina2(seed: int = 0) -> ModelBundle:
    """Lumina 2: NextDiT with refiner layers, Gemma 2 hidden states as captions, Flux's latent space."""
    return nextdit_bundle("lumina2", lumina2_config(), lumina2_clip_target(), TINY_GEMMA2,
                          lambda unet_sd: detected_with_toy_geometry(unet_sd, "lumina2", TOY_LUMINA2_GEOMETRY), seed,
                          lambda: {"spiece_model": toy_gemma_tokenizer()})


def tiny_z_image(seed: int = 0) -> ModelBundle:
    """Z-Image: single-stream NextDiT with refiner layers, Qwen3 hidden states as captions, Flux's latent space."""
    return nextdit_bundle("z_image", z_image_config(), z_image_clip_target(), TINY_QWEN3, z_image_model_config, seed)


# The released models' arguments (their detection fixes the rest): Lumina-Image 2.0 (2.6B) and Z-Image (6B).
RELEASED = {
    "lumina2": {"image_model": "lumina2", "patch_size": 2, "in_channels": LATENT_CHANNELS, "dim": 2304,
                "cap_feat_dim": 2304, "n_layers": 26, "qk_norm": True, "n_heads": 24, "n_kv_heads": 8,
                "axes_dims": [32, 32, 32], "axes_lens": [300, 512, 512], "ffn_dim_multiplier": 4.0},
    "z_image": {"image_model": "lumina2", "patch_size": 2, "in_channels": LATENT_CHANNELS, "dim": 3840,
                "cap_feat_dim": 2560, "n_layers": 30, "qk_norm": True, "n_heads": 30, "n_kv_heads": 30,
                "axes_dims": [32, 48, 48], "axes_lens": [1536, 512, 512], "rope_theta": 256.0,
                "ffn_dim_multiplier": 8.0 / 3.0, "z_image_modulation": True, "time_scale": 1000.0},
}


def released_on_meta(name: str) -> Any:
    """Lumina 2 or Z-Image at its released size on the meta device, detected by ComfyUI with no override: shapes
    without weights, for the memory estimate's figures."""
    import comfy.ldm.lumina.model
    import comfy.model_detection
    import comfy.ops

    weights = comfy.ldm.lumina.model.NextDiT(**RELEASED[name], device="meta",
                                             operations=comfy.ops.disable_weight_init).state_dict()
    model_config = comfy.model_detection.model_config_from_unet(weights, "")
    return model_config.get_model(weights, "", device="meta")
