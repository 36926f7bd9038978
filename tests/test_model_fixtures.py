"""The fixture factory yields working MODEL/CLIP/VAE objects for every family we support."""
from __future__ import annotations

import os

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


@pytest.mark.parametrize("family", sorted(models.FAMILIES))
def test_family_fixture_is_detected_as_its_family(family):
    bundle = models.FAMILIES[family]()
    assert runtime.pack("trainer.models.families").detect_family(bundle.model).name == bundle.family


def test_family_fixtures_have_their_families_prediction_and_latents():
    import comfy.model_base

    expected = {"sd15": ("EPS", 4), "sd2v": ("V_PREDICTION", 4), "sdxl": ("EPS", 4), "sd3": ("FLOW", 16)}
    for name, (model_type, channels) in expected.items():
        bundle = models.FAMILIES[name]()
        assert bundle.model.model.model_type == comfy.model_base.ModelType[model_type], name
        assert bundle.model.model.latent_format.latent_channels == channels == bundle.vae.latent_channels, name


def test_fixture_weights_are_cached_and_deterministic():
    first = models.FAMILIES["sd15"]().model.model.state_dict()
    second = models.FAMILIES["sd15"]().model.model.state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert all(torch.isfinite(value).all() for value in first.values())


@pytest.fixture
def checkpoints_folder(tmp_path):
    """A fresh folder registered as ComfyUI's `checkpoints` folder for the duration of a test."""
    import folder_paths

    saved = folder_paths.folder_names_and_paths["checkpoints"]
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    folder_paths.folder_names_and_paths["checkpoints"] = ([str(folder)], saved[1])
    yield folder
    folder_paths.folder_names_and_paths["checkpoints"] = saved


def test_checkpoint_loader_detects_the_sd15_fixture_checkpoint(checkpoints_folder):
    import comfy.model_base
    import comfy.supported_models

    os.symlink(models.detectable_sd15_checkpoint(), checkpoints_folder / "random-sd15.safetensors")
    model, clip, vae = runtime.run_node("CheckpointLoaderSimple", ckpt_name="random-sd15.safetensors")
    assert type(model.model.model_config) is comfy.supported_models.SD15
    assert model.model.model_type == comfy.model_base.ModelType.EPS
    assert runtime.pack("trainer.models.families").detect_family(model).name == "sd15"
    assert clip is not None and vae is not None
