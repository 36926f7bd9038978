"""The flow-matching fixtures: ComfyUI detects each family from its weights, and each denoises and decodes."""
from __future__ import annotations

import pytest
import torch

from harness import flow_models, runtime

EXPECTED = {  # family -> ComfyUI model config class, model type, guidance embedding
    "flux_dev": ("Flux", "FLUX", True),
    "flux_schnell": ("FluxSchnell", "FLOW", False),
    "chroma": ("Chroma", "FLUX", False),
}


@pytest.mark.parametrize("family", sorted(flow_models.FLUX_FAMILIES))
def test_flux_fixture_is_detected_by_comfyui_as_its_family(family):
    import comfy.model_base

    bundle = flow_models.FLUX_FAMILIES[family]()
    config_class, model_type, guidance = EXPECTED[family]
    assert type(bundle.model.model.model_config).__name__ == config_class
    assert bundle.model.model.model_type == comfy.model_base.ModelType[model_type]
    assert bundle.model.model.latent_format.latent_channels == bundle.vae.latent_channels == 16
    has_guidance = isinstance(getattr(bundle.model.model.diffusion_model, "guidance_in", None), torch.nn.Module) and \
        not isinstance(bundle.model.model.diffusion_model.guidance_in, torch.nn.Identity)
    assert has_guidance == guidance


@pytest.mark.parametrize("family", sorted(flow_models.FLUX_FAMILIES))
def test_flux_fixture_denoises_and_decodes_as_a_comfyui_graph_does(family):
    bundle = flow_models.FLUX_FAMILIES[family]()
    positive = runtime.run_node("CLIPTextEncode", clip=bundle.clip, text="a red circle")[0]
    if family == "flux_dev":
        positive = runtime.run_node("FluxGuidance", conditioning=positive, guidance=3.5)[0]
    latent = {"samples": torch.zeros(1, 16, 8, 8)}
    sampled = runtime.run_node("KSampler", model=bundle.model, seed=1, steps=2, cfg=1.0, sampler_name="euler",
                               scheduler="simple", positive=positive, negative=positive, latent_image=latent,
                               denoise=1.0)[0]
    assert torch.isfinite(sampled["samples"]).all()
    assert sampled["samples"].std() > 0
    image = runtime.run_node("VAEDecode", vae=bundle.vae, samples=sampled)[0]
    assert image.shape == (1, 64, 64, 3)


def test_flux_dev_guidance_changes_the_prediction():
    """The dev fixture's guidance embedding is live: the same input at guidance 1 and 3.5 predicts differently."""
    model = flow_models.tiny_flux_dev().model.model
    x = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(0))
    context = torch.randn(1, 4, 32, generator=torch.Generator().manual_seed(1))
    pooled = torch.randn(1, 32, generator=torch.Generator().manual_seed(2))
    sigma = torch.tensor([0.7])
    low, high = (model.apply_model(x, sigma, c_crossattn=context, y=pooled, guidance=torch.tensor([g]))
                 for g in (1.0, 3.5))
    assert not torch.allclose(low, high)


def test_flux_fp8_fixture_stores_one_byte_per_weight():
    model = flow_models.tiny_flux_dev_fp8().model.model
    assert model.diffusion_model.double_blocks[0].img_attn.qkv.weight.dtype == torch.float8_e4m3fn


@pytest.mark.parametrize("variant", sorted(flow_models.SD35_VARIANTS))
def test_sd35_variants_are_detected_and_trained_as_the_sd3_family(variant):
    import comfy.supported_models

    bundle = flow_models.tiny_sd35(variant)
    assert isinstance(bundle.model.model.model_config, comfy.supported_models.SD3)
    unet_config = bundle.model.model.model_config.unet_config
    assert unet_config["qk_norm"] == "rms"
    assert unet_config["x_block_self_attn_layers"] == flow_models.SD35_VARIANTS[variant].get("x_block_self_attn_layers", [])
    assert runtime.pack("trainer.models.families").detect_family(bundle.model).name == "sd3"
