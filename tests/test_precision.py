"""mixed_precision `auto` (the default) picks what the device computes natively, says so, and records the choice;
explicit choices and saved workflows keep working, and a resume compares the setting as it was given."""
from __future__ import annotations

import logging

import pytest

from harness import models, runtime, training_data

errors = runtime.pack("trainer.errors")
lora_io = runtime.pack("trainer.files.lora_io")
node_inputs = training_data.node_inputs


@pytest.fixture
def sd15():
    return models.FAMILIES["sd15"]()


def test_auto_is_the_default_and_the_explicit_choices_remain():
    choices, options = runtime.boot().NODE_CLASS_MAPPINGS["LoraLabTrainLoRA"].INPUT_TYPES()["required"]["mixed_precision"]
    assert options["default"] == "auto" and set(choices) == {"auto", "bf16", "fp16", "fp32"}
    assert runtime.pack("trainer.training.settings").TrainingSettings().mixed_precision == "auto"


@pytest.mark.parametrize("requested,said,resolved", [
    ("auto", "mixed_precision auto: fp32 on the CPU", "fp32"),
    ("bf16", "mixed_precision bf16 as set (on a CPU it is emulated and usually several times slower than fp32", "bf16"),
])
def test_the_choice_is_said_at_the_start_and_recorded_in_the_file(sd15, tmp_path, comfy_dirs, caplog, requested, said,
                                                                   resolved):
    dataset = training_data.captioned_shapes(tmp_path / "data", count=2)
    with caplog.at_level(logging.INFO):
        lora = runtime.run_node("LoraLabTrainLoRA", **node_inputs(sd15, dataset, epochs=1, mixed_precision=requested))[2]
    assert said in caplog.text
    saved = runtime.run_node("LoraLabSaveLoRA", lora=lora, filename_prefix=requested, epochs="final", dtype="fp16",
                             overwrite=False)[0]
    assert lora_io.read_lora_file(saved)[1]["ss_mixed_precision"] == resolved


def test_a_resume_compares_the_setting_as_given(sd15, tmp_path, comfy_dirs):
    dataset = training_data.captioned_shapes(tmp_path / "data", count=2)
    first = runtime.run_node("LoraLabTrainLoRA", **node_inputs(sd15, dataset, epochs=1, mixed_precision="auto",
                                                               keep_training_state=True))[2]
    with pytest.raises(errors.SettingsError, match=r"different settings \(mixed_precision\)"):
        runtime.run_node("LoraLabTrainLoRA", **node_inputs(sd15, dataset, epochs=2, mixed_precision="fp32",
                                                           resume_from=first.state_dir))
    resumed = runtime.run_node("LoraLabTrainLoRA", **node_inputs(sd15, dataset, epochs=2, mixed_precision="auto",
                                                                 resume_from=first.state_dir))[2]
    assert sorted(resumed.epochs) == [1, 2]
