"""Load LoRA turns our files, kohya sd-scripts files and ComfyUI-trainer files into a LORALAB_LORA to train on."""
from __future__ import annotations

import math

import pytest
import safetensors.torch
import torch

import test_lora_files_helpers as helpers
from harness import models, runtime


def load(lora_name, model=None):
    inputs = {"lora_name": lora_name} if model is None else {"lora_name": lora_name, "model": model}
    return runtime.run_node("LoraLabLoadLoRA", **inputs)[0]


def save(lora, prefix, dtype="fp32", epochs="final"):
    return runtime.run_node("LoraLabSaveLoRA", lora=lora, filename_prefix=prefix, epochs=epochs, dtype=dtype,
                            overwrite=False).ui["loras"]


def errors():
    return runtime.pack("trainer.errors")


@pytest.mark.parametrize("network", helpers.NETWORKS)
def test_our_files_load_back_as_the_same_lora(comfy_dirs, network):
    original = helpers.random_trained_lora(models.FAMILIES["sd15"](), network, epochs=(3, 6),
                                           settings={"unet_lr": 2e-4, "optimizer": "Prodigy", "seed": 7},
                                           dataset_summary={"tag_frequency": {"5_cat": {"cat": 4}}, "num_train_images": 20})
    saved = save(original, "again/cat", epochs="all")
    assert "LoraLabLoadLoRA" in runtime.boot().NODE_CLASS_MAPPINGS
    lora_names = runtime.boot().NODE_CLASS_MAPPINGS["LoraLabLoadLoRA"].INPUT_TYPES()["required"]["lora_name"][0]
    assert {item["lora_name"] for item in saved} <= set(lora_names)

    loaded = load(saved[0]["lora_name"])  # epoch 3, no model needed: the metadata names the family
    assert (loaded.family, loaded.network, loaded.rank, loaded.alpha) == ("sd15", network, 4, 2.0)
    assert (loaded.conv_rank, loaded.conv_alpha) == ((None, None) if network == "LoRA" else (2, 1.0))
    assert list(loaded.epochs) == [3] and loaded.epochs[3].step == 30
    assert loaded.settings == {"unet_lr": 2e-4, "optimizer": "Prodigy", "seed": 7}
    assert loaded.dataset_summary["tag_frequency"] == {"5_cat": {"cat": 4}}
    assert loaded.started_at == original.started_at
    weights = loaded.weights()
    assert weights.keys() == original.weights(3).keys()
    for key, value in original.weights(3).items():
        assert torch.equal(weights[key], value), key
        # Trainable: fp32, on the CPU, made outside inference mode although ComfyUI runs nodes inside it.
        assert weights[key].dtype == torch.float32 and not weights[key].is_inference()


def test_a_loaded_lora_saves_again_unchanged(comfy_dirs):
    original = helpers.random_trained_lora(models.FAMILIES["sd15"](), "LoHa")
    first = save(original, "cycle/first", dtype="bf16")
    second = save(load(first[0]["lora_name"]), "cycle/second", dtype="bf16")
    lora_io = runtime.pack("trainer.files.lora_io")
    first_tensors, first_metadata = lora_io.read_lora_file(comfy_dirs["loras"] / first[0]["lora_name"])
    second_tensors, second_metadata = lora_io.read_lora_file(comfy_dirs["loras"] / second[0]["lora_name"])
    assert first_tensors.keys() == second_tensors.keys()
    assert all(torch.equal(first_tensors[key], second_tensors[key]) for key in first_tensors)
    assert second_metadata["sshs_model_hash"] == first_metadata["sshs_model_hash"]
    for key in ("ss_network_module", "ss_network_dim", "ss_network_alpha", "ss_network_args", "ss_base_model_version"):
        assert second_metadata[key] == first_metadata[key], key


def kohya_style_file(path, bundle, *, conv_dim=None, metadata=True, block_ranks=False):
    """A file as `sd-scripts/train_network.py` writes it by default: fp32 weights, int64 alpha (--network_alpha's
    default is the int 1), kohya's names, and its minimum metadata."""
    layers = helpers.adapter_layers(bundle, include_convs=conv_dim is not None)
    generator = torch.Generator().manual_seed(3)
    tensors = {}
    for index, layer in enumerate(layers):
        rank = conv_dim if layer.is_conv3x3 else (8 if block_ranks and index % 3 == 0 else 4)
        adapter = helpers.random_adapter(layer, "LoRA", rank, 1.0, generator, decomposed=False)
        adapter[f"{layer.name}.alpha"] = torch.tensor(1)  # int64, as kohya's default run saves it
        tensors.update(adapter)
    info = {"ss_network_module": "networks.lora", "ss_network_dim": "4", "ss_network_alpha": "1", "ss_v2": "False",
            "ss_base_model_version": "sd_v1", "ss_epoch": "3", "ss_steps": "120", "ss_learning_rate": "0.0001",
            "ss_output_name": "kohya_dog", "sshs_model_hash": "0" * 64, "modelspec.architecture": "stable-diffusion-v1/lora"}
    if conv_dim:
        info["ss_network_args"] = f'{{"conv_dim": "{conv_dim}", "conv_alpha": "1"}}'
    safetensors.torch.save_file(tensors, str(path), info if metadata else None)
    return tensors


def test_a_kohya_file_loads_with_float_alphas_and_its_epoch(comfy_dirs):
    bundle = models.FAMILIES["sd15"]()
    tensors = kohya_style_file(comfy_dirs["loras"] / "kohya_dog.safetensors", bundle)
    loaded = load("kohya_dog.safetensors")
    assert (loaded.family, loaded.network, loaded.rank, loaded.alpha, loaded.conv_rank) == ("sd15", "LoRA", 4, 1.0, None)
    assert list(loaded.epochs) == [3] and loaded.epochs[3].step == 120 and math.isnan(loaded.epochs[3].train_loss)
    assert loaded.settings == {}  # kohya's ss_learning_rate is not one of our settings
    weights = loaded.weights()
    assert weights.keys() == tensors.keys()
    alphas = [value for key, value in weights.items() if key.endswith(".alpha")]
    assert all(alpha.dtype == torch.float32 and alpha.ndim == 0 and alpha.item() == 1.0 for alpha in alphas)


def test_a_kohya_conv_dim_file_loads_as_locon_with_per_block_ranks(comfy_dirs):
    bundle = models.FAMILIES["sd15"]()
    kohya_style_file(comfy_dirs["loras"] / "conv.safetensors", bundle, conv_dim=2, block_ranks=True)
    loaded = load("conv.safetensors", model=bundle.model)
    assert (loaded.network, loaded.rank, loaded.conv_rank, loaded.conv_alpha) == ("LoCon", 4, 2, 1.0)
    downs = {key: value for key, value in loaded.weights().items() if key.endswith("_conv1.lora_down.weight")}
    assert downs and all(value.shape[2:] == (3, 3) for value in downs.values())


def test_a_file_without_metadata_needs_the_model(comfy_dirs):
    bundle = models.FAMILIES["sd15"]()
    kohya_style_file(comfy_dirs["loras"] / "bare.safetensors", bundle, metadata=False)
    with pytest.raises(errors().LoraFileError, match="bare.safetensors .*connect the MODEL"):
        load("bare.safetensors")
    loaded = load("bare.safetensors", model=bundle.model)
    assert (loaded.family, loaded.network, loaded.rank, list(loaded.epochs)) == ("sd15", "LoRA", 4, [0])


def comfy_trainer_file(path, bundle, algorithm, seed=5):
    """A file as ComfyUI's TrainLoraNode + SaveLoRA write it: ComfyUI's own train adapters on every layer with a
    weight_function, keyed by module path, 1-D weights and biases as full `.diff`/`.diff_b` deltas, bf16."""
    from comfy.weight_adapter import adapter_maps

    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, module in bundle.model.model.named_modules():
        if not hasattr(module, "weight_function") or getattr(module, "weight", None) is None:
            continue
        if module.weight.ndim >= 2:
            adapter = adapter_maps[algorithm].create_train(module.weight, rank=4, alpha=1.0)
            for parameter_name, parameter in adapter.named_parameters():
                if parameter_name != "alpha":  # stand in for training: every factor non-zero
                    parameter.data = torch.randn(parameter.shape, generator=generator) * (0.3 if algorithm == "LoHa" else 0.1)
                tensors[f"{name}.{parameter_name}"] = parameter.detach()
        else:
            tensors[f"{name}.diff"] = torch.zeros_like(module.weight)
        if getattr(module, "bias", None) is not None:
            tensors[f"{name}.diff_b"] = torch.zeros_like(module.bias)
    safetensors.torch.save_file({key: value.to(torch.bfloat16).contiguous() for key, value in tensors.items()}, str(path))
    return tensors


@pytest.mark.parametrize("algorithm, network", [("LoRA", "LoCon"), ("LoHa", "LoHa"), ("LoKr", "LoKr")])
def test_a_comfyui_trainer_file_continues_as_the_same_adapter(comfy_dirs, algorithm, network):
    bundle = models.FAMILIES["sd15"]()
    comfy_trainer_file(comfy_dirs["loras"] / "comfy_trained.safetensors", bundle, algorithm)
    with pytest.raises(errors().LoraFileError, match="comfy_trained.safetensors .*connect the MODEL"):
        load("comfy_trained.safetensors")
    with helpers.comfy_warnings() as warnings:
        loaded = load("comfy_trained.safetensors", model=bundle.model)
    assert loaded.family == "sd15" and loaded.network == network
    assert any("bias/norm deltas" in message for message in warnings)
    names = helpers.module_names(loaded.weights())
    assert all(name.startswith("lora_unet_") for name in names)
    assert {"lora_unet_conv_in", "lora_unet_time_embedding_linear_1",
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"} <= names
    if network == "LoCon":
        assert loaded.weights()["lora_unet_conv_in.lora_down.weight"].shape == (4, 4, 3, 3)
        assert loaded.weights()["lora_unet_conv_in.lora_up.weight"].shape == (32, 4, 1, 1)
    ours = save(loaded, "continued/comfy")[0]["lora_name"]

    inputs = helpers.unet_inputs(bundle)
    outputs = []
    for lora_name in ("comfy_trained.safetensors", ours):
        fresh = models.FAMILIES["sd15"]()
        with helpers.comfy_warnings() as warnings:
            patched, _ = runtime.run_node("LoraLoader", model=fresh.model, clip=fresh.clip, lora_name=lora_name,
                                          strength_model=1.0, strength_clip=1.0)
        assert warnings == []
        outputs.append(helpers.unet_output(patched, inputs))
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-4, atol=1e-5)
    assert (outputs[0] - helpers.unet_output(models.FAMILIES["sd15"]().model, inputs)).abs().max() > 1e-2


def test_an_unreadable_file_is_named_in_the_error(comfy_dirs):
    (comfy_dirs["loras"] / "truncated.safetensors").write_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    with pytest.raises(errors().LoraFileError, match="Cannot read the LoRA file truncated.safetensors"):
        load("truncated.safetensors")


@pytest.mark.parametrize("key, message", [
    ("unet.down_blocks.0.attentions.0.proj_in.lora_A.weight", "holds peft-layout layers .* connect the MODEL"),
    ("lora_unet_down_blocks_0_attentions_0_proj_in.dora_scale", "DoRA"),
    ("lora_unet_down_blocks_0_attentions_0_proj_in.lora_mid.weight", "Tucker"),
])
def test_other_formats_are_refused_with_the_file_name(comfy_dirs, key, message):
    safetensors.torch.save_file({key: torch.zeros(4, 4)}, str(comfy_dirs["loras"] / "other.safetensors"),
                                {"ss_base_model_version": "sd_v1"})
    with pytest.raises(errors().LoraFileError, match=f"other.safetensors.*{message}"):
        load("other.safetensors")


def test_a_lora_for_another_family_is_refused(comfy_dirs):
    bundle = models.FAMILIES["sd15"]()
    lora = helpers.random_trained_lora(bundle, "LoRA")
    lora.family = "sdxl"  # the metadata then says SDXL
    saved = save(lora, "wrong/family")[0]["lora_name"]
    with pytest.raises(errors().LoraFileError, match="was trained for sdxl .*connected model is sd15"):
        load(saved, model=bundle.model)


def test_a_lora_whose_layers_do_not_fit_the_model_is_refused(comfy_dirs):
    bundle = models.FAMILIES["sd15"]()
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    safetensors.torch.save_file({f"{name}.lora_down.weight": torch.zeros(4, 1024), f"{name}.lora_up.weight": torch.zeros(32, 4),
                                 f"{name}.alpha": torch.tensor(4.0)}, str(comfy_dirs["loras"] / "sd2.safetensors"))
    with pytest.raises(errors().LoraFileError, match="sd2.safetensors: layer .*attn2_to_k makes a 32x1024 change"):
        load("sd2.safetensors", model=bundle.model)


def test_a_file_saved_again_under_the_same_name_is_read_again(comfy_dirs):
    load_lora = runtime.boot().NODE_CLASS_MAPPINGS["LoraLabLoadLoRA"]
    lora = helpers.random_trained_lora(models.FAMILIES["sd15"](), "LoRA")
    name = save(lora, "same/name")[0]["lora_name"]
    before = load_lora.IS_CHANGED(lora_name=name)
    runtime.run_node("LoraLabSaveLoRA", lora=helpers.random_trained_lora(models.FAMILIES["sd15"](), "LoRA", seed=1),
                     filename_prefix="same/name", epochs="final", dtype="fp16", overwrite=True)
    assert load_lora.IS_CHANGED(lora_name=name) != before  # ComfyUI's cache would otherwise hand out the old LoRA
