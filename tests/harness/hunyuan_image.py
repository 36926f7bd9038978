"""A random-weight HunyuanImage 2.1 built through ComfyUI's own classes: its HunyuanVideo-style transformer (double-
and single-stream blocks on 1x1 patches of 64-channel latents, no pooled vector, the byT5 glyph mapper), ComfyUI's
HunyuanImage text encoder (Qwen2.5-VL hidden states read three layers from the end, and byT5-small for quoted text)
with its real tokenizers, and a 64-channel VAE at 32x.

ComfyUI's detection reads the widths and block counts from the weights and fixes the heads (128 wide) and rotary
axes (64 + 64) at the 17B's values, so the toy geometry (`TOY_GEOMETRY`) replaces them, as the other DiT fixtures
do. Qwen2.5-VL is built without its vision tower (see `qwen_image.text_only_qwen25_vl`). byT5 keeps its 1472-wide
states (the transformer's byT5 mapper takes 1472 inputs whatever its size) at one layer. ComfyUI's VAE loader
builds HunyuanImage's VAE at its released width whatever the file holds, so the toy VAE is an SD-style
AutoencoderKL with five downsamples (32x) and 64 latent channels, assembled from its config with its scale set.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch

from .models import (
    ModelBundle, assemble_vae, cached_dit_bundle, detected_with_toy_geometry, initialise_, tiny_vae_config, vae_weights,
)
from .qwen_image import tiny_qwen25_model

LATENT_CHANNELS, VAE_SCALE = 64, 32
# Four layers: HunyuanImage reads the hidden states three layers from the end (layer_idx -3, which ComfyUI
# requires to be inside the model).
TINY_QWEN25 = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 2,
               "num_key_value_heads": 1}
TINY_BYT5 = {"d_ff": 32, "d_kv": 16, "num_heads": 2, "num_layers": 1}
TOY_GEOMETRY = {"num_heads": 2, "axes_dim": [16, 16]}


def hunyuan_image_config(hidden_size: int = 64, depth: int = 1, depth_single_blocks: int = 1,
                         context_in_dim: int = TINY_QWEN25["hidden_size"]) -> dict[str, Any]:
    """Constructor arguments of ComfyUI's HunyuanVideo for HunyuanImage 2.1 (its detection's values; the toy's
    widths and block counts unless given)."""
    return {"image_model": "hunyuan_video", "in_channels": LATENT_CHANNELS, "out_channels": LATENT_CHANNELS,
            "vec_in_dim": None, "context_in_dim": context_in_dim, "hidden_size": hidden_size, "mlp_ratio": 4.0,
            "depth": depth, "depth_single_blocks": depth_single_blocks, "theta": 256, "patch_size": [1, 1],
            "qkv_bias": True, "guidance_embed": False, "byt5": True, "meanflow": False, "use_cond_type_embedding": False,
            "vision_in_dim": None, "meanflow_sum": False, **TOY_GEOMETRY}


def hunyuan_module(config: dict[str, Any], device: Any = "cpu") -> torch.nn.Module:
    """ComfyUI's HunyuanVideo transformer, given only the arguments this tree's parameters have (0.3.75 has no
    `meanflow_sum`)."""
    import comfy.ldm.hunyuan_video.model as model
    import comfy.ops

    fields = {field.name for field in dataclasses.fields(model.HunyuanVideoParams)} | {"image_model"}
    return model.HunyuanVideo(**{key: value for key, value in config.items() if key in fields}, device=device,
                              operations=comfy.ops.disable_weight_init)


def hunyuan_image_clip_target() -> Any:
    """ComfyUI's HunyuanImage tokenizer and text encoder (template, Qwen2.5-VL readout, byT5 for quoted text) over
    a toy Qwen2.5-VL and a one-layer byT5."""
    import comfy.sd1_clip
    import comfy.supported_models_base
    import comfy.text_encoders.hunyuan_image as hunyuan_image

    class TinyHunyuanImageTE(hunyuan_image.HunyuanImageTEModel):
        def __init__(self, device="cpu", dtype=None, model_options={}):
            comfy.sd1_clip.SD1ClipModel.__init__(
                self, device=device, dtype=dtype, name="qwen25_7b", model_options=model_options,
                clip_model=tiny_qwen25_model(hunyuan_image.Qwen25_7BVLIModel, TINY_QWEN25, "hidden", -3))
            self.byt5_small = hunyuan_image.ByT5SmallModel(device=device, dtype=dtype, model_options={
                **model_options, "model_name": "byt5_small", "byt5_small_model_config": TINY_BYT5})

    return comfy.supported_models_base.ClipTarget(hunyuan_image.HunyuanImageTokenizer, TinyHunyuanImageTE)


def hunyuan_image_vae_config() -> dict[str, Any]:
    """An SD-style AutoencoderKL with five downsamples (32x) to 64 latent channels."""
    config = tiny_vae_config(latent_channels=LATENT_CHANNELS)
    config["params"]["ddconfig"]["ch_mult"] = [1] * 6
    return config


def hunyuan_image_vae(vae_sd: dict[str, torch.Tensor]) -> Any:
    vae = assemble_vae(vae_sd, hunyuan_image_vae_config(), latent_channels=LATENT_CHANNELS)
    vae.downscale_ratio = vae.upscale_ratio = VAE_SCALE
    return vae


def tiny_hunyuan_image(seed: int = 0) -> ModelBundle:
    """HunyuanImage 2.1: double and single stream blocks on 64-channel 32x latents, Qwen2.5-VL and byT5 context."""
    config = hunyuan_image_config()
    vae_config = hunyuan_image_vae_config()
    return cached_dit_bundle(
        "hunyuan_image_2_1", "tiny-hunyuan-image",
        {"diffusion": config, "qwen25": TINY_QWEN25, "byt5": TINY_BYT5, "vae": vae_config, "seed": seed},
        lambda: initialise_(hunyuan_module(config), seed).state_dict(), hunyuan_image_clip_target(),
        lambda: vae_weights(vae_config, seed + 2),
        lambda unet_sd: detected_with_toy_geometry(unet_sd, "hunyuan_video", TOY_GEOMETRY), hunyuan_image_vae)


def released_on_meta() -> Any:
    """HunyuanImage 2.1 at its released size (3584 wide, 20 double and 40 single blocks, 17B weights) on the meta
    device, detected by ComfyUI with no override: shapes without weights, for the memory estimate's figures."""
    import comfy.model_detection

    config = {**hunyuan_image_config(hidden_size=3584, depth=20, depth_single_blocks=40, context_in_dim=3584),
              "num_heads": 28, "axes_dim": [64, 64]}
    weights = hunyuan_module(config, device="meta").state_dict()
    model_config = comfy.model_detection.model_config_from_unet(weights, "")
    return model_config.get_model(weights, "", device="meta")
