"""What only HiDream I1 has, beyond its row in test_dit_families: ai-toolkit writes its files with ComfyUI's
`diffusion_model.` prefix (SimpleTuner's `transformer.` is the shared row's), and on the released 17B the layer
rule finds what ai-toolkit trains, none of the routed MoE experts."""
from __future__ import annotations

import dataclasses
import re

import pytest

import test_dit_families as shared
from harness import hidream, runtime
from test_dit_families import dataset  # noqa: F401 (the shared fixture)

families = runtime.pack("trainer.models.families")
targets = runtime.pack("trainer.models.targets")


@pytest.fixture(scope="module")
def family():
    expected = dataclasses.replace(shared.FAMILIES["hidream_i1"], peft_prefix="diffusion_model.")
    return "hidream_i1", expected, expected.fixture()


def test_load_lora_reads_ai_toolkits_diffusion_model_files(family, dataset, comfy_dirs):
    """ai-toolkit renames `transformer.` to `diffusion_model.` before saving (hidream_model.py,
    convert_lora_weights_before_save); those files are the same change as LoRA Lab's own."""
    shared.test_load_lora_reads_the_familys_peft_layout_files_as_the_same_change(family, dataset, comfy_dirs)


def test_the_released_model_gets_ai_toolkits_layers():
    """16 double-stream blocks with 15 adapted linears (q/k/v/out of both streams, the modulation, the shared
    experts' and the text feed-forward's three each) and 32 single-stream blocks with 8; no routed expert."""
    family = families.HIDREAM_I1
    model = hidream.full_size_hidream_on_meta().diffusion_model
    paths = [target.path for target in targets.unet_targets(model, False, family.adapter_blocks, family.adapter_exclude)]
    per_block: dict[str, int] = {}
    for path in paths:
        block = re.match(r"(double|single)_stream_blocks\.\d+\.", path)
        assert block, path
        per_block[block[0]] = per_block.get(block[0], 0) + 1
    assert sorted(set(per_block.values())) == [8, 15] and len(per_block) == 16 + 32
    assert not [path for path in paths if ".ff_i.experts." in path or "gate" in path]
    assert sum(path.endswith("adaLN_modulation.1") for path in paths) == 48
