"""Random-weight models at real sizes, built through ComfyUI's own classes, for the training benchmark and
the GPU check kit.

The UNets have the real SD1.5 / SDXL architectures, the Flux transformer Flux.1 dev's; the text encoders are small (real tokenizer and
vocabulary, a few layers) but as wide as the real ones, so the conditioning has the real shape. The VAE is
the harness's small 8x one: training never runs it after the latents are encoded. Weights are drawn from a
seeded generator, so every benchmark process builds exactly the same model.

`build` assembles the UNet in memory; `load` writes it once as a safetensors file and loads it with ComfyUI's
Load Diffusion Model node, as a user's model arrives (detected from its weights, memory-mapped, and on
current ComfyUI managed by dynamic VRAM).
"""
from __future__ import annotations

import pathlib
from typing import Any, Callable

from harness import flow_models, models, runtime

SEED = 0

FULL_SD15_UNET = dict(
    model_channels=320, channel_mult=[1, 2, 4, 4], num_res_blocks=[2, 2, 2, 2], transformer_depth=[1, 1, 1, 0],
    middle_depth=1, context_dim=768, use_linear_in_transformer=False, num_heads=8,
)
SDXL_CLIP_L = models.tiny_encoder_overrides(hidden_size=768)
SDXL_CLIP_G = models.tiny_encoder_overrides(hidden_size=1280)  # projection 1280: pooled output as in SDXL
FULL_SDXL_UNET = dict(
    model_channels=320, channel_mult=[1, 2, 4], num_res_blocks=[2, 2, 2], transformer_depth=[0, 2, 10],
    context_dim=768 + 1280, use_linear_in_transformer=True, num_head_channels=64,
    adm_in_channels=1280 + models.SDXL_SIZE_EMBEDDINGS,
)


# The smallest UNet ComfyUI's loader detects as SD1.5 from its weights alone (SD1.5's width and context, one level).
MIN_SD15_UNET = dict(
    model_channels=320, channel_mult=[1], num_res_blocks=[1], transformer_depth=[1], context_dim=768,
    use_linear_in_transformer=False, num_heads=8,
)

UNETS: dict[str, tuple[str, dict[str, Any]]] = {  # model name -> (ComfyUI model config class, UNet config)
    "tiny": ("SD15", models.TINY_SD15_UNET),  # the test suite's SD1.5-architecture toy
    "min": ("SD15", MIN_SD15_UNET),  # 26M parameters, for the GPU kit's smoke run through Load Diffusion Model
    "full": ("SD15", FULL_SD15_UNET),  # the full SD1.5 UNet (860M parameters)
    "sdxl": ("SDXL", FULL_SDXL_UNET),  # the full SDXL UNet (2.6B parameters)
}


def load_unet(name: str, seed: int, disable_dynamic: bool = False) -> Any:
    """MODEL as a checkpoint loader makes it: ComfyUI picks the weight dtype for the device, weights random.

    Built empty on the CPU and initialised in place, so a 2.6B-parameter SDXL UNet never exists twice.
    Like ComfyUI 0.33's loaders it records how to build itself again (`cached_patcher_init`): 0.33's core
    TrainLoraNode rebuilds the model through it for its private copy (0.3.75 ignores the attribute). ComfyUI
    passes `disable_dynamic`; these patchers are never dynamic.
    """
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    import torch

    config_class, unet = UNETS[name]
    model_config = getattr(comfy.supported_models, config_class)(models.unet_config(**unet))
    load_device = mm.get_torch_device()
    supported = model_config.supported_inference_dtypes
    dtype = mm.unet_dtype(supported_dtypes=supported)
    model_config.set_inference_dtype(dtype, mm.unet_manual_cast(dtype, load_device, supported))
    model = model_config.get_model({}, "model.diffusion_model.", device=torch.device("cpu"))
    models.initialise_(model.diffusion_model, seed)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=mm.unet_offload_device())
    patcher.cached_patcher_init = (load_unet, (name, seed))
    return patcher


def small_vae(seed: int, latent_channels: int = 4) -> Any:
    config = models.tiny_vae_config(latent_channels)
    return models.assemble_vae(models.vae_weights(config, seed), config, latent_channels=latent_channels)


def sd15_clip(width: int) -> Callable[[int], Any]:
    def build(seed: int) -> Any:
        target = models.sd15_clip_target(models.tiny_clip_config(hidden_size=width))
        return models.assemble_clip(target, models.text_encoder_weights(target, seed))

    return build


def sdxl_clip(seed: int) -> Any:
    import comfy.sdxl_clip
    import comfy.supported_models_base

    encoder = models.shrunk_text_encoder(comfy.sdxl_clip.SDXLClipModel, clip_l=SDXL_CLIP_L, clip_g=SDXL_CLIP_G)
    target = comfy.supported_models_base.ClipTarget(comfy.sdxl_clip.SDXLTokenizer, encoder)
    return models.assemble_clip(target, models.text_encoder_weights(target, seed))


CLIPS: dict[str, Callable[[int], Any]] = {"tiny": sd15_clip(32), "min": sd15_clip(768), "full": sd15_clip(768), "sdxl": sdxl_clip,
                                          "flux": flow_models.full_width_flux_clip}
FAMILIES = {"tiny": "sd15", "min": "sd15", "full": "sd15", "sdxl": "sdxl", "flux": "flux_dev"}
LATENT_CHANNELS = {"flux": 16}  # else 4


def build(name: str) -> models.ModelBundle:
    return models.ModelBundle(family=FAMILIES[name], model=load_unet(name, SEED), clip=CLIPS[name](SEED + 1),
                              vae=small_vae(SEED + 2))


def unet_file(name: str, device: str = "cpu") -> pathlib.Path:
    """The UNet of `name` as a diffusion-model file (fp16, as released checkpoints are; Flux in fp8, as its
    fp8 releases are: 11.9 GB), cached.

    Random values are drawn on `device`, so each device type caches its own file.
    """
    import comfy.ldm.modules.diffusionmodules.openaimodel as openaimodel
    import comfy.ops
    import torch

    if name == "flux":
        return flow_models.full_width_flux_file(device)
    config = models.unet_config(**UNETS[name][1])

    def make() -> dict[str, Any]:
        unet = openaimodel.UNetModel(**config, dtype=torch.float16, device="cpu", operations=comfy.ops.disable_weight_init)
        return models.initialise_(unet, SEED, device).state_dict()

    return models.cached_file(f"{name}-unet", {"unet": config, "seed": SEED, "device": device, "dtype": "fp16"}, make)


def load(name: str, weight_dtype: str = "default", device: str = "cpu") -> models.ModelBundle:
    """`name`'s UNet loaded from its file by Load Diffusion Model (UNETLoader) with its `weight_dtype` option
    ("default", "fp8_e4m3fn", ...), with the benchmark's text encoder and VAE."""
    import folder_paths

    path = unet_file(name, device)
    folder_paths.add_model_folder_path("diffusion_models", str(path.parent))
    model = runtime.run_node("UNETLoader", unet_name=path.name, weight_dtype=weight_dtype)[0]
    return models.ModelBundle(family=FAMILIES[name], model=model, clip=CLIPS[name](SEED + 1),
                              vae=small_vae(SEED + 2, LATENT_CHANNELS.get(name, 4)))
