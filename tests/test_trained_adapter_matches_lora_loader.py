"""What Train LoRA trained is what ComfyUI's LoraLoader gives from the saved file, at full and half strength.

During training the adapters are peft modules acting on activations inside ComfyUI's module tree; Save LoRA
writes them in kohya/LyCORIS layouts that LoraLoader merges into the weights. The two are different code
paths (and the node's own MODEL/CLIP outputs are LoraLoader patches too), so the reference here is the
in-process adapter itself: rebuilt with the trainer's own functions from the run's exact peft tensors (its
resumable state), injected into the graph's model as training injects it, and scaled with peft's per-layer
scale for strength 0.5.
"""
from __future__ import annotations

import contextlib
import pathlib
from typing import Any, Iterator

import pytest
import torch

import test_lora_files_helpers as helpers
from harness import models, runtime, training_data

adapters_module = runtime.pack("trainer.adapters")
families = runtime.pack("trainer.families")
kohya_names = runtime.pack("trainer.kohya_names")
run_state = runtime.pack("trainer.run_state")
session = runtime.pack("trainer.session")
targets = runtime.pack("trainer.targets")
TrainingSettings = runtime.pack("trainer.settings").TrainingSettings

# High enough that two AdamW steps move the outputs far beyond float rounding (fp32, 1 epoch of 2 images).
LEARNING_RATE = 1e-2


def assert_matches(actual: torch.Tensor, expected: torch.Tensor, label: str) -> None:
    """Equal up to float rounding, relative to the output's scale (the tolerance of test_save_lora)."""
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()), msg=label)


def assert_moved_far_beyond_error(actual: torch.Tensor, expected: torch.Tensor, base: torch.Tensor, label: str) -> None:
    """The adapter changes the output far more than the remaining error, so the comparison can catch a mistake."""
    moved, error = float((expected - base).abs().max()), float((actual - expected).abs().max())
    assert moved > 100 * error, f"{label}: the adapter moved the output by {moved:.3g}, the error is {error:.3g}"


def in_process_adapters(bundle: Any, lora: Any) -> tuple[Any, Any]:
    """The run's UNet and text-encoder adapters, built as the trainer builds them, holding its exact final tensors."""
    settings = TrainingSettings(**lora.settings)
    family = families.BY_NAME[lora.family]

    def build(part_targets: list, names: dict[str, str], root: torch.nn.Module) -> Any:
        return adapters_module.create_adapters(part_targets, names, root, settings.network, settings.rank,
                                               settings.network_alpha, settings.conv_rank, settings.network_conv_alpha)

    diffusion_model = bundle.model.model.diffusion_model
    unet_targets = targets.unet_targets(diffusion_model, include_convs=settings.trains_convs)
    unet = build(unet_targets, kohya_names.unet_names(bundle.model.model.model_config.unet_config, family,
                                                      [target.path for target in unet_targets]), diffusion_model)
    encoder = bundle.clip.cond_stage_model
    text_targets = targets.text_encoder_targets(encoder, family.text_encoder_prefixes, family.text_encoder_layers)
    text = build(text_targets, {target.path: kohya_names.text_encoder_name(target.path, family) for target in text_targets},
                 encoder)
    trained = run_state.load_run_state(pathlib.Path(lora.state_dir)).adapters
    assert trained.keys() == unet.raw_state().keys() | text.raw_state().keys()
    unet.load_raw_state(trained)
    text.load_raw_state(trained)
    return unet, text


def set_strength(adapter_set: Any, strength: float) -> None:
    """peft's per-layer scale: strength x alpha/rank, as LoraLoader's strength scales the whole delta."""
    for slot in adapter_set.slots:
        slot.wrapper.set_scale(adapters_module.ADAPTER, strength)


@contextlib.contextmanager
def injected(patcher: Any, root: torch.nn.Module, adapter_set: Any, out_of_place_clip: bool) -> Iterator[None]:
    """The adapters in the module tree exactly as training puts them there (a patcher injection), removed afterwards."""
    import comfy.model_management as mm

    part = session.PartInjection(root, adapter_set, [], out_of_place_clip, mm.get_torch_device())
    session.inject(patcher, part)
    mm.load_models_gpu([patcher], force_full_load=True)
    try:
        yield
    finally:
        session.unload(patcher)


def in_process_outputs(bundle: Any, unet: Any, text: Any, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    model = session.isolated_clone(bundle.model)
    with injected(model, model.model.diffusion_model, unet, out_of_place_clip=False):
        unet_output = helpers.unet_forward(model, inputs)
    clip = bundle.clip.clone()
    with injected(clip.patcher, clip.cond_stage_model, text, out_of_place_clip=True):
        clip_output = helpers.clip_encode(clip)
    return unet_output, clip_output


def per_part(bundle: Any, unet_output: torch.Tensor, clip_output: torch.Tensor) -> dict[str, torch.Tensor]:
    """The UNet output and each text encoder's columns of the conditioning (SDXL concatenates clip_l and clip_g),
    so an encoder whose adapters were lost or mis-scaled cannot hide behind the other's larger values."""
    family = families.BY_NAME[bundle.family]
    encoder = bundle.clip.cond_stage_model
    widths = [getattr(encoder, name).transformer.get_input_embeddings().embedding_dim for name in family.text_encoder_prefixes]
    assert sum(widths) == clip_output.shape[-1]
    columns = torch.split(clip_output, widths, dim=-1)
    return {"unet": unet_output, **dict(zip(family.text_encoder_prefixes.values(), columns))}


def lora_loader_outputs(bundle: Any, lora_name: str, strength: float,
                        inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    with helpers.comfy_warnings() as warnings:
        model, clip = runtime.run_node("LoraLoader", model=bundle.model, clip=bundle.clip, lora_name=lora_name,
                                       strength_model=strength, strength_clip=strength)
    assert warnings == [], warnings  # e.g. "lora key not loaded: ..." or "ERROR lora ..."
    return helpers.unet_output(model, inputs), helpers.clip_output(clip)


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
