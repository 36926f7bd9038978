"""The DiT families of musubi-tuner (Qwen-Image, Z-Image, Wan), kohya's sd-scripts (Lumina 2, HunyuanImage 2.1) and
ai-toolkit (HiDream I1) through the real nodes,
each on a tiny random model built with ComfyUI's own classes and recognised by ComfyUI's model detection.

Load Dataset -> Train LoRA -> Save LoRA trains the layers that trainer trains, with its documented timestep sampler
and shift; the file carries the names ComfyUI and that trainer read and that trainer's metadata values;
LoraLoader loads every key on 0.3.75 and 0.33 and reproduces what was trained, Load LoRA reads it back, Strength
Sweep and training samples render, and training the LLM text encoder is refused by name.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import safetensors.torch
import torch

import test_lora_files_helpers as helpers
from harness import flux2, hidream, hunyuan_image, nextdit, qwen_image, runtime, training_data, wan

families = runtime.pack("trainer.models.families")
flow_matching = runtime.pack("trainer.training.flow_matching")
errors = runtime.pack("trainer.errors")


@dataclass(frozen=True)
class Expected:
    """What a family's run must show: its fixture, ComfyUI config class, names, sampler, metadata, model inputs."""

    fixture: Callable[[], Any]
    config_class: str
    names: str  # a regex every trained layer's name matches from its start
    parts: set[str]  # name fragments of layer kinds that must be trained (block 0)
    left_out: str  # a name fragment of layers the family's trainer leaves out
    sampler: tuple[str, float] | None  # timestep sampler and shift (None: uniform over the model's own schedule)
    architecture: str
    model_inputs: Callable[[torch.Generator], dict[str, Any]]  # a call of the diffusion model, as sampling makes it
    peft_prefix: str  # how ai-toolkit's peft-layout files name the family's layers
    base_model_version: str | None = None  # ss_base_model_version, where the trainer's differs from the family name


def nextdit_inputs(context_width: int) -> Callable[[torch.Generator], dict[str, Any]]:
    return lambda generator: {"x": torch.randn(1, 16, 8, 8, generator=generator), "timesteps": torch.tensor([0.7]),
                              "context": torch.randn(1, 6, context_width, generator=generator), "num_tokens": 6}


FAMILIES = {
    "qwen_image": Expected(qwen_image.tiny_qwen_image, "QwenImage", r"lora_unet_transformer_blocks_\d+_",
                           {"0_attn_to_q", "0_attn_add_q_proj", "0_attn_to_add_out", "0_img_mlp_net_0_proj",
                            "0_txt_mlp_net_2"}, "_mod_", ("shift", 2.2), "Qwen-Image/lora", lambda generator: {
                               "x": torch.randn(1, 16, 1, 8, 8, generator=generator), "timestep": torch.tensor([0.7]),
                               "context": torch.randn(1, 6, qwen_image.TINY_QWEN25["hidden_size"], generator=generator)},
                           "transformer."),
    "z_image": Expected(nextdit.tiny_z_image, "ZImage", r"lora_unet_layers_\d+_",
                        {"0_attention_qkv", "0_attention_out", "0_feed_forward_w1", "0_feed_forward_w2",
                         "0_feed_forward_w3"}, "adaLN_modulation", ("shift", 2.0), "Z-Image/lora",
                        nextdit_inputs(nextdit.TINY_QWEN3["hidden_size"]), "diffusion_model."),
    "lumina2": Expected(nextdit.tiny_lumina2, "Lumina2",
                        r"lora_unet_((layers|noise_refiner|context_refiner)_\d+_|final_layer_)",
                        {"layers_0_attention_qkv", "layers_0_adaLN_modulation_1", "noise_refiner_0_feed_forward_w2",
                         "context_refiner_0_attention_out", "final_layer_linear"}, "embedder", ("nextdit_shift", 6.0),
                        "lumina-2/lora", nextdit_inputs(nextdit.TINY_GEMMA2["hidden_size"]), "diffusion_model."),
    "wan": Expected(wan.tiny_wan21_t2v, "WAN21_T2V", r"lora_unet_blocks_\d+_",
                    {"0_self_attn_q", "0_cross_attn_o", "0_ffn_0", "0_ffn_2"}, "norm", ("shift", 3.0), "wan2.1/lora",
                    lambda generator: {"x": torch.randn(1, wan.LATENT_CHANNELS, 1, 8, 8, generator=generator),
                                       "timestep": torch.tensor([0.7]),
                                       "context": torch.randn(1, 6, wan.TINY_UMT5["d_model"], generator=generator)},
                    "diffusion_model."),
    "hidream_i1": Expected(hidream.tiny_hidream, "HiDream", r"lora_unet_(double|single)_stream_blocks_\d+_block_",
                           {"double_stream_blocks_0_block_attn1_to_q", "double_stream_blocks_0_block_attn1_to_out_t",
                            "double_stream_blocks_0_block_adaLN_modulation_1",
                            "double_stream_blocks_0_block_ff_i_shared_experts_w2", "double_stream_blocks_0_block_ff_t_w1",
                            "single_stream_blocks_0_block_attn1_to_k", "single_stream_blocks_0_block_ff_i_shared_experts_w3"},
                           "ff_i_experts", ("shift", 3.0), "hidream-i1/lora", lambda generator: {
                               "x": torch.randn(1, hidream.LATENT_CHANNELS, 8, 8, generator=generator),
                               "t": torch.tensor([0.7]), "y": torch.randn(1, hidream.toy_geometry()["text_emb_dim"],
                                                                          generator=generator),
                               "context": torch.randn(1, 6, hidream.TINY_T5["d_model"], generator=generator),
                               "encoder_hidden_states_llama3": torch.randn(
                                   1, hidream.TINY_LLAMA["num_hidden_layers"], 6, hidream.TINY_LLAMA["hidden_size"],
                                   generator=generator)},
                           "transformer."),
    "hunyuan_image_2_1": Expected(
        hunyuan_image.tiny_hunyuan_image, "HunyuanImage21", r"lora_unet_(double|single)_blocks_\d+_",
        {"double_blocks_0_img_attn_qkv", "double_blocks_0_txt_attn_proj", "double_blocks_0_img_mod_lin",
         "double_blocks_0_img_mlp_0", "double_blocks_0_txt_mlp_2", "single_blocks_0_linear1", "single_blocks_0_linear2",
         "single_blocks_0_modulation_lin"}, "token_refiner", None, "hunyuan-image-2.1/lora", lambda generator: {
            "x": torch.randn(1, hunyuan_image.LATENT_CHANNELS, 4, 4, generator=generator),
            "timestep": torch.tensor([0.7]),
            "context": torch.randn(1, 6, hunyuan_image.TINY_QWEN25["hidden_size"], generator=generator),
            "txt_byt5": torch.randn(1, 4, 1472, generator=generator)},
        "diffusion_model.", base_model_version="hunyuan-image-2.1"),
    **{name: Expected(fixture, "Flux2", r"lora_unet_(double|single)_blocks_\d+_",
                      {"0_img_attn_qkv", "0_txt_attn_proj", "0_img_mlp_0", "0_txt_mlp_2", "0_linear1", "0_linear2"},
                      "mod", ("flux_shift", 3.1582), architecture, lambda generator: {
                          "x": torch.randn(1, flux2.LATENT_CHANNELS, 4, 4, generator=generator),
                          "timestep": torch.tensor([0.7]), "guidance": torch.tensor([0.0]),
                          "context": torch.randn(1, 6, 3 * flux2.TINY_QWEN3["hidden_size"], generator=generator)},
                      "diffusion_model.")
       for name, fixture, architecture in (("flux_2_klein", flux2.tiny_flux2_klein, "Flux.2-klein/lora"),
                                           ("flux_2_dev", flux2.tiny_flux2_dev, "Flux.2-dev/lora"))},
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    expected = FAMILIES[request.param]
    return request.param, expected, expected.fixture()


@pytest.fixture
def dataset(tmp_path):
    return training_data.captioned_shapes(tmp_path / "data", count=2)


def flow_inputs(bundle, dataset, **overrides):
    return training_data.node_inputs(bundle, dataset, **{"epochs": 1, "unet_lr": 1e-2, "min_snr_gamma": 0.0,
                                                         **overrides})


def saved_file(lora, prefix: str) -> dict:
    return runtime.run_node("LoraLabSaveLoRA", lora=lora, filename_prefix=prefix, epochs="final", dtype="fp32",
                            overwrite=False).ui["loras"][0]


def test_comfyui_detects_the_fixture_as_the_family(family):
    name, expected, bundle = family
    assert type(bundle.model.model.model_config).__name__ == expected.config_class
    assert families.detect_family(bundle.model).name == name


def test_the_family_trains_saves_with_musubi_names_and_loads_completely(family, dataset, comfy_dirs):
    name, expected, bundle = family
    sampled = []
    original = flow_matching.sample_sigmas

    def recording(sampler, *args, **kwargs):
        sampled.append((sampler, kwargs.get("shift")))
        return original(sampler, *args, **kwargs)

    flow_matching.sample_sigmas = recording
    try:
        lora = runtime.run_node("LoraLabTrainLoRA", **flow_inputs(bundle, dataset, epochs=2))[2]
    finally:
        flow_matching.sample_sigmas = original
    assert lora.family == name
    assert set(sampled) == ({expected.sampler} if expected.sampler else set())  # the trainer's documented default
    names = helpers.module_names(lora.weights())
    assert names and all(re.match(expected.names, layer) for layer in names)
    assert not [layer for layer in names if expected.left_out in layer]
    assert all(any(layer.endswith(part) for layer in names) for part in expected.parts), sorted(names)
    assert all(torch.isfinite(torch.tensor(epoch.train_loss)) for epoch in lora.epochs.values())

    saved = saved_file(lora, f"{name}/character")
    with safetensors.safe_open(saved["path"], "pt") as handle:
        metadata, keys = handle.metadata(), set(handle.keys())
    assert keys == set(lora.weights())
    # musubi-tuner's architecture_full_name, kohya's model version
    assert metadata["ss_base_model_version"] == (expected.base_model_version or name)
    assert metadata["modelspec.architecture"] == expected.architecture  # their sai_model_spec.py
    with helpers.comfy_warnings() as warnings:
        runtime.run_node("LoraLoaderModelOnly", model=bundle.model, lora_name=saved["lora_name"], strength_model=1.0)
    assert not [message for message in warnings if "lora key not loaded" in message], warnings

    reloaded = runtime.run_node("LoraLabLoadLoRA", lora_name=saved["lora_name"], model=bundle.model)[0]
    assert reloaded.family == name
    assert set(reloaded.weights()) == keys


def test_lora_loader_on_the_saved_file_reproduces_the_trained_adapter(family, dataset, comfy_dirs):
    from test_trained_adapter_matches_lora_loader import assert_lora_loader_reproduces

    name, expected, bundle = family
    inputs = expected.model_inputs(torch.Generator().manual_seed(1))
    lora = runtime.run_node("LoraLabTrainLoRA", **flow_inputs(bundle, dataset, epochs=3, keep_training_state=True))[2]
    assert_lora_loader_reproduces(bundle, lora, saved_file(lora, f"{name}/adapter")["lora_name"], inputs)


def test_strength_sweep_and_training_samples_render(family, dataset, comfy_dirs):
    """Training samples render, and the sweep renders each strength: at the same seed, strength 1's first model
    call sees the same input as strength 0's and answers differently. (A random VAE decodes nearly flat grey, so
    the pictures themselves cannot show it.)"""
    name, _, bundle = family
    family_entry = families.BY_NAME[name]
    size = 2 * family_entry.bucket_step  # two latent pixels a side: 32 px, 64 px at HunyuanImage's 32x
    lora = runtime.run_node("LoraLabTrainLoRA", **flow_inputs(bundle, dataset, epochs=3, sample_prompts="a red circle",
                                                              sample_every_n_epochs=1))[2]
    assert lora.samples.get(1)
    calls = []
    handle = bundle.model.model.diffusion_model.register_forward_hook(
        lambda module, args, output: calls.append((args[0].detach().clone(), output.detach().clone())))
    try:
        result = runtime.run_node("LoraLabStrengthSweep", model=bundle.model, clip=bundle.clip, vae=bundle.vae,
                                  lora=lora, prompts="sks, a red circle", negative="", strengths="0, 1", seeds="1",
                                  epochs="final", clip_strength_ratio=1.0, width=size, height=size, steps=2,
                                  cfg=family_entry.sample_cfg, sampler_name="euler", scheduler="simple")
    finally:
        handle.remove()
    assert result[1].shape[0] == 2 and bool(torch.isfinite(result[1]).all())
    per_strength = len(calls) // 2
    (input_0, output_0), (input_1, output_1) = calls[0], calls[per_strength]
    assert torch.equal(input_0, input_1)
    assert float((output_0 - output_1).abs().max()) > 1e-5  # strength 0 computes exactly the base model


def test_training_the_llm_text_encoder_is_refused_by_name(family, dataset, comfy_dirs):
    _, _, bundle = family
    with pytest.raises(errors.SettingsError, match="text_encoder_lr trains CLIP text encoders, and this model has none"):
        runtime.run_node("LoraLabTrainLoRA", **flow_inputs(bundle, dataset, text_encoder_lr=1e-4))


def peft_named(kohya: dict[str, torch.Tensor], model, prefix: str) -> dict[str, torch.Tensor]:
    """A kohya LoRA rewritten as ai-toolkit writes the family (peft's lora_A/lora_B, no alpha, `prefix` names from
    ComfyUI's own key map), split into q/k/v where the map splits a fused weight (Z-Image's and Lumina 2's qkv)."""
    import comfy.lora

    aliases: dict[str, list[tuple[str, Any]]] = {}
    for name, target in comfy.lora.model_lora_keys_unet(model.model, {}).items():
        if name.startswith(prefix):
            weight_key, rows = (target, None) if isinstance(target, str) else target
            aliases.setdefault(weight_key, []).append((name, rows))
    out = {}
    for weight_key, names in aliases.items():
        module = "lora_unet_" + weight_key[len("diffusion_model."):-len(".weight")].replace(".", "_")
        if f"{module}.lora_down.weight" not in kohya:
            continue
        down, up = kohya[f"{module}.lora_down.weight"], kohya[f"{module}.lora_up.weight"]
        up = up * (float(kohya[f"{module}.alpha"]) / down.shape[0])
        slices = {rows[1:]: (name, rows) for name, rows in sorted(names) if rows is not None}  # one name a slice
        tiled = sorted(slices) and all(start == end for (_, end), (start, _) in zip(
            [(0, 0)] + [(offset, offset + size) for offset, size in sorted(slices)],
            sorted(slices) + [(up.shape[0], 0)]))  # the slices cover the rows end to end (not Flux's linear1_qkv)
        whole = max(name for name, rows in names if rows is None)  # (a diffusers name sorts after ComfyUI's path)
        for name, rows in [slices[key] for key in sorted(slices)] if tiled else [(whole, None)]:
            out[f"{name}.lora_A.weight"] = down.clone()
            out[f"{name}.lora_B.weight"] = up if rows is None else up[rows[1]: rows[1] + rows[2]]
    return out


def test_load_lora_reads_the_familys_peft_layout_files_as_the_same_change(family, dataset, comfy_dirs):
    """ai-toolkit's files (peft layout; Z-Image's and Lumina 2's q/k/v split) load as exactly the change the kohya
    file makes, and save again as a file LoraLoader loads completely."""
    name, expected, bundle = family
    kohya = runtime.run_node("LoraLabTrainLoRA", **flow_inputs(bundle, dataset))[2].weights()
    peft = peft_named(kohya, bundle.model, expected.peft_prefix)
    assert any(key.endswith(".lora_A.weight") for key in peft) and len(peft) >= len(helpers.module_names(kohya)) * 2
    safetensors.torch.save_file({key: value.contiguous() for key, value in peft.items()},
                                str(comfy_dirs["loras"] / f"ai_toolkit_{name}.safetensors"))
    imported = runtime.run_node("LoraLabLoadLoRA", lora_name=f"ai_toolkit_{name}.safetensors", model=bundle.model)[0]
    assert helpers.module_names(imported.weights()) == helpers.module_names(kohya)
    shapes = {key: value.shape for key, value in bundle.model.model.diffusion_model.state_dict().items()}
    for module in helpers.module_names(kohya):
        shape = next(shape for key, shape in shapes.items()
                     if "lora_unet_" + key[: -len(".weight")].replace(".", "_") == module)
        torch.testing.assert_close(helpers.reference_delta(imported.weights(), module, shape),
                                   helpers.reference_delta(kohya, module, shape), rtol=1e-5, atol=1e-7)
    saved = saved_file(imported, f"{name}/from_ai_toolkit")
    with helpers.comfy_warnings() as warnings:
        runtime.run_node("LoraLoaderModelOnly", model=bundle.model, lora_name=saved["lora_name"], strength_model=1.0)
    assert not [message for message in warnings if "lora key not loaded" in message], warnings


def test_the_dataset_report_counts_captions_in_the_familys_own_tokens(family, tmp_path, comfy_dirs):
    """The encoder that carries the caption counts it, without ComfyUI's prompt template, against the length the
    family's trainer reads; a longer caption is reported with that length."""
    name, _, bundle = family
    tokens = families.BY_NAME[name].caption_tokens
    folder = tmp_path / "data"
    training_data.captioned_shapes(folder, count=2)
    long_caption = ", ".join(f"a detailed red circle number {index}" for index in range(tokens.limit // 4 + 10))
    (folder / "000.txt").write_text(long_caption, encoding="utf-8")
    _, text = runtime.run_node("LoraLabLoadDataset", path=str(folder), repeats=1, caption_extension=".txt",
                               class_tokens="", model=bundle.model, clip=bundle.clip)
    assert f"(limit {tokens.limit} {tokens.name})" in text
    assert f"Captions longer than {tokens.limit} {tokens.name} tokens" in text and tokens.source in text
