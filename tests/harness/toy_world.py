"""Sampling the toy-world model through ComfyUI's real nodes, and reading what the images show."""
from __future__ import annotations

from typing import Any

import numpy as np

from harness import image_metrics, runtime

SAMPLES = 16  # one batch of 16 noises from a fixed seed
SAMPLING = dict(seed=0, steps=20, cfg=5.0, sampler_name="euler", scheduler="normal")


def sampling_for(model: Any) -> dict[str, Any]:
    """How a user samples the connected demo model: toy_world at SAMPLING's cfg 5; a Flux-type model at the
    family table's cfg and FluxGuidance."""
    family = runtime.pack("trainer.models.families").detect_family(model)
    return {} if family.sample_guidance is None else {"cfg": family.sample_cfg, "guidance": family.sample_guidance}


def generate(model: Any, clip: Any, vae: Any, prompt: str, count: int = SAMPLES, negative: str = "",
             guidance: float | None = None, **sampling: Any) -> list[np.ndarray]:
    """CLIPTextEncode (-> FluxGuidance) -> KSampler -> VAEDecode at 32x32, as a user's graph runs them; uint8 images."""
    positive = runtime.run_node("CLIPTextEncode", clip=clip, text=prompt)[0]
    if guidance is not None:
        positive = runtime.run_node("FluxGuidance", conditioning=positive, guidance=guidance)[0]
    negative_cond = runtime.run_node("CLIPTextEncode", clip=clip, text=negative)[0]
    latent = runtime.run_node("LoraLabEmptyLatent", width=32, height=32, batch_size=count)[0]
    sampled = runtime.run_node("KSampler", model=model, positive=positive, negative=negative_cond, latent_image=latent,
                               denoise=1.0, **{**SAMPLING, **sampling})[0]
    images = runtime.run_node("VAEDecode", vae=vae, samples=sampled)[0]
    return [np.clip(np.round(image.numpy() * 255), 0, 255).astype(np.uint8) for image in images]


def prompt_rates(model: Any, clip: Any, vae: Any, prompt: str, colour: str | None = None, shape: str | None = None,
                 background: str | None = None, **sampling: Any) -> dict[str, float]:
    """Fractions of SAMPLES images for `prompt` that show the given colour / shape / background (and all of them)."""
    images = generate(model, clip, vae, prompt, **{**sampling_for(model), **sampling})
    return image_metrics.rates(map(image_metrics.analyse, images), colour=colour, shape=shape, background=background)
