"""Loading the built-in demo models from their shipped weights, as a checkpoint loader would.

Each weights file holds MODEL, CLIP and VAE under a checkpoint's prefixes and names its kind in its metadata
(`format`), so a file is always built with the classes it was pretrained with.
"""
from __future__ import annotations

import inspect
import pathlib
from dataclasses import dataclass
from typing import Any

import comfy.model_management as mm
import comfy.model_patcher
import comfy.sd
import comfy.utils
import torch

from ..errors import SettingsError
from . import flow_model, model
from .kind import DemoModelKind

DEMO_MODELS: dict[str, DemoModelKind] = {kind.name: kind for kind in (model.KIND, flow_model.KIND)}
UNET_PREFIX = "model.diffusion_model."
CLIP_PREFIX = "cond_stage_model."
VAE_PREFIX = "first_stage_model."


@dataclass
class DemoModels:
    """MODEL, CLIP and VAE as a checkpoint loader returns them."""

    model: Any
    clip: Any
    vae: Any


def demo_kind(name: str) -> DemoModelKind:
    if name not in DEMO_MODELS:
        raise SettingsError(f"Load Demo Model: model must be one of {', '.join(DEMO_MODELS)}; got {name!r}.")
    return DEMO_MODELS[name]


def read_weights(path: pathlib.Path) -> tuple[DemoModelKind, dict[str, torch.Tensor], dict[str, str]]:
    kinds = {kind.format: kind for kind in DEMO_MODELS.values()}
    if not path.is_file():
        expected = next((kind for kind in DEMO_MODELS.values() if kind.weights_path == path), model.KIND)
        raise SettingsError(f"The demo-model weights {path} are missing; {expected.rebuild_hint}.")
    sd, metadata = comfy.utils.load_torch_file(str(path), return_metadata=True)
    kind = kinds.get((metadata or {}).get("format"))
    if kind is None:
        raise SettingsError(f"{path} is not a demo-model weights file (its metadata names none of the formats "
                            f"{', '.join(kinds)}); rebuild it with scripts/pretrain_toy_world.py.")
    return kind, sd, metadata


def load_demo_model(path: pathlib.Path, embedding_directory: Any = None) -> DemoModels:
    kind, sd, metadata = read_weights(path)
    return DemoModels(model=_model_patcher(kind, sd, metadata, path), clip=_clip(kind, sd, embedding_directory),
                      vae=as_comfy_vae(kind, comfy.utils.state_dict_prefix_replace(sd, {VAE_PREFIX: ""}, filter_keys=True)))


def load_demo_diffusion_model(path: str, disable_dynamic: bool = False) -> Any:
    """The MODEL alone; ComfyUI >= 0.12 calls this (as `cached_patcher_init`) when it needs a fresh copy."""
    kind, sd, metadata = read_weights(pathlib.Path(path))
    return _model_patcher(kind, sd, metadata, pathlib.Path(path), disable_dynamic=disable_dynamic)


def as_comfy_vae(kind: DemoModelKind, vae_sd: dict[str, torch.Tensor]) -> comfy.sd.VAE:
    """ComfyUI's VAE wrapper over the toy AutoencoderKL, told its scale (it assumes 8x) and channels (it assumes 4)."""
    vae = comfy.sd.VAE(sd=vae_sd, config=kind.vae_config)
    vae.downscale_ratio = vae.upscale_ratio = kind.downscale
    vae.latent_channels = kind.latent_channels
    return vae


def new_vae_module(kind: DemoModelKind) -> torch.nn.Module:
    import comfy.ldm.models.autoencoder

    return comfy.ldm.models.autoencoder.AutoencoderKL(**kind.vae_config["params"])


def _model_patcher(kind: DemoModelKind, sd: dict[str, torch.Tensor], metadata: dict[str, str], path: pathlib.Path,
                   disable_dynamic: bool = False) -> Any:
    """MODEL as `comfy.sd.load_state_dict_guess_config` builds one, from the known config instead of detection."""
    config = kind.model_config(metadata)
    parameters = comfy.utils.calculate_parameters(sd, UNET_PREFIX)
    load_device = mm.get_torch_device()
    unet_dtype = mm.unet_dtype(model_params=parameters, supported_dtypes=config.supported_inference_dtypes)
    config.set_inference_dtype(unet_dtype, mm.unet_manual_cast(unet_dtype, load_device, config.supported_inference_dtypes))
    base_model = config.get_model(sd, UNET_PREFIX, device=mm.unet_inital_load_device(parameters, unet_dtype))
    patcher_class = comfy.model_patcher.ModelPatcher
    if not disable_dynamic:
        patcher_class = getattr(comfy.model_patcher, "CoreModelPatcher", patcher_class)
    patcher = patcher_class(base_model, load_device=load_device, offload_device=mm.unet_offload_device())
    if "assign" in inspect.signature(base_model.load_model_weights).parameters:
        base_model.load_model_weights(sd, UNET_PREFIX, assign=patcher.is_dynamic())
    else:
        base_model.load_model_weights(sd, UNET_PREFIX)
    patcher.cached_patcher_init = (load_demo_diffusion_model, (str(path),))
    return patcher


def _clip(kind: DemoModelKind, sd: dict[str, torch.Tensor], embedding_directory: Any) -> comfy.sd.CLIP:
    clip_sd = comfy.utils.state_dict_prefix_replace(sd, {CLIP_PREFIX: ""}, filter_keys=True)
    clip = comfy.sd.CLIP(target=kind.clip_target(), embedding_directory=embedding_directory,
                         parameters=comfy.utils.calculate_parameters(clip_sd))
    missing, _ = clip.load_sd(clip_sd, full_model=True)
    if missing:
        raise SettingsError(f"The demo-model weights lack text-encoder tensors ({missing[:3]}...); {kind.rebuild_hint}.")
    return clip
