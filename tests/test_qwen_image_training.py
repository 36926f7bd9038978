"""Qwen-Image through the real nodes, on a tiny random Qwen-Image built with ComfyUI's own classes.

ComfyUI's detection recognises the weights as Qwen-Image; Load Dataset -> Train LoRA -> Save LoRA trains the
transformer blocks' linears but the modulations, as musubi-tuner does, with musubi-tuner's shift sampler at
2.2; the file carries musubi-tuner's names (`lora_unet_transformer_blocks_...`), LoraLoader loads every key on
0.3.75 and 0.33 and reproduces what was trained, Load LoRA reads it back, and Strength Sweep renders it.
"""
from __future__ import annotations

import pytest
import safetensors.torch
import torch

import test_lora_files_helpers as helpers
from harness import qwen_image, runtime, training_data

families = runtime.pack("trainer.models.families")
flow_matching = runtime.pack("trainer.training.flow_matching")


@pytest.fixture(scope="module")
def bundle():
    return qwen_image.tiny_qwen_image()


@pytest.fixture
def dataset(tmp_path):
    return training_data.captioned_shapes(tmp_path / "data", count=2)


def qwen_inputs(bundle, dataset, **overrides):
    return training_data.node_inputs(bundle, dataset, **{"epochs": 1, "unet_lr": 1e-2, "min_snr_gamma": 0.0,
                                                         **overrides})


def saved_file(lora, prefix: str) -> dict:
    return runtime.run_node("LoraLabSaveLoRA", lora=lora, filename_prefix=prefix, epochs="final", dtype="fp32",
                            overwrite=False).ui["loras"][0]


def test_comfyui_detects_the_fixture_as_qwen_image(bundle):
    import comfy.supported_models

    assert isinstance(bundle.model.model.model_config, comfy.supported_models.QwenImage)
    assert families.detect_family(bundle.model).name == "qwen_image"


def test_qwen_image_trains_saves_with_musubi_names_and_loads_completely(bundle, dataset, comfy_dirs):
    sampled = []
    original = flow_matching.sample_sigmas

    def recording(sampler, *args, **kwargs):
        sampled.append((sampler, kwargs.get("shift")))
        return original(sampler, *args, **kwargs)

    flow_matching.sample_sigmas = recording
    try:
        lora = runtime.run_node("LoraLabTrainLoRA", **qwen_inputs(bundle, dataset, epochs=2))[2]
    finally:
        flow_matching.sample_sigmas = original
    assert lora.family == "qwen_image"
    assert sampled and set(sampled) == {("shift", 2.2)}  # musubi-tuner's documented Qwen-Image default
    names = helpers.module_names(lora.weights())
    assert names and all(name.startswith("lora_unet_transformer_blocks_") for name in names)
    assert not [name for name in names if "_mod_" in name]  # musubi-tuner leaves the modulations out
    parts = {name.split("_", 5)[-1] for name in names}
    assert {"attn_to_q", "attn_add_q_proj", "attn_to_add_out", "img_mlp_net_0_proj", "txt_mlp_net_2"} <= parts
    assert all(torch.isfinite(torch.tensor(epoch.train_loss)) for epoch in lora.epochs.values())

    saved = saved_file(lora, "qwen/character")
    with safetensors.safe_open(saved["path"], "pt") as handle:
        metadata, keys = handle.metadata(), set(handle.keys())
    assert keys == set(lora.weights())
    assert metadata["ss_base_model_version"] == "qwen_image"
    assert metadata["modelspec.architecture"] == "qwen-image/lora"
    with helpers.comfy_warnings() as warnings:
        runtime.run_node("LoraLoaderModelOnly", model=bundle.model, lora_name=saved["lora_name"], strength_model=1.0)
    assert not [message for message in warnings if "lora key not loaded" in message], warnings

    reloaded = runtime.run_node("LoraLabLoadLoRA", lora_name=saved["lora_name"], model=bundle.model)[0]
    assert reloaded.family == "qwen_image"
    assert set(reloaded.weights()) == keys


def test_lora_loader_on_the_saved_file_reproduces_the_trained_qwen_image_adapter(bundle, dataset, comfy_dirs):
    from test_trained_adapter_matches_lora_loader import assert_lora_loader_reproduces

    generator = torch.Generator().manual_seed(1)
    inputs = {"x": torch.randn(1, 16, 1, 8, 8, generator=generator), "timestep": torch.tensor([0.7]),
              "context": torch.randn(1, 6, qwen_image.TINY_QWEN25["hidden_size"], generator=generator)}
    lora = runtime.run_node("LoraLabTrainLoRA", **qwen_inputs(bundle, dataset, keep_training_state=True))[2]
    assert_lora_loader_reproduces(bundle, lora, saved_file(lora, "qwen/adapter")["lora_name"], inputs)


def test_strength_sweep_and_training_samples_render_qwen_image(bundle, dataset, comfy_dirs):
    """Training samples render, and the sweep renders each strength: at the same seed, strength 1's first model
    call sees the same input as strength 0's and answers differently. (The random VAE decodes nearly flat grey,
    so the pictures themselves cannot show it.)"""
    family = families.BY_NAME["qwen_image"]
    lora = runtime.run_node("LoraLabTrainLoRA", **qwen_inputs(bundle, dataset, epochs=3, sample_prompts="a red circle",
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
    assert torch.equal(input_0, input_1)
    assert float((output_0 - output_1).abs().max()) > 1e-5  # strength 0 computes exactly the base model


def test_training_the_qwen_text_encoder_is_refused_by_name(bundle, dataset, comfy_dirs):
    errors = runtime.pack("trainer.errors")
    with pytest.raises(errors.SettingsError, match="text_encoder_lr trains CLIP text encoders, and this model has none"):
        runtime.run_node("LoraLabTrainLoRA", **qwen_inputs(bundle, dataset, text_encoder_lr=1e-4))
