"""What tells the built-in demo models apart, so one loader and one pretraining script serve them all."""
from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class DemoModelKind:
    """One demo model: its weights file, and how ComfyUI's classes are built for it at toy size."""

    name: str  # the Load Demo Model choice
    format: str  # the weights file's metadata "format"
    weights_path: pathlib.Path
    model_config: Callable[[dict[str, str] | None], Any]  # ComfyUI model config; with file metadata, its latent format
    clip_target: Callable[[], Any]  # ComfyUI ClipTarget: tokenizer and text-encoder class at toy width
    vae_config: dict[str, Any]  # AutoencoderKL params, as comfy.sd.VAE(config=...) takes them
    latent_channels: int
    downscale: int = 4  # pixels per latent cell: two VAE downsamples, where SD and Flux VAEs have three

    @property
    def rebuild_hint(self) -> str:
        return f"rebuild it with `python scripts/pretrain_toy_world.py --model {self.name}` or restore it from the repository"


def with_latent_statistics(config: Any, metadata: dict[str, str] | None) -> Any:
    """A model config whose latent format has the scale (and shift), and the preview factors, fitted at pretraining."""
    if metadata is not None:
        latent_format = config.latent_format
        latent_format.scale_factor = float(metadata["latent_scale"])
        if "latent_shift" in metadata:
            latent_format.shift_factor = float(metadata["latent_shift"])
        latent_format.latent_rgb_factors = json.loads(metadata["latent_rgb_factors"])
        latent_format.latent_rgb_factors_bias = json.loads(metadata["latent_rgb_factors_bias"])
    return config
