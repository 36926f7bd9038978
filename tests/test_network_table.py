"""A network type is one entry in the network table: a made-up one trains, saves and loads like the built-in ones.

The test adds a LoRA variant with Gaussian-initialised down weights to trainer/training/networks.py's table and
changes nothing else: Train LoRA offers it, trains it, Save LoRA writes it, ComfyUI's LoraLoader reproduces
the trained adapter from the file, and Load LoRA reads its weights back (as a LoRA: the file layout is LoRA's, and
the variant's initialisation no longer matters once trained).
"""
from __future__ import annotations

import peft
import torch

from harness import models, runtime, training_data
from test_trained_adapter_matches_lora_loader import LEARNING_RATE, assert_matches, fp32_text_encoders  # noqa: F401
from trained_adapter_reference import in_process_adapters, in_process_outputs, lora_loader_outputs, per_part
import test_lora_files_helpers as helpers

networks = runtime.pack("trainer.training.networks")
layouts = runtime.pack("trainer.files.network_layouts")
NAME = "LoRA-gaussian"


def test_a_network_added_to_the_table_trains_saves_and_loads(comfy_dirs, fp32_text_encoders, tmp_path, monkeypatch):
    built = []

    def gaussian_lora(rank: int, alpha: float, names: list[str]) -> peft.PeftConfig:
        built.append(rank)
        return peft.LoraConfig(r=rank, lora_alpha=alpha, target_modules=names, lora_dropout=0.0,
                               init_lora_weights="gaussian")

    monkeypatch.setitem(networks.NETWORKS, NAME, networks.Network(NAME, gaussian_lora, False, layouts.LORA,
                                                                 networks.KOHYA_LORA_MODULE))
    train_lora = runtime.boot().NODE_CLASS_MAPPINGS["LoraLabTrainLoRA"]
    assert NAME in train_lora.INPUT_TYPES()["required"]["network"][0]

    bundle = models.FAMILIES["sd15"]()
    inputs = helpers.unet_inputs(bundle)
    dataset = training_data.captioned_shapes(tmp_path / "data", count=2)
    _, _, lora, _, _ = runtime.run_node("LoraLabTrainLoRA", **training_data.node_inputs(
        bundle, dataset, network=NAME, epochs=1, unet_lr=LEARNING_RATE, text_encoder_lr=LEARNING_RATE,
        keep_training_state=True))
    assert lora.network == NAME and built, "the table entry's peft config built the adapters"

    saved = runtime.run_node("LoraLabSaveLoRA", lora=lora, filename_prefix="loralab/made_up", epochs="final",
                             dtype="fp32", overwrite=False)
    lora_name = saved.ui["loras"][0]["lora_name"]
    unet, text = in_process_adapters(bundle, lora)
    trained = per_part(bundle, *in_process_outputs(bundle, unet, text, inputs))
    loaded_outputs = per_part(bundle, *lora_loader_outputs(bundle, lora_name, 1.0, inputs))
    for part, expected in trained.items():
        assert_matches(loaded_outputs[part], expected, f"LoraLoader vs the trained {NAME} adapter, {part}")

    loaded = runtime.run_node("LoraLabLoadLoRA", lora_name=lora_name)[0]
    assert (loaded.network, loaded.rank) == ("LoRA", lora.rank)
    for key, value in lora.weights().items():
        assert torch.equal(loaded.weights()[key], value), key
