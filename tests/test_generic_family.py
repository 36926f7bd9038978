"""The generic path: a model ComfyUI samples that LoRA Lab's family table does not name (PixArt Sigma) trains
through the real nodes on its transformer blocks' linears, says so with the defaults it used, and writes
ComfyUI's own key names, which LoraLoader maps for every model; a model that needs inputs a dataset cannot give
(an inpainting UNet) is refused by name before training.
"""
from __future__ import annotations

import pytest
import safetensors.torch
import torch

import test_lora_files_helpers as helpers
from harness import generic_models, runtime, training_data

families = runtime.pack("trainer.models.families")
errors = runtime.pack("trainer.errors")


@pytest.fixture(scope="module")
def pixart():
    return generic_models.tiny_pixart_sigma()


@pytest.fixture
def dataset(tmp_path):
    return training_data.captioned_shapes(tmp_path / "data", count=2)


def test_a_model_outside_the_table_gets_the_generic_family(pixart):
    family = families.detect_family(pixart.model)
    assert family.name == "comfyui:PixArtSigma:eps"
    assert (family.unet_naming, family.text_encoder_prefixes, family.prediction_type) == ("comfy", {}, "eps")
    assert families.family_named(family.name) == family  # a saved file's family name rebuilds it


def test_the_generic_path_trains_says_so_and_loraloader_loads_every_key(pixart, dataset, comfy_dirs):
    # PixArt sizes its position table from the latent size and needs images of 384 px or more.
    inputs = training_data.node_inputs(pixart, dataset, epochs=2, unet_lr=1e-2, resolution=384)
    with helpers.comfy_warnings() as warnings:
        lora = runtime.run_node("LoraLabTrainLoRA", **inputs)[2]
    notice = [message for message in warnings if "not in LoRA Lab's family table" in message]
    assert notice and "PixArtSigma" in notice[0] and "1024" in notice[0], warnings
    names = helpers.module_names(lora.weights())
    assert names and all(name.startswith("lora_unet_blocks_") for name in names)
    assert {"attn_qkv", "cross_attn_q_linear", "mlp_fc1"} <= {name.split("_", 4)[-1] for name in names}
    assert all(torch.isfinite(torch.tensor(epoch.train_loss)) for epoch in lora.epochs.values())

    saved = runtime.run_node("LoraLabSaveLoRA", lora=lora, filename_prefix="pixart/style", epochs="final",
                             dtype="fp32", overwrite=False).ui["loras"][0]
    with safetensors.safe_open(saved["path"], "pt") as handle:
        metadata, keys = handle.metadata(), set(handle.keys())
    assert keys == set(lora.weights()) and metadata["ss_base_model_version"] == "comfyui:PixArtSigma"
    with helpers.comfy_warnings() as warnings:
        patched = runtime.run_node("LoraLoaderModelOnly", model=pixart.model, lora_name=saved["lora_name"],
                                   strength_model=1.0)[0]
    assert not [message for message in warnings if "lora key not loaded" in message], warnings
    assert len(patched.patches) == len(names)  # one weight patch per trained layer
    assert runtime.run_node("LoraLabLoadLoRA", lora_name=saved["lora_name"], model=pixart.model)[0].family == lora.family


def test_a_model_that_needs_a_mask_and_masked_image_is_refused_before_training(dataset, comfy_dirs):
    inpainting = generic_models.tiny_sd15_inpainting()
    with pytest.raises(errors.SettingsError, match=r"SD15\) needs a mask and masked image.*Load Dataset cannot give"):
        runtime.run_node("LoraLabTrainLoRA", **training_data.node_inputs(inpainting, dataset, epochs=1))
