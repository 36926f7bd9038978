"""Wan 2.1 text-to-video through the real nodes, on a tiny random Wan built with ComfyUI's own classes, trained on
still images as one-frame videos.

ComfyUI's detection recognises the weights as Wan 2.1 T2V; its Wan VAE encodes each image as a video latent of one
frame ([1, 16, 1, h, w]). Load Dataset -> Train LoRA -> Save LoRA trains every linear of the attention blocks, as
musubi-tuner does, with musubi-tuner's shift sampler at 3.0; the file carries musubi-tuner's names
(`lora_unet_blocks_0_self_attn_q`) and metadata, LoraLoader loads every key on 0.3.75 and 0.33 and reproduces what
was trained, Load LoRA reads it back, and Strength Sweep renders it.
"""
from __future__ import annotations

import pytest
import safetensors.torch
import torch

import test_lora_files_helpers as helpers
from harness import runtime, training_data, wan

families = runtime.pack("trainer.models.families")
flow_matching = runtime.pack("trainer.training.flow_matching")
# Every linear of musubi-tuner's WanAttentionBlock (networks/lora_wan.py) in a text-to-video model.
MUSUBI_BLOCK_LAYERS = {f"{attention}_{part}" for attention in ("self_attn", "cross_attn") for part in "qkvo"} | {
    "ffn_0", "ffn_2"}


@pytest.fixture(scope="module")
def bundle():
    return wan.tiny_wan21_t2v()


@pytest.fixture
def dataset(tmp_path):
    return training_data.captioned_shapes(tmp_path / "data", count=2)


def wan_inputs(bundle, dataset, **overrides):
    return training_data.node_inputs(bundle, dataset, **{"epochs": 1, "unet_lr": 1e-2, "min_snr_gamma": 0.0,
                                                         **overrides})


def saved_file(lora, prefix: str) -> dict:
    return runtime.run_node("LoraLabSaveLoRA", lora=lora, filename_prefix=prefix, epochs="final", dtype="fp32",
                            overwrite=False).ui["loras"][0]


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


def test_wan_trains_saves_with_musubi_names_and_loads_completely(bundle, dataset, comfy_dirs):
    sampled = []
    original = flow_matching.sample_sigmas

    def recording(sampler, *args, **kwargs):
        sampled.append((sampler, kwargs.get("shift")))
        return original(sampler, *args, **kwargs)

    flow_matching.sample_sigmas = recording
    try:
        lora = runtime.run_node("LoraLabTrainLoRA", **wan_inputs(bundle, dataset, epochs=2))[2]
    finally:
        flow_matching.sample_sigmas = original
    assert lora.family == "wan"
    assert sampled and set(sampled) == {("shift", 3.0)}  # musubi-tuner's documented Wan default (docs/wan.md)
    names = helpers.module_names(lora.weights())
    assert all(name.startswith("lora_unet_blocks_") for name in names)
    layers = {tuple(name.removeprefix("lora_unet_blocks_").split("_", 1)) for name in names}
    assert layers == {(block, part) for block in ("0", "1") for part in MUSUBI_BLOCK_LAYERS}
    assert all(torch.isfinite(torch.tensor(epoch.train_loss)) for epoch in lora.epochs.values())

    saved = saved_file(lora, "wan/character")
    with safetensors.safe_open(saved["path"], "pt") as handle:
        metadata, keys = handle.metadata(), set(handle.keys())
    assert keys == set(lora.weights())
    assert metadata["ss_base_model_version"] == "wan"  # musubi-tuner's ARCHITECTURE_WAN_FULL
    assert metadata["modelspec.architecture"] == "wan2.1/lora"  # musubi-tuner's ARCH_WAN + "/lora"
    with helpers.comfy_warnings() as warnings:
        runtime.run_node("LoraLoaderModelOnly", model=bundle.model, lora_name=saved["lora_name"], strength_model=1.0)
    assert not [message for message in warnings if "lora key not loaded" in message], warnings

    reloaded = runtime.run_node("LoraLabLoadLoRA", lora_name=saved["lora_name"], model=bundle.model)[0]
    assert reloaded.family == "wan"
    assert set(reloaded.weights()) == keys


def test_lora_loader_on_the_saved_file_reproduces_the_trained_wan_adapter(bundle, dataset, comfy_dirs):
    from test_trained_adapter_matches_lora_loader import assert_lora_loader_reproduces

    generator = torch.Generator().manual_seed(1)
    inputs = {"x": torch.randn(1, wan.LATENT_CHANNELS, 1, 8, 8, generator=generator), "timestep": torch.tensor([0.7]),
              "context": torch.randn(1, 6, wan.TINY_UMT5["d_model"], generator=generator)}
    lora = runtime.run_node("LoraLabTrainLoRA", **wan_inputs(bundle, dataset, keep_training_state=True))[2]
    assert_lora_loader_reproduces(bundle, lora, saved_file(lora, "wan/adapter")["lora_name"], inputs)


def test_strength_sweep_and_training_samples_render_wan(bundle, dataset, comfy_dirs):
    """Training samples render, and the sweep renders each strength: at the same seed, strength 1's first model
    call sees the same input as strength 0's and answers differently. (The random VAE decodes nearly flat grey,
    so the pictures themselves cannot show it.)"""
    family = families.BY_NAME["wan"]
    lora = runtime.run_node("LoraLabTrainLoRA", **wan_inputs(bundle, dataset, epochs=3, sample_prompts="a red circle",
                                                             sample_every_n_epochs=1))[2]
    assert lora.samples.get(1)
    calls = []
    handle = bundle.model.model.diffusion_model.register_forward_hook(
        lambda module, args, output: calls.append((args[0].detach().clone(), output.detach().clone())))
    try:
        result = runtime.run_node("LoraLabStrengthSweep", model=bundle.model, clip=bundle.clip, vae=bundle.vae,
                                  lora=lora, prompts="sks, a red circle", negative="", strengths="0, 1", seeds="1",
                                  epochs="final", clip_strength_ratio=1.0, width=32, height=32, steps=2,
                                  cfg=family.sample_cfg, sampler_name="euler", scheduler="simple")
    finally:
        handle.remove()
    assert result[1].shape[0] == 2 and bool(torch.isfinite(result[1]).all())
    per_strength = len(calls) // 2
    (input_0, output_0), (input_1, output_1) = calls[0], calls[per_strength]
    assert input_0.shape[2] == 1  # a one-frame video latent
    assert torch.equal(input_0, input_1)
    assert float((output_0 - output_1).abs().max()) > 1e-5  # strength 0 computes exactly the base model


def test_training_the_umt5_text_encoder_is_refused_by_name(bundle, dataset, comfy_dirs):
    errors = runtime.pack("trainer.errors")
    with pytest.raises(errors.SettingsError, match="text_encoder_lr trains CLIP text encoders, and this model has none"):
        runtime.run_node("LoraLabTrainLoRA", **wan_inputs(bundle, dataset, text_encoder_lr=1e-4))


def test_memory_estimate_counts_one_token_per_2x2_patch_of_a_still_frame(bundle):
    """Wan's patches are (frames, height, width) = (1, 2, 2): a still image has a token per 2x2 latent pixels, and
    every block's self-attention weighs in its heads' scores, (tokens per latent pixel)^2 each."""
    memory = runtime.pack("trainer.training.memory")
    session = runtime.pack("trainer.training.session")
    diffusion_model = bundle.model.model.diffusion_model
    profile = memory.activation_profile(diffusion_model, session.checkpoint_blocks(diffusion_model))
    blocks = len(diffusion_model.blocks)
    assert profile.all_scores == pytest.approx(blocks * wan.TOY_GEOMETRY["num_heads"] / 4**2)
