"""Save LoRA writes files ComfyUI's own LoraLoader applies exactly, for every network type and family fixture."""
from __future__ import annotations

import pytest
import torch

import test_lora_files_helpers as helpers
from harness import models, runtime

FAMILIES = sorted(models.FAMILIES)


def save(lora, prefix="loralab/test", epochs="final", dtype="fp32", overwrite=False):
    return runtime.run_node("LoraLabSaveLoRA", lora=lora, filename_prefix=prefix, epochs=epochs, dtype=dtype,
                            overwrite=overwrite)


def apply_with_lora_loader(bundle, lora_name, strength_model, strength_clip):
    with helpers.comfy_warnings() as warnings:
        model, clip = runtime.run_node("LoraLoader", model=bundle.model, clip=bundle.clip, lora_name=lora_name,
                                       strength_model=strength_model, strength_clip=strength_clip)
    return model, clip, warnings


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("network", helpers.NETWORKS)
def test_lora_loader_applies_saved_file_exactly_like_the_adapter(comfy_dirs, family, network):
    lora = helpers.random_trained_lora(models.FAMILIES[family](), network)
    weights = lora.weights()
    result = save(lora, prefix=f"loralab/{network}")
    lora_name = result.ui["loras"][0]["lora_name"]

    base = models.FAMILIES[family]()
    inputs = helpers.unet_inputs(base)
    base_unet, base_clip = helpers.unet_output(base.model, inputs), helpers.clip_output(base.clip)[0]
    for strength in (1.0, 0.5):
        bundle = models.FAMILIES[family]()
        model, clip, warnings = apply_with_lora_loader(bundle, lora_name, strength, strength)
        assert warnings == [], warnings  # e.g. "lora key not loaded: ..." or "ERROR lora ..."
        patched_unet, patched_clip = helpers.unet_output(model, inputs), helpers.clip_output(clip)[0]

        reference = models.FAMILIES[family]()
        helpers.apply_reference(reference, weights, strength, strength, include_convs=network != "LoRA")
        expected_unet, expected_clip = helpers.unet_output(reference.model, inputs), helpers.clip_output(reference.clip)[0]

        torch.testing.assert_close(patched_unet, expected_unet, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(patched_clip, expected_clip, rtol=1e-4, atol=1e-5)
        # The adapter visibly changes both models, so a dropped or mis-scaled layer cannot pass.
        assert (patched_unet - base_unet).abs().max() > 1e-2
        assert (patched_clip - base_clip).abs().max() > 1e-2
