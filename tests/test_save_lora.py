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


def assert_matches(actual, expected):
    """Equal up to float rounding, relative to the output's scale (the same weights, patched in another order)."""
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def assert_layers_patched(bundle, base_weights, weights, strength, include_convs):
    """Every adapted layer's weight is the base weight plus strength x the format's delta: none dropped or mis-scaled."""
    layers = {layer.name: layer for layer in helpers.adapter_layers(bundle, include_convs)}
    assert layers.keys() == helpers.module_names(weights)
    for name, layer in layers.items():
        weight = layer.module.weight.detach().double()
        expected = strength * helpers.reference_delta(weights, name, weight.shape)
        assert expected.abs().max() > 1e-3, name
        rounding = 4 * torch.finfo(layer.module.weight.dtype).eps * float(weight.abs().max())
        torch.testing.assert_close(weight - base_weights[name], expected, rtol=1e-4, atol=rounding, msg=name)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("network", helpers.NETWORKS)
def test_lora_loader_applies_saved_file_exactly_like_the_adapter(comfy_dirs, family, network):
    include_convs = network != "LoRA"
    lora = helpers.random_trained_lora(models.FAMILIES[family](), network)
    weights = lora.weights()
    result = save(lora, prefix=f"loralab/{network}", dtype="fp32")
    lora_name = result.ui["loras"][0]["lora_name"]

    base = models.FAMILIES[family]()
    base_weights = {layer.name: layer.module.weight.detach().double().clone()
                    for layer in helpers.adapter_layers(base, include_convs)}
    inputs = helpers.unet_inputs(base)
    base_unet, base_clip = helpers.unet_output(base.model, inputs), helpers.clip_output(base.clip)
    for strength in (1.0, 0.5):
        bundle = models.FAMILIES[family]()
        model, clip, warnings = apply_with_lora_loader(bundle, lora_name, strength, strength)
        assert warnings == [], warnings  # e.g. "lora key not loaded: ..." or "ERROR lora ..."
        with helpers.patches_applied(model, clip.patcher):
            assert_layers_patched(bundle, base_weights, weights, strength, include_convs)
            patched_unet, patched_clip = helpers.unet_forward(model, inputs), helpers.clip_encode(clip)

        reference = models.FAMILIES[family]()
        helpers.apply_reference(reference, weights, strength, strength, include_convs)
        for patched, expected, original in ((patched_unet, helpers.unet_output(reference.model, inputs), base_unet),
                                            (patched_clip, helpers.clip_output(reference.clip), base_clip)):
            assert_matches(patched, expected)
            # The adapter moves the output far more than the remaining error, so the comparison can catch a mistake.
            assert (patched - original).abs().max() > 10 * (patched - expected).abs().max()
