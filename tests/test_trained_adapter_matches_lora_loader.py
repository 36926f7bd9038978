"""What Train LoRA trained is what ComfyUI's LoraLoader gives from the saved file, at full and half strength.

During training the adapters are peft modules acting on activations inside ComfyUI's module tree; Save LoRA
writes them in kohya/LyCORIS layouts that LoraLoader merges into the weights. Those are different code
paths (and the node's own MODEL/CLIP outputs are LoraLoader patches too), so the reference here is the
in-process adapter itself (trained_adapter_reference).
"""
from __future__ import annotations

import pytest
import torch

import test_lora_files_helpers as helpers
from harness import flow_models, models, runtime, training_data
from trained_adapter_reference import families, in_process_adapters, in_process_outputs, lora_loader_outputs, per_part, set_strength

# High enough that two AdamW steps move the outputs far beyond float rounding (fp32, 1 epoch of 2 images).
LEARNING_RATE = 1e-2


def assert_matches(actual: torch.Tensor, expected: torch.Tensor, label: str) -> None:
    """Equal up to float rounding, relative to the output's scale (the tolerance of test_save_lora)."""
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()), msg=label)


def assert_moved_far_beyond_error(actual: torch.Tensor, expected: torch.Tensor, base: torch.Tensor, label: str) -> None:
    """The adapter changes the output far more than the remaining error, so the comparison can catch a mistake."""
    moved, error = float((expected - base).abs().max()), float((actual - expected).abs().max())
    assert moved > 100 * error, f"{label}: the adapter moved the output by {moved:.3g}, the error is {error:.3g}"


def assert_lora_loader_reproduces(bundle, lora, lora_name: str, inputs: dict[str, torch.Tensor]) -> None:
    """LoraLoader on the saved diffusion-model file gives what the in-process adapter gives, at full and half
    strength, and both are far from the base model's output."""
    base = helpers.unet_output(bundle.model, inputs)
    unet, _ = in_process_adapters(bundle, lora)
    for strength in (1.0, 0.5):
        set_strength(unet, strength)
        trained = in_process_outputs(bundle, unet, None, inputs)[0]
        loaded = lora_loader_outputs(bundle, lora_name, strength, inputs)[0]
        label = f"LoraLoader vs the trained adapter at strength {strength}"
        assert_matches(loaded, trained, label)
        assert_moved_far_beyond_error(loaded, trained, base, label)


@pytest.fixture
def fp32_text_encoders(monkeypatch):
    """Text encoders load in fp32, as with ComfyUI's --fp32-text-enc.

    By default ComfyUI stores text-encoder weights in fp16, and LoraLoader merges the delta into them: the
    merged weights are then rounded to fp16 (about 5e-4 relative), which the in-process adapter, adding its
    fp32 delta to the activations, never is. In fp32 both sides are exact up to fp32 rounding, so a tight
    tolerance checks the file's format and scales, not the storage precision.
    """
    import comfy.cli_args

    monkeypatch.setattr(comfy.cli_args.args, "fp32_text_enc", True)


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
@pytest.mark.parametrize("network", helpers.NETWORKS)
def test_lora_loader_reproduces_the_trained_adapter(comfy_dirs, fp32_text_encoders, tmp_path, family, network):
    bundle = models.FAMILIES[family]()
    assert {parameter.dtype for parameter in bundle.clip.cond_stage_model.parameters()} == {torch.float32}
    inputs = helpers.unet_inputs(bundle)
    base = helpers.unet_output(bundle.model, inputs), helpers.clip_output(bundle.clip)
    dataset = training_data.captioned_shapes(tmp_path / "data", count=2)
    model_out, clip_out, lora, _, _ = runtime.run_node("LoraLabTrainLoRA", **training_data.node_inputs(
        bundle, dataset, network=network, epochs=1, unet_lr=LEARNING_RATE, text_encoder_lr=LEARNING_RATE,
        keep_training_state=True))  # its exact peft tensors are read back from the state below
    for prefix in families.BY_NAME[family].text_encoder_prefixes.values():  # lora_te, or lora_te1 and lora_te2
        assert any(key.startswith(f"{prefix}_") for key in lora.weights()), f"no {prefix} adapters were trained"
    after_training = helpers.unet_output(bundle.model, inputs), helpers.clip_output(bundle.clip)
    for before, after in zip(base, after_training):
        assert torch.equal(before, after), "training changed the graph's own MODEL/CLIP"

    saved = runtime.run_node("LoraLabSaveLoRA", lora=lora, filename_prefix=f"loralab/{network}", epochs="final",
                             dtype="fp32", overwrite=False)
    lora_name = saved.ui["loras"][0]["lora_name"]
    unet, text = in_process_adapters(bundle, lora)
    base_parts = per_part(bundle, *base)
    node_parts = per_part(bundle, helpers.unet_output(model_out, inputs), helpers.clip_output(clip_out))
    for strength in (1.0, 0.5):
        set_strength(unet, strength)
        set_strength(text, strength)
        trained = per_part(bundle, *in_process_outputs(bundle, unet, text, inputs))
        loaded = per_part(bundle, *lora_loader_outputs(bundle, lora_name, strength, inputs))
        sources = {"LoraLoader": loaded} | ({"Train LoRA's outputs": node_parts} if strength == 1.0 else {})
        for source, parts in sources.items():
            for part, expected in trained.items():
                label = f"{source} vs the trained adapter, {part} at strength {strength}"
                assert_matches(parts[part], expected, label)
                assert_moved_far_beyond_error(parts[part], expected, base_parts[part], label)

    for before, after in zip(base, (helpers.unet_output(bundle.model, inputs), helpers.clip_output(bundle.clip))):
        assert torch.equal(before, after), "the comparisons left adapters in the graph's MODEL/CLIP"


@pytest.mark.parametrize("network", helpers.NETWORKS)
def test_lora_loader_reproduces_the_trained_flux_adapter(comfy_dirs, tmp_path, network):
    """The same on Flux dev: adapters on every Linear of the double and single blocks, kohya's Flux names, fused
    qkv layers; the guidance embedding and pooled CLIP-L vector go in as a Flux graph gives them."""
    bundle = flow_models.tiny_flux_dev()
    inputs = helpers.unet_inputs(bundle)
    base = helpers.unet_output(bundle.model, inputs)
    dataset = training_data.captioned_shapes(tmp_path / "data", count=2)
    model_out, _, lora, _, _ = runtime.run_node("LoraLabTrainLoRA", **training_data.node_inputs(
        bundle, dataset, network=network, epochs=2, unet_lr=LEARNING_RATE, keep_training_state=True))
    # (two epochs: LoHa and LoKr products start at zero and move the output slowly at first)
    saved = runtime.run_node("LoraLabSaveLoRA", lora=lora, filename_prefix=f"flux/{network}", epochs="final",
                             dtype="fp32", overwrite=False)
    lora_name = saved.ui["loras"][0]["lora_name"]
    unet, _ = in_process_adapters(bundle, lora)
    for strength in (1.0, 0.5):
        set_strength(unet, strength)
        trained = in_process_outputs(bundle, unet, None, inputs)[0]
        loaded = lora_loader_outputs(bundle, lora_name, strength, inputs)[0]
        sources = {"LoraLoader": loaded} | ({"Train LoRA's output": helpers.unet_output(model_out, inputs)} if strength == 1.0 else {})
        for source, output in sources.items():
            label = f"{source} vs the trained Flux adapter at strength {strength}"
            assert_matches(output, trained, label)
            assert_moved_far_beyond_error(output, trained, base, label)
    assert torch.equal(helpers.unet_output(bundle.model, inputs), base), "the comparisons left adapters in the graph's MODEL"
