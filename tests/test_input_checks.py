"""Every number and path a client can send is checked before any work: nan and inf refused by name in every
FLOAT input, sample-prompt options bounded as Strength Sweep's widgets are, over-long paths and names refused."""
from __future__ import annotations

import math

import pytest

from harness import runtime

errors = runtime.pack("trainer.errors")
finite_inputs = runtime.pack("nodes.finite_inputs")
sampling = runtime.pack("trainer.sweep.rendering")
training_samples = runtime.pack("trainer.sweep.epoch_samples")


def every_float_input() -> list[tuple[str, str]]:
    """(node id, input) for every FLOAT input of every LoRA Lab node, read from INPUT_TYPES: new ones are covered."""
    nodes = runtime.boot()
    return [(node_id, name) for node_id, node_class in sorted(nodes.NODE_CLASS_MAPPINGS.items())
            if node_id.startswith("LoraLab") for name in finite_inputs.float_input_names(node_class)]


def test_the_float_inputs_are_found():
    found = every_float_input()
    assert ("LoraLabTrainLoRA", "unet_lr") in found and ("LoraLabStrengthSweep", "cfg") in found
    assert ("LoraLabAutoCaption", "general_threshold") in found and len(found) >= 12


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("node_id,name", every_float_input())
def test_every_float_input_refuses_nan_and_inf_by_name_before_any_work(node_id, name, value):
    # Only the bad number is given: the node must refuse it before it looks at any other input.
    with pytest.raises(errors.SettingsError, match=rf"^{name} is -?(nan|inf); it must be a finite number"):
        runtime.run_node(node_id, **{name: value})


def test_training_settings_refuse_nan_for_callers_without_a_node():
    TrainingSettings = runtime.pack("trainer.training.settings").TrainingSettings
    for name in ("unet_lr", "min_snr_gamma", "alpha", "noise_offset", "max_grad_norm"):
        with pytest.raises(errors.SettingsError, match=f"^{name} is nan"):
            TrainingSettings(**{name: math.nan})


def parsed(option: str, value: str):
    defaults = training_samples.sample_defaults(64, 7, 7.0)
    return training_samples.parse_sample_prompts(f"a cat {option} {value}", defaults)[0]


LIMITS = [  # option, accepted values (the limits themselves), refused values, what the accepted value sets
    ("--w", [str(sampling.MIN_SIZE), str(sampling.MAX_SIZE), "64"],
     [str(sampling.MIN_SIZE - 8), str(sampling.MAX_SIZE + 8), "100", "100000000", "nan", "-16"],
     lambda prompt: prompt.settings.width),
    ("--h", [str(sampling.MIN_SIZE), str(sampling.MAX_SIZE)], ["8", str(sampling.MAX_SIZE + 8), "36"],
     lambda prompt: prompt.settings.height),
    ("--s", ["1", str(sampling.MAX_STEPS)], ["0", str(sampling.MAX_STEPS + 1), "1.5"],
     lambda prompt: prompt.settings.steps),
    ("--d", ["0", str(2**64 - 1)], ["-1", str(2**64), "1" * 25, "9" * 5000],
     lambda prompt: prompt.seed),
    ("--l", ["0", "30", "7.5"], ["-0.1", "30.5", "nan", "inf", "-inf", "1e400"],
     lambda prompt: prompt.settings.cfg),
]


@pytest.mark.parametrize("option,accepted,refused,read", LIMITS, ids=[limit[0] for limit in LIMITS])
def test_each_sample_prompt_option_is_bounded_at_its_limits(option, accepted, refused, read):
    for value in accepted:
        assert read(parsed(option, value)) == (float(value) if option == "--l" else int(value))
    for value in refused:
        with pytest.raises(errors.SettingsError, match=rf"sample_prompts line 1: {option} "):
            parsed(option, value)


def test_an_over_long_dataset_path_is_refused_by_name_before_any_work():
    for path in ("x" * 100_000, "a/" * 3000, "n" * 300):
        with pytest.raises(errors.SettingsError, match="^path "):
            runtime.run_node("LoraLabLoadDataset", path=path, repeats=1, caption_extension=".txt", class_tokens="")


@pytest.mark.parametrize("node_id", ["LoraLabSaveLoRA", "LoraLabStrengthSweep"])
@pytest.mark.parametrize("prefix", ["p" * 300, "sub/" * 2000 + "name", "ｐ" * 90])  # 90 full-width = 270 bytes
def test_an_over_long_filename_prefix_is_refused_before_any_work(comfy_dirs, node_id, prefix):
    # No model, LoRA or sampler is given: the prefix must be refused before any of them is touched.
    others = (dict(dtype="fp16", overwrite=False) if node_id == "LoraLabSaveLoRA" else
              dict(model=None, clip=None, vae=None, prompts="x", negative="", strengths="1", seeds="1",
                   clip_strength_ratio=1.0, width=64, height=64, steps=2, cfg=7.0, sampler_name="euler",
                   scheduler="normal"))
    with pytest.raises(errors.SettingsError, match="^filename_prefix "):
        runtime.run_node(node_id, lora=None, filename_prefix=prefix, epochs="final", **others)
