"""A random-weight Qwen-Image built through ComfyUI's own classes: its MMDiT, the Qwen2.5-VL text encoder with
ComfyUI's prompt template and tokenizer, and the Wan 2.1 VAE (16 channels, latents with a time axis of 1).

ComfyUI's detection reads only the input width and the block count from Qwen-Image weights and fixes the
rest at the 20B model's geometry, so the toy geometry (`TOY_GEOMETRY`) replaces those entries, as the Flux
fixtures do. Qwen2.5-VL is built at toy width without its vision tower: ComfyUI builds that tower at full
size (0.6B weights) whatever the config says, and text prompts never reach it.
"""
from __future__ import annotations

import functools
from typing import Any

import torch

from .models import ModelBundle, cached_dit_bundle, detected_with_toy_geometry, initialise_, random_weights

LATENT_CHANNELS = 16
TINY_QWEN25 = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
               "num_key_value_heads": 1}
TOY_GEOMETRY = {"attention_head_dim": 32, "num_attention_heads": 2, "joint_attention_dim": TINY_QWEN25["hidden_size"],
                "axes_dims_rope": (8, 12, 12)}
TINY_WAN_VAE_WIDTH = 8  # ComfyUI's VAE loader reads the Wan 2.1 VAE's width from its weights


def qwen_image_config(num_layers: int = 2) -> dict[str, Any]:
    """Constructor arguments of ComfyUI's QwenImageTransformer2DModel at toy size (2x2 patches of 16 channels)."""
    return {"image_model": "qwen_image", "patch_size": 2, "in_channels": LATENT_CHANNELS * 4,
            "out_channels": LATENT_CHANNELS, "num_layers": num_layers, **TOY_GEOMETRY}


def diffusion_weights(config: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
    import comfy.ldm.qwen_image.model
    import comfy.ops

    return initialise_(comfy.ldm.qwen_image.model.QwenImageTransformer2DModel(
        **config, operations=comfy.ops.disable_weight_init), seed).state_dict()


@functools.cache
def text_only_qwen25_vl() -> type:
    """ComfyUI's Qwen2.5-VL without its vision tower, which ComfyUI builds at full size whatever the config says
    (text prompts never reach it); Qwen-Image and HunyuanImage 2.1 read the same language model."""
    import comfy.text_encoders.llama as llama

    class TextOnlyQwen25VL(llama.Qwen25_7BVLI):
        def __init__(self, config_dict, dtype, device, operations):
            torch.nn.Module.__init__(self)
            config = llama.Qwen25_7BVLI_Config(**config_dict)
            self.num_layers = config.num_hidden_layers
            self.model = llama.Llama2_(config, device=device, dtype=dtype, ops=operations)
            self.dtype = dtype

    return TextOnlyQwen25VL


def tiny_qwen25_model(base: type, config: dict[str, Any], layer: str = "last", layer_idx: int | None = None) -> type:
    """ComfyUI's Qwen2.5-VL encoder class `base` over the text-only Qwen2.5-VL at `config`'s size, reading the
    hidden states `layer` / `layer_idx` as the family's encoder does."""
    import comfy.sd1_clip

    readout = {"layer": layer, "layer_idx": layer_idx}

    class TinyQwen25Model(base):
        def __init__(self, device="cpu", dtype=None, attention_mask=True, model_options={}, **_):
            comfy.sd1_clip.SDClipModel.__init__(
                self, device=device, **readout, textmodel_json_config={}, dtype=dtype,
                special_tokens={"pad": 151643}, layer_norm_hidden_state=False, model_class=text_only_qwen25_vl(),
                enable_attention_masks=attention_mask, return_attention_masks=attention_mask,
                model_options={**model_options, "qwen25_7b_model_config": config})

    return TinyQwen25Model


def qwen_image_clip_target() -> Any:
    """ComfyUI's Qwen-Image text encoder (template, tokenizer, hidden-state readout) over a toy Qwen2.5-VL."""
    import comfy.sd1_clip
    import comfy.supported_models_base
    import comfy.text_encoders.qwen_image as qwen_image

    class TinyQwenImageTE(qwen_image.QwenImageTEModel):
        def __init__(self, device="cpu", dtype=None, model_options={}):
            comfy.sd1_clip.SD1ClipModel.__init__(self, device=device, dtype=dtype, name="qwen25_7b",
                                                 clip_model=tiny_qwen25_model(qwen_image.Qwen25_7BVLIModel, TINY_QWEN25),
                                                 model_options=model_options)

    return comfy.supported_models_base.ClipTarget(qwen_image.QwenImageTokenizer, TinyQwenImageTE)


def wan21_vae_weights(seed: int) -> dict[str, torch.Tensor]:
    import comfy.ldm.wan.vae

    return random_weights(lambda: comfy.ldm.wan.vae.WanVAE(
        dim=TINY_WAN_VAE_WIDTH, z_dim=LATENT_CHANNELS, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
        temperal_downsample=[False, True, True], dropout=0.0), seed)


def tiny_qwen_image(seed: int = 0) -> ModelBundle:
    """Qwen-Image: a dual-stream MMDiT on 2x2 patches, Qwen2.5-VL hidden states as context, the Wan 2.1 VAE."""
    import comfy.sd

    config = qwen_image_config()
    return cached_dit_bundle(
        "qwen_image", "tiny-qwen-image", {"diffusion": config, "qwen25": TINY_QWEN25, "vae": TINY_WAN_VAE_WIDTH, "seed": seed},
        lambda: diffusion_weights(config, seed), qwen_image_clip_target(), lambda: wan21_vae_weights(seed + 2),
        lambda unet_sd: detected_with_toy_geometry(unet_sd, "qwen_image", TOY_GEOMETRY), lambda vae_sd: comfy.sd.VAE(sd=vae_sd))


def full_size_qwen_image_on_meta() -> Any:
    """Qwen-Image at its released size (60 blocks, 20B weights) on the meta device, detected by ComfyUI with no
    override: shapes without weights, for the memory estimate's figures."""
    import comfy.ldm.qwen_image.model
    import comfy.model_detection
    import comfy.ops

    weights = comfy.ldm.qwen_image.model.QwenImageTransformer2DModel(
        num_layers=60, device="meta", operations=comfy.ops.disable_weight_init).state_dict()
    model_config = comfy.model_detection.model_config_from_unet(weights, "")
    return model_config.get_model(weights, "", device="meta")
