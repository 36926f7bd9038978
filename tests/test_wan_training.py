"""What is particular to Wan 2.1 text-to-video, trained on still images as one-frame videos (what it shares with the
other DiT families, from training to the sweep, is in test_dit_families.py).

ComfyUI's Wan VAE encodes each image as a video latent of one frame ([1, 16, 1, h, w]); every other Wan model class
stays off the family; the adapters are exactly musubi-tuner's WanAttentionBlock linears; the memory estimate counts
a still frame's tokens.
"""
from __future__ import annotations

import pytest
import torch

import test_lora_files_helpers as helpers
from harness import runtime, training_data, wan

families = runtime.pack("trainer.models.families")
# Every linear of musubi-tuner's WanAttentionBlock (networks/lora_wan.py) in a text-to-video model.
MUSUBI_BLOCK_LAYERS = {f"{attention}_{part}" for attention in ("self_attn", "cross_attn") for part in "qkvo"} | {
    "ffn_0", "ffn_2"}


@pytest.fixture(scope="module")
def bundle():
    return wan.tiny_wan21_t2v()


@pytest.fixture
def dataset(tmp_path):
    return training_data.captioned_shapes(tmp_path / "data", count=2)


def test_comfyui_detects_the_fixture_as_wan_and_encodes_an_image_as_one_frame(bundle):
    import comfy.supported_models

    assert type(bundle.model.model.model_config) is comfy.supported_models.WAN21_T2V
    assert families.detect_family(bundle.model).name == "wan"
    assert bundle.vae.encode(torch.rand(1, 32, 48, 3)).shape == (1, wan.LATENT_CHANNELS, 1, 4, 6)


def test_wan_variants_are_not_trained_as_text_to_video_wan():
    """Every other Wan config class is another model (image-to-video, control, audio, the 5B TI2V with its own
    VAE...): none of them is trained with Wan 2.1 T2V's buckets and names."""
    import comfy.supported_models

    variants = [config for config in vars(comfy.supported_models).values() if isinstance(config, type)
                and issubclass(config, comfy.supported_models.WAN21_T2V)
                and config is not comfy.supported_models.WAN21_T2V]
    assert comfy.supported_models.WAN22_T2V in variants and comfy.supported_models.WAN21_I2V in variants
    assert set(variants) <= set(families.WAN.excluded_classes)


def test_wan_trains_exactly_musubi_tuners_block_layers(bundle, dataset, comfy_dirs):
    lora = runtime.run_node("LoraLabTrainLoRA", **training_data.node_inputs(
        bundle, dataset, epochs=1, unet_lr=1e-2, min_snr_gamma=0.0))[2]
    layers = {tuple(name.removeprefix("lora_unet_blocks_").split("_", 1)) for name in helpers.module_names(lora.weights())}
    assert layers == {(block, part) for block in ("0", "1") for part in MUSUBI_BLOCK_LAYERS}


def test_memory_estimate_counts_one_token_per_2x2_patch_of_a_still_frame(bundle):
    """Wan's patches are (frames, height, width) = (1, 2, 2): a still image has a token per 2x2 latent pixels, and
    every block's self-attention weighs in its heads' scores, (tokens per latent pixel)^2 each."""
    memory = runtime.pack("trainer.training.memory")
    session = runtime.pack("trainer.training.session")
    diffusion_model = bundle.model.model.diffusion_model
    profile = memory.activation_profile(diffusion_model, session.checkpoint_blocks(diffusion_model))
    blocks = len(diffusion_model.blocks)
    assert profile.all_scores == pytest.approx(blocks * wan.TOY_GEOMETRY["num_heads"] / 4**2)
