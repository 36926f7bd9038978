"""Random-weight Stable Diffusion models built through ComfyUI's own classes, cached on disk.

Tiny configurations keep unit tests fast; `detectable_sd15_checkpoint` writes a file that ComfyUI's
CheckpointLoaderSimple recognises as SD1.5 by itself, for end-to-end runs through a real server.
Weights are drawn from a seeded generator, so every run and every machine gets the same model.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import pathlib
from dataclasses import dataclass
from typing import Any, Callable

import torch

FIXTURE_VERSION = 1  # bump when a builder changes, so caches rebuild


def cache_dir() -> pathlib.Path:
    root = pathlib.Path(os.environ.get("LORALAB_HOME", pathlib.Path.home() / ".cache" / "comfyui-lora-lab"))
    path = root / "fixtures"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class ModelBundle:
    """What a checkpoint loader hands the graph: MODEL (a ModelPatcher), CLIP and VAE."""

    family: str
    model: Any
    clip: Any
    vae: Any


def initialise_(module: torch.nn.Module, seed: int, device: str = "cpu") -> torch.nn.Module:
    """Give every parameter a sane value: ComfyUI's layers skip `reset_parameters`, leaving garbage.

    Values are drawn on `device` ("cuda" draws a 2.6B-parameter UNet in seconds); each device's generator
    gives its own, repeatable, values for a seed.
    """
    generator = torch.Generator(device).manual_seed(seed)
    with torch.no_grad():
        for name, parameter in sorted(module.named_parameters(), key=lambda item: item[0]):
            if parameter.ndim >= 2:
                values = torch.randn(parameter.shape, generator=generator, device=device) * 0.02
            elif name.endswith("weight") or name.endswith("gamma"):
                values = torch.ones(parameter.shape)
            else:
                values = torch.zeros(parameter.shape)
            parameter.copy_(values.to(parameter.dtype))
    return module


def unet_config(
    *,
    model_channels: int,
    channel_mult: list[int],
    num_res_blocks: list[int],
    transformer_depth: list[int],
    context_dim: int,
    use_linear_in_transformer: bool,
    num_heads: int = -1,
    num_head_channels: int = -1,
    adm_in_channels: int | None = None,
    middle_depth: int | None = None,
) -> dict[str, Any]:
    """A UNet config in the per-block form ComfyUI's model detection produces from a checkpoint."""
    depth_in = [depth for depth, blocks in zip(transformer_depth, num_res_blocks) for _ in range(blocks)]
    # UNetModel pops output-block depths from the end, so the list runs shallowest level first, as detection gives it.
    depth_out = [depth for depth, blocks in zip(transformer_depth, num_res_blocks) for _ in range(blocks + 1)]
    if middle_depth is None:
        middle_depth = transformer_depth[-1] if transformer_depth[-1] > 0 else -1
    config = {
        "use_checkpoint": False, "image_size": 32, "in_channels": 4, "out_channels": 4,
        "model_channels": model_channels, "num_res_blocks": num_res_blocks, "channel_mult": channel_mult,
        "transformer_depth": depth_in, "transformer_depth_output": depth_out,
        "transformer_depth_middle": middle_depth,
        "use_spatial_transformer": True, "legacy": False, "context_dim": context_dim,
        "use_linear_in_transformer": use_linear_in_transformer, "adm_in_channels": adm_in_channels,
        "use_temporal_resblock": False, "use_temporal_attention": False,
        "num_heads": num_heads, "num_head_channels": num_head_channels,
    }
    if adm_in_channels is not None:
        config["num_classes"] = "sequential"
    return config


def tiny_clip_config(hidden_size: int = 32, layers: int = 2, heads: int = 2, projection_dim: int | None = None) -> dict[str, Any]:
    """A CLIP text-model config with the real 49408-token vocabulary, so the real tokenizer fits."""
    return {
        "architectures": ["CLIPTextModel"], "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0,
        "eos_token_id": 49407, "hidden_act": "quick_gelu", "hidden_size": hidden_size,
        "initializer_factor": 1.0, "initializer_range": 0.02, "intermediate_size": hidden_size * 4,
        "layer_norm_eps": 1e-05, "max_position_embeddings": 77, "model_type": "clip_text_model",
        "num_attention_heads": heads, "num_hidden_layers": layers, "pad_token_id": 1,
        "projection_dim": projection_dim or hidden_size, "torch_dtype": "float32", "vocab_size": 49408,
    }


def tiny_vae_config(latent_channels: int = 4) -> dict[str, Any]:
    """AutoencoderKL with 8x downsampling (three downsamples), as SD VAEs have, at a few channels."""
    ddconfig = {
        "double_z": True, "z_channels": latent_channels, "resolution": 256, "in_channels": 3, "out_ch": 3,
        "ch": 32, "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0,
    }
    return {"params": {"embed_dim": latent_channels, "ddconfig": ddconfig}}


# ---------------------------------------------------------------- assembling ComfyUI objects


def assemble_model(model_config: Any, unet_sd: dict[str, torch.Tensor], model_type: Any = None,
                   weight_dtype: torch.dtype = torch.float32) -> Any:
    """MODEL as `comfy.sd.load_state_dict_guess_config` builds it, but from a known config.

    `weight_dtype` is the storage dtype, chosen as Load Diffusion Model's weight_dtype chooses it
    (`comfy.sd.load_diffusion_model_state_dict` with model_options["dtype"]): ComfyUI picks the compute
    dtype for the load device (`unet_manual_cast`), and layers that store another dtype (fp8, or fp16 on
    CPU) become its manual-cast ops, which upcast each weight per forward.
    """
    import comfy.model_base
    import comfy.model_management as mm
    import comfy.model_patcher

    load_device = mm.get_torch_device()
    manual_cast = mm.unet_manual_cast(weight_dtype, load_device, model_config.supported_inference_dtypes)
    model_config.set_inference_dtype(weight_dtype, manual_cast)
    prefixed = {f"model.diffusion_model.{key}": value for key, value in unet_sd.items()}
    if model_type is None:
        model = model_config.get_model(prefixed, "model.diffusion_model.", device=mm.unet_inital_load_device(0, weight_dtype))
    else:
        model = comfy.model_base.BaseModel(model_config, model_type=model_type)
    model.load_model_weights(prefixed, "model.diffusion_model.")
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=mm.unet_offload_device())


def assemble_clip(clip_target: Any, clip_sd: dict[str, torch.Tensor],
                  tokenizer_data: dict[str, torch.Tensor] | None = None) -> Any:
    """CLIP as ComfyUI's loaders build it; `tokenizer_data` holds a tokenizer model stored in the weights file."""
    import comfy.sd

    clip = comfy.sd.CLIP(target=clip_target, embedding_directory=None, tokenizer_data=tokenizer_data or {})
    missing, _ = clip.load_sd(clip_sd, full_model=True)
    if missing:
        raise RuntimeError(f"fixture CLIP is missing weights: {missing[:5]}")
    return clip


def assemble_vae(vae_sd: dict[str, torch.Tensor], config: dict[str, Any], latent_channels: int) -> Any:
    import comfy.sd

    vae = comfy.sd.VAE(sd=vae_sd, config=config)
    vae.latent_channels = latent_channels
    return vae


def detected_with_toy_geometry(diffusion_sd: dict[str, torch.Tensor], image_model: str, geometry: dict[str, Any]) -> Any:
    """ComfyUI's model config for a toy DiT's weights, detected as Load Diffusion Model detects it, with the
    entries detection fixes at the released model's size (widths, heads) set to the toy's `geometry`."""
    import comfy.model_detection

    unet_config = comfy.model_detection.detect_unet_config(diffusion_sd, "")
    if unet_config is None or unet_config.get("image_model") != image_model:
        raise RuntimeError(f"ComfyUI's model detection did not recognise the toy {image_model} weights: {unet_config}")
    unet_config.update(geometry)
    return comfy.model_detection.model_config_from_unet_config(unet_config, diffusion_sd)


def loaded_completely(model_patcher: Any, diffusion_sd: dict[str, torch.Tensor]) -> Any:
    """The MODEL, once every fixture weight has a place in it and it has no weight the fixture lacks
    (ComfyUI's loader only logs a mismatch)."""
    model = model_patcher.model
    have, given = set(model.diffusion_model.state_dict()), set(model.model_config.process_unet_state_dict(dict(diffusion_sd)))
    if have != given:
        raise RuntimeError(f"toy weights and detected model differ: {sorted(have ^ given)[:5]}")
    return model_patcher


def cached_dit_bundle(family: str, cache_name: str, recipe: dict[str, Any],
                      diffusion_weights: Callable[[], dict[str, torch.Tensor]], clip_target: Any,
                      vae_weights: Callable[[], dict[str, torch.Tensor]], model_config: Callable[[dict[str, torch.Tensor]], Any],
                      vae: Callable[[dict[str, torch.Tensor]], Any],
                      tokenizer: Callable[[], dict[str, torch.Tensor]] = dict) -> ModelBundle:
    """A toy DiT's random weights for its three parts (and the tokenizer model a text encoder's file may carry),
    cached by `recipe` (its seed + 1 seeds the text encoder), assembled as ComfyUI's loaders build them: the model
    config `model_config` gives for the diffusion weights, every weight in place. The tree's version is part of the
    cache key: a newer ComfyUI may give a class weights an older one lacks (0.33's NextDiT `norm_final`)."""
    from .runtime import comfyui_version

    recipe = {**recipe, "comfyui": comfyui_version()}
    sd = cached_state_dict(cache_name, recipe, lambda: prefixed(
        unet=diffusion_weights(), clip=text_encoder_weights(clip_target, recipe["seed"] + 1), vae=vae_weights(),
        tokenizer=tokenizer()))
    unet_sd = split(sd, "unet.")
    return ModelBundle(family=family, model=loaded_completely(assemble_model(model_config(unet_sd), unet_sd), unet_sd),
                       clip=assemble_clip(clip_target, split(sd, "clip."), split(sd, "tokenizer.")),
                       vae=vae(split(sd, "vae.")))


def split(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix):]: value for key, value in sd.items() if key.startswith(prefix)}


def cached_file(name: str, recipe: dict[str, Any], make: Callable[[], dict[str, torch.Tensor]]) -> pathlib.Path:
    """A fixture's weights as a safetensors file in the cache, built and atomically written on first use."""
    import safetensors.torch

    digest = hashlib.sha256(json.dumps([FIXTURE_VERSION, recipe], sort_keys=True, default=str).encode()).hexdigest()[:12]
    path = cache_dir() / f"{name}-{digest}.safetensors"
    if not path.exists():
        state = {key: value.contiguous() for key, value in make().items()}
        partial = path.with_suffix(f".{os.getpid()}.partial")  # (test workers may build one fixture at once)
        safetensors.torch.save_file(state, str(partial))
        os.replace(partial, path)
    return path


def cached_state_dict(name: str, recipe: dict[str, Any], make: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Load a fixture's weights from the cache, building and atomically writing them on first use."""
    import safetensors.torch

    return safetensors.torch.load_file(str(cached_file(name, recipe, make)))


def random_weights(module_factory: Callable[[], torch.nn.Module], seed: int) -> dict[str, torch.Tensor]:
    return initialise_(module_factory(), seed).state_dict()


# ---------------------------------------------------------------- weights of ComfyUI's own modules


def tiny_encoder_overrides(hidden_size: int, layers: int = 3, heads: int = 2) -> dict[str, Any]:
    """Config entries that shrink one of ComfyUI's CLIP text models (vocabulary and tokenizer stay real).

    Three layers, because the penultimate-layer readout (`layer_idx=-2`) needs more than two.
    """
    return {"hidden_size": hidden_size, "intermediate_size": hidden_size * 4, "num_hidden_layers": layers,
            "num_attention_heads": heads, "projection_dim": hidden_size}


def shrunk_text_encoder(clip_class: Callable[..., torch.nn.Module], **overrides: dict[str, Any]) -> Callable[..., torch.nn.Module]:
    """ComfyUI's own text-encoder class, built with `<encoder>_model_config` model options (clip_l=..., clip_g=...).

    `SDClipModel` applies `model_options["clip_g_model_config"]` etc. over its json config, so the real
    SDXL/SD2/SD3 encoder classes, with their layer choices and pooling, build at toy size.
    """
    options = {f"{name}_model_config": config for name, config in overrides.items()}

    def build(device: Any = "cpu", dtype: Any = None, model_options: dict[str, Any] | None = None) -> torch.nn.Module:
        return clip_class(device=device, dtype=dtype, model_options={**(model_options or {}), **options})

    return build


def text_encoder_weights(target: Any, seed: int) -> dict[str, torch.Tensor]:
    return random_weights(lambda: target.clip(device="cpu", dtype=torch.float32), seed)


def vae_weights(vae_config: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
    import comfy.ldm.models.autoencoder

    return random_weights(lambda: comfy.ldm.models.autoencoder.AutoencoderKL(**vae_config["params"]), seed)


def unet_weights(config: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
    import comfy.ldm.modules.diffusionmodules.openaimodel as openaimodel
    import comfy.ops

    return random_weights(lambda: openaimodel.UNetModel(**config, operations=comfy.ops.disable_weight_init), seed)


def prefixed(**parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{key}": value for prefix, part in parts.items() for key, value in part.items()}


def cached_bundle(family: str, cache_name: str, recipe: dict[str, Any], model_config: Any,
                  diffusion_weights: Callable[[], dict[str, torch.Tensor]], clip_target: Any,
                  vae_config: dict[str, Any], model_type: Any = None,
                  weight_dtype: torch.dtype = torch.float32) -> ModelBundle:
    """Random weights for the three parts (cached by `recipe`; its seed + 1 and + 2 seed the text encoder and
    VAE), assembled as a checkpoint loader hands them to the graph."""
    seed = recipe["seed"]
    sd = cached_state_dict(cache_name, recipe, lambda: prefixed(
        unet=diffusion_weights(), clip=text_encoder_weights(clip_target, seed + 1), vae=vae_weights(vae_config, seed + 2)))
    return ModelBundle(
        family=family,
        model=assemble_model(model_config, split(sd, "unet."), model_type=model_type, weight_dtype=weight_dtype),
        clip=assemble_clip(clip_target, split(sd, "clip.")),
        vae=assemble_vae(split(sd, "vae."), vae_config, latent_channels=vae_config["params"]["embed_dim"]),
    )


# ---------------------------------------------------------------- SD1.5 family


def sd15_clip_target(clip_config: dict[str, Any]) -> Any:
    import comfy.sd1_clip
    import comfy.supported_models_base

    clip_model = functools.partial(
        comfy.sd1_clip.SD1ClipModel,
        clip_model=functools.partial(comfy.sd1_clip.SDClipModel, textmodel_json_config=clip_config, return_projected_pooled=False),
    )
    return comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, clip_model)


TINY_SD15_UNET = dict(
    model_channels=32, channel_mult=[1, 2], num_res_blocks=[1, 1], transformer_depth=[1, 1],
    context_dim=32, use_linear_in_transformer=False, num_heads=2,
)


def tiny_sd15(seed: int = 0, weight_dtype: torch.dtype = torch.float32) -> ModelBundle:
    """SD1.5 architecture (eps prediction, one CLIP-L-style encoder, conv proj_in) at toy size.

    `weight_dtype` stores the UNet weights in another dtype, as Load Diffusion Model's weight_dtype does.
    """
    import comfy.supported_models

    config = unet_config(**TINY_SD15_UNET)
    clip_config = tiny_clip_config(hidden_size=32)
    vae_config = tiny_vae_config()
    recipe = {"unet": config, "clip": clip_config, "vae": vae_config, "seed": seed}
    return cached_bundle("sd15", "tiny-sd15", recipe, comfy.supported_models.SD15(config),
                         lambda: unet_weights(config, seed), sd15_clip_target(clip_config), vae_config,
                         weight_dtype=weight_dtype)


def tiny_sd15_fp8(seed: int = 0) -> ModelBundle:
    """The tiny SD1.5 with its UNet stored in float8_e4m3fn, as Load Diffusion Model (weight_dtype
    fp8_e4m3fn) or --fp8_e4m3fn-unet loads it: one byte a weight, upcast per layer to compute."""
    return tiny_sd15(seed, weight_dtype=torch.float8_e4m3fn)


# ---------------------------------------------------------------- a checkpoint ComfyUI detects by itself

DETECTABLE_SD15_UNET = dict(
    model_channels=320, channel_mult=[1, 2, 4], num_res_blocks=[1, 1, 1], transformer_depth=[0, 1, 1],
    context_dim=768, use_linear_in_transformer=False, num_heads=8,
)


def detectable_sd15_checkpoint(seed: int = 0) -> pathlib.Path:
    """A ~1 GB fp16 SD1.5-architecture checkpoint (reduced UNet, full CLIP-L and VAE), cached.

    CheckpointLoaderSimple detects it as SD1.5 from its tensor shapes alone.
    """
    import comfy.ldm.models.autoencoder
    import comfy.ldm.modules.diffusionmodules.openaimodel as openaimodel
    import comfy.ops
    import comfy.sd1_clip
    import safetensors.torch

    config = unet_config(**DETECTABLE_SD15_UNET)
    recipe = {"unet": config, "seed": seed, "clip": "clip-l", "vae": "sd"}
    digest = hashlib.sha256(json.dumps([FIXTURE_VERSION, recipe], sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir() / f"random-sd15-{digest}.safetensors"
    if path.exists():
        return path
    unet = random_weights(lambda: openaimodel.UNetModel(**config, operations=comfy.ops.disable_weight_init), seed)
    clip = random_weights(lambda: comfy.sd1_clip.SDClipModel(device="cpu", dtype=torch.float32), seed + 1)
    ddconfig = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    vae = random_weights(lambda: comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=ddconfig, embed_dim=4), seed + 2)
    state = {f"model.diffusion_model.{k}": v for k, v in unet.items()}
    state.update({f"cond_stage_model.{k}": v for k, v in clip.items() if not k.endswith("logit_scale")})
    state.update({f"first_stage_model.{k}": v for k, v in vae.items()})
    state = {k: v.to(torch.float16).contiguous() for k, v in state.items()}
    partial = path.with_suffix(f".{os.getpid()}.partial")
    safetensors.torch.save_file(state, str(partial))
    os.replace(partial, path)
    return path


# ---------------------------------------------------------------- SD2 family (v-prediction)

TINY_SD2_UNET = dict(
    model_channels=64, channel_mult=[1, 2], num_res_blocks=[1, 1], transformer_depth=[1, 1],
    context_dim=48, use_linear_in_transformer=True, num_head_channels=64,
)
TINY_CLIP_H = tiny_encoder_overrides(hidden_size=48)


def sd2_clip_target() -> Any:
    import comfy.supported_models_base
    import comfy.text_encoders.sd2_clip as sd2_clip

    clip = shrunk_text_encoder(sd2_clip.SD2ClipModel, clip_h=TINY_CLIP_H)
    return comfy.supported_models_base.ClipTarget(sd2_clip.SD2Tokenizer, clip)


def tiny_sd2v(seed: int = 0) -> ModelBundle:
    """SD2.x-768-v architecture: v-prediction, OpenCLIP-H-style encoder read at the penultimate layer, linear proj_in."""
    import comfy.model_base
    import comfy.supported_models

    config = unet_config(**TINY_SD2_UNET)
    vae_config = tiny_vae_config()
    recipe = {"unet": config, "clip_h": TINY_CLIP_H, "vae": vae_config, "seed": seed}
    return cached_bundle("sd2_v", "tiny-sd2v", recipe, comfy.supported_models.SD20(config),
                         lambda: unet_weights(config, seed), sd2_clip_target(), vae_config,
                         model_type=comfy.model_base.ModelType.V_PREDICTION)


# ---------------------------------------------------------------- SDXL family

TINY_SDXL_CLIP_L = tiny_encoder_overrides(hidden_size=32)
TINY_SDXL_CLIP_G = tiny_encoder_overrides(hidden_size=64)
SDXL_SIZE_EMBEDDINGS = 6 * 256  # height, width, crop_h, crop_w, target_height, target_width, 256 each
TINY_SDXL_UNET = dict(
    model_channels=64, channel_mult=[1, 2], num_res_blocks=[1, 1], transformer_depth=[0, 1],
    context_dim=TINY_SDXL_CLIP_L["hidden_size"] + TINY_SDXL_CLIP_G["hidden_size"], use_linear_in_transformer=True,
    num_head_channels=64, adm_in_channels=TINY_SDXL_CLIP_G["projection_dim"] + SDXL_SIZE_EMBEDDINGS,
)


def sdxl_clip_target() -> Any:
    import comfy.sdxl_clip
    import comfy.supported_models_base

    clip = shrunk_text_encoder(comfy.sdxl_clip.SDXLClipModel, clip_l=TINY_SDXL_CLIP_L, clip_g=TINY_SDXL_CLIP_G)
    return comfy.supported_models_base.ClipTarget(comfy.sdxl_clip.SDXLTokenizer, clip)


def tiny_sdxl(seed: int = 0, weight_dtype: torch.dtype = torch.float32) -> ModelBundle:
    """SDXL architecture: clip_l + clip_g (concatenated context, pooled clip_g plus size embeddings as ADM).

    `weight_dtype` stores the UNet weights in another dtype, as Load Diffusion Model's weight_dtype does.
    """
    import comfy.supported_models

    config = unet_config(**TINY_SDXL_UNET)
    vae_config = tiny_vae_config()
    recipe = {"unet": config, "clip_l": TINY_SDXL_CLIP_L, "clip_g": TINY_SDXL_CLIP_G, "vae": vae_config, "seed": seed}
    return cached_bundle("sdxl", "tiny-sdxl", recipe, comfy.supported_models.SDXL(config),
                         lambda: unet_weights(config, seed), sdxl_clip_target(), vae_config, weight_dtype=weight_dtype)


# ---------------------------------------------------------------- SD3 family (flow matching, MMDiT)

TINY_SD3_CLIP_L = tiny_encoder_overrides(hidden_size=32)
TINY_SD3_CLIP_G = tiny_encoder_overrides(hidden_size=64)
SD3_CONTEXT_WIDTH = 4096  # SD3ClipModel pads clip_l+clip_g features to T5-XXL's width
SD3_LATENT_CHANNELS = 16
TINY_SD3_POS_EMBED = 16  # patches per side: latents up to 32x32 at patch size 2


def tiny_sd3_mmdit_config(depth: int = 2) -> dict[str, Any]:
    """An MMDiT config in the form ComfyUI's model detection produces (hidden size is 64 * depth)."""
    return {
        "in_channels": SD3_LATENT_CHANNELS, "out_channels": SD3_LATENT_CHANNELS, "patch_size": 2, "depth": depth,
        "input_size": None, "pos_embed_scaling_factor": None, "x_block_self_attn_layers": [],
        "adm_in_channels": TINY_SD3_CLIP_L["hidden_size"] + TINY_SD3_CLIP_G["projection_dim"],
        "context_embedder_config": {"target": "torch.nn.Linear",
                                    "params": {"in_features": SD3_CONTEXT_WIDTH, "out_features": 64 * depth}},
        "num_patches": TINY_SD3_POS_EMBED ** 2, "pos_embed_max_size": TINY_SD3_POS_EMBED,
    }


def sd3_clip_target() -> Any:
    import comfy.supported_models_base
    import comfy.text_encoders.sd3_clip as sd3_clip

    clip = shrunk_text_encoder(sd3_clip.sd3_clip(clip_l=True, clip_g=True, t5=False),
                               clip_l=TINY_SD3_CLIP_L, clip_g=TINY_SD3_CLIP_G)
    return comfy.supported_models_base.ClipTarget(sd3_clip.SD3Tokenizer, clip)


def mmdit_weights(config: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
    """Random MMDiT weights; the positional table is a buffer, so it gets ComfyUI's fixed sin-cos values."""
    import comfy.ldm.modules.diffusionmodules.mmdit as mmdit
    import comfy.ops

    model = initialise_(mmdit.MMDiT(**config, operations=comfy.ops.disable_weight_init), seed)
    side = config["pos_embed_max_size"]
    with torch.no_grad():
        model.pos_embed.copy_(mmdit.get_2d_sincos_pos_embed_torch(model.hidden_size, side, side).unsqueeze(0))
    return model.state_dict()


def tiny_sd3(seed: int = 0) -> ModelBundle:
    """SD3 architecture: MMDiT, rectified-flow sampling, 16-channel latents, clip_l + clip_g (no T5)."""
    import comfy.supported_models

    config = tiny_sd3_mmdit_config()
    vae_config = tiny_vae_config(latent_channels=SD3_LATENT_CHANNELS)
    recipe = {"mmdit": config, "clip_l": TINY_SD3_CLIP_L, "clip_g": TINY_SD3_CLIP_G, "vae": vae_config, "seed": seed}
    return cached_bundle("sd3", "tiny-sd3", recipe, comfy.supported_models.SD3(config),
                         lambda: mmdit_weights(config, seed), sd3_clip_target(), vae_config)


FAMILIES: dict[str, Callable[..., ModelBundle]] = {"sd15": tiny_sd15, "sd2v": tiny_sd2v, "sdxl": tiny_sdxl, "sd3": tiny_sd3}
