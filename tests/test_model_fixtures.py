"""The fixture factory yields working MODEL/CLIP/VAE objects for every family we support."""
from __future__ import annotations

import pytest
import torch

from harness import models, runtime


@pytest.mark.parametrize("family", sorted(models.FAMILIES))
def test_family_fixture_denoises_through_comfy_sampler(family):
    bundle = models.FAMILIES[family]()
    positive = runtime.run_node("CLIPTextEncode", clip=bundle.clip, text="a red circle")[0]
    negative = runtime.run_node("CLIPTextEncode", clip=bundle.clip, text="")[0]
    channels = bundle.vae.latent_channels
    latent = {"samples": torch.zeros(1, channels, 8, 8)}
    sampled = runtime.run_node("KSampler", model=bundle.model, seed=1, steps=2, cfg=4.0, sampler_name="euler",
                               scheduler="normal", positive=positive, negative=negative, latent_image=latent, denoise=1.0)[0]
    assert sampled["samples"].shape == (1, channels, 8, 8)
    assert torch.isfinite(sampled["samples"]).all()
    image = runtime.run_node("VAEDecode", vae=bundle.vae, samples=sampled)[0]
    assert image.shape == (1, 64, 64, 3)  # 8x8 latents decode to 64x64 pixels


def test_fixture_weights_are_cached_and_deterministic():
    first = models.FAMILIES["sd15"]().model.model.state_dict()
    second = models.FAMILIES["sd15"]().model.model.state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert all(torch.isfinite(value).all() for value in first.values())
