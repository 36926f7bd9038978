"""kohya configs as node inputs: every key of the table changes what it says it changes, checked keys refuse other
values by name, ignored keys are named in a note, unknown keys are refused, and the public guide's config and
kohya's dataset config format convert as kohya means them."""
from __future__ import annotations

import pathlib

import pytest

from loralab_cli.kohya_config import convert, load_run, parse_flags, read_dataset_config
from loralab_cli.kohya_keys import COMMAND, DATASET, KOHYA_KEYS, SAVE, TRAIN, KohyaConfigError, Value

FIXTURES = pathlib.Path("/work/shared/fixtures/kohya")
BASE = {"pretrained_model_name_or_path": "model.safetensors", "train_data_dir": "data", "max_train_epochs": 3}


def settings(**values) -> dict[str, Value]:
    """BASE with `values` (None leaves a key out), as read from a test.toml's [training] section."""
    return {key: Value(value, "test.toml [training]") for key, value in {**BASE, **values}.items() if value is not None}


class InWorkingFolder(str):
    """A path as kohya reads it: relative to the folder the command runs in (the test's tmp_path)."""


def absolute(path: str) -> InWorkingFolder:
    return InWorkingFolder(path)


def resolved(expected: dict, folder: pathlib.Path) -> dict:
    return {target: str(folder / value) if isinstance(value, InWorkingFolder) else value
            for target, value in expected.items()}


# key: (value, {(node, input): expected}); every Train LoRA / Load Dataset / Save LoRA / command target has one.
SETTING_EXAMPLES = {
    "pretrained_model_name_or_path": ("other.safetensors", {(COMMAND, "checkpoint"): absolute("other.safetensors")}),
    "vae": ("vae.safetensors", {(COMMAND, "vae"): absolute("vae.safetensors")}),
    "v2": (True, {(COMMAND, "v2"): True}),
    "v_parameterization": (True, {(COMMAND, "v_parameterization"): True}),
    "train_data_dir": ("elsewhere", {(DATASET, "path"): absolute("elsewhere")}),
    "reg_data_dir": ("reg", {(DATASET, "regularization_path"): absolute("reg")}),
    "image_dir": ("images", {(DATASET, "path"): absolute("images")}),
    "reg_image_dir": ("reg", {(DATASET, "regularization_path"): absolute("reg")}),
    "num_repeats": (5, {(DATASET, "repeats"): 5}),
    "class_tokens": ("sks dog", {(DATASET, "class_tokens"): "sks dog"}),
    "resolution": ("768,768", {(TRAIN, "resolution"): 768, (DATASET, "base_resolution"): 768}),
    "train_batch_size": (4, {(TRAIN, "batch_size"): 4, (DATASET, "batch_size"): 4}),
    "batch_size": (3, {(TRAIN, "batch_size"): 3, (DATASET, "batch_size"): 3}),
    "caption_extension": (".txt", {(DATASET, "caption_extension"): ".txt"}),
    "keep_tokens": (2, {(TRAIN, "keep_tokens"): 2}),
    "shuffle_caption": (True, {(TRAIN, "caption_shuffle"): True}),
    "caption_dropout_rate": (0.1, {(TRAIN, "caption_dropout"): 0.1}),
    "flip_aug": (True, {(TRAIN, "flip_augment"): True}),
    "validation_split": (0.2, {(TRAIN, "validation_split"): 0.2}),
    "network_module": ("lycoris.kohya", {(TRAIN, "network"): "LoCon"}),
    "network_args": (["conv_dim=4", "conv_alpha=2"], {(TRAIN, "network"): "LoCon", (TRAIN, "conv_rank"): 4,
                                                      (TRAIN, "conv_alpha"): 2.0}),
    "network_dim": (32, {(TRAIN, "rank"): 32}),
    "network_alpha": (16, {(TRAIN, "alpha"): 16.0}),
    "learning_rate": (1e-4, {(TRAIN, "unet_lr"): 1e-4, (TRAIN, "text_encoder_lr"): 1e-4}),
    "unet_lr": (3e-4, {(TRAIN, "unet_lr"): 3e-4}),
    "text_encoder_lr": ([5e-5, 1e-5], {(TRAIN, "text_encoder_lr"): 5e-5}),
    "network_train_unet_only": (True, {(TRAIN, "text_encoder_lr"): 0.0}),
    "network_train_text_encoder_only": (True, {(TRAIN, "unet_lr"): 0.0}),
    "optimizer_type": ("adamw8bit", {(TRAIN, "optimizer"): "AdamW8bit"}),
    "lr_scheduler": ("cosine", {(TRAIN, "lr_scheduler"): "cosine"}),
    "lr_warmup_steps": (10, {(TRAIN, "warmup_steps"): 10}),
    "max_train_epochs": (7, {(TRAIN, "epochs"): 7, (DATASET, "epochs"): 7}),
    "gradient_accumulation_steps": (2, {(TRAIN, "gradient_accumulation"): 2}),
    "gradient_checkpointing": (False, {(TRAIN, "gradient_checkpointing"): False}),
    "mixed_precision": ("bf16", {(TRAIN, "mixed_precision"): "bf16"}),
    "seed": (7, {(TRAIN, "seed"): 7}),
    "noise_offset": (0.05, {(TRAIN, "noise_offset"): 0.05}),
    "min_snr_gamma": (5, {(TRAIN, "min_snr_gamma"): 5.0}),
    "output_dir": ("out", {(COMMAND, "output_dir"): absolute("out")}),
    "output_name": ("cat", {(SAVE, "filename_prefix"): "cat"}),
    "save_precision": ("fp16", {(SAVE, "dtype"): "fp16"}),
    "save_every_n_epochs": (2, {(TRAIN, "save_every_n_epochs"): 2, (SAVE, "epochs"): "all"}),
    "save_state": (True, {(TRAIN, "keep_training_state"): True}),
    "resume": ("20261202-101010-seed42", {(TRAIN, "resume_from"): "20261202-101010-seed42"}),
    "sample_every_n_epochs": (1, {(TRAIN, "sample_every_n_epochs"): 1}),
    "sample_prompts": ("PROMPTS", {(TRAIN, "sample_prompts"): "sks dog --w 64 --h 64\n"}),
}
# key: a value LoRA Lab cannot train (each is refused naming the key); the accepted value passes.
REFUSED_EXAMPLES = {
    "enable_bucket": (False, True), "min_bucket_reso": (128, 256), "max_bucket_reso": (2048, 1024),
    "bucket_reso_steps": (32, 64), "bucket_no_upscale": (True, False), "color_aug": (True, False),
    "random_crop": (True, False), "optimizer_args": (["weight_decay=0.1"], []), "lr_scheduler_num_cycles": (3, 1),
    "lr_scheduler_power": (2.0, 1.0), "full_fp16": (True, False), "full_bf16": (True, False),
    "max_grad_norm": (0.5, 1.0), "clip_skip": (2, 1), "max_token_length": (225, 75), "prior_loss_weight": (0.5, 1.0),
    "loss_type": ("huber", "l2"), "save_model_as": ("ckpt", "safetensors"),
}
IGNORED = [name for name, key in KOHYA_KEYS.items() if key.target == "(ignored)"]


def test_every_key_of_the_table_is_tested_here():
    tested = set(SETTING_EXAMPLES) | set(REFUSED_EXAMPLES) | set(IGNORED) | {"max_train_steps"}
    assert set(KOHYA_KEYS) == tested, f"untested: {set(KOHYA_KEYS) - tested}; unknown: {tested - set(KOHYA_KEYS)}"


@pytest.mark.parametrize("key", sorted(SETTING_EXAMPLES))
def test_each_key_changes_the_input_it_names(key, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    value, expected = SETTING_EXAMPLES[key]
    if value == "PROMPTS":
        (tmp_path / "prompts.txt").write_text("sks dog --w 64 --h 64\n", encoding="utf-8")
        value = "prompts.txt"
    before = convert(settings(), "test").inputs
    after = convert(settings(**{key: value}), "test").inputs
    changed = {target: after[target] for target in after if after[target] != before.get(target)}
    assert changed == resolved(expected, tmp_path)
    target = KOHYA_KEYS[key].target  # the README's column names what the test saw change
    assert all(target.startswith(COMMAND) if node == COMMAND else name in target for node, name in expected), target


@pytest.mark.parametrize("key", sorted(REFUSED_EXAMPLES))
def test_a_value_lora_lab_cannot_train_is_refused_by_name(key):
    refused, accepted = REFUSED_EXAMPLES[key]
    with pytest.raises(KohyaConfigError) as error:
        convert(settings(**{key: refused}), "test")
    assert f"{key} (test.toml [training])" in str(error.value)
    assert convert(settings(**{key: accepted}), "test").inputs == convert(settings(), "test").inputs


@pytest.mark.parametrize("key", IGNORED)
def test_a_key_that_cannot_change_the_result_is_named_and_ignored(key):
    run = convert(settings(**{key: True}), "test")
    assert any(note.startswith(f"{key} (test.toml [training]) is ignored") for note in run.notes)
    assert run.inputs == convert(settings(), "test").inputs


def test_max_train_steps_is_refused_unless_max_train_epochs_wins_as_in_kohya():
    with pytest.raises(KohyaConfigError, match=r"max_train_steps \(test.toml \[training\]\): LoRA Lab counts training in "
                                               "epochs; set max_train_epochs"):
        convert(settings(max_train_epochs=None, max_train_steps=100), "test")
    run = convert(settings(max_train_steps=100), "test")
    assert run.get(TRAIN, "epochs") == 3 and any("max_train_epochs is set and wins" in note for note in run.notes)


def test_absent_keys_take_kohya_defaults_where_they_differ_from_the_nodes():
    run = convert(settings(), "test")
    assert run.node_inputs(TRAIN).items() >= {"alpha": 1.0, "rank": 4, "min_snr_gamma": 0.0, "keep_tokens": 0,
                                           "unet_lr": 2e-6, "text_encoder_lr": 2e-6, "mixed_precision": "fp32",
                                           "save_every_n_epochs": 0, "network": "LoRA", "optimizer": "AdamW"}.items()
    assert run.get(DATASET, "caption_extension") == ".caption" and run.get(DATASET, "repeats") == 1
    assert run.get(SAVE, "dtype") == "fp32" and run.get(SAVE, "epochs") == "final"


def test_an_unknown_key_is_refused_with_the_nearest_known_one():
    with pytest.raises(KohyaConfigError, match=r"network_dimm \(test.toml \[training\]\) = 8 is not a setting LoRA "
                                               r"Lab reads.*Did you mean network_dim\?"):
        convert(settings(network_dimm=8), "test")
    assert any("unused_thing" in note and "ignored" in note for note in convert(settings(unused_thing=False), "t").notes)


@pytest.mark.parametrize("key, value, words", [
    ("optimizer_type", "Lion", ["'Lion'", "AdamW, AdamW8bit"]),
    ("lr_scheduler", "adafactor", ["'adafactor'", "cosine_with_restarts"]),
    ("network_module", "networks.dylora", ["'networks.dylora'", "lycoris.kohya"]),
    ("network_args", ["algo=ia3"], ["algo=ia3"]),
    ("network_args", ["dropout=0.1"], ["dropout=0.1", "no such network option"]),
    ("resolution", "512,768", ["square"]),
    ("caption_extension", ".md", ["'.md'", ".txt or .caption"]),
    ("pretrained_model_name_or_path", "runwayml/stable-diffusion-v1-5", ["single-file .safetensors checkpoint"]),
    ("vae", "vae-ft-mse.ckpt", ["single-file .safetensors VAE", "pickled .ckpt"]),
    ("lr_warmup_steps", 0.1, ["fraction", "number of steps"]),
])
def test_an_unsupported_value_names_the_key_the_value_and_the_choices(key, value, words):
    with pytest.raises(KohyaConfigError) as error:
        convert(settings(**{key: value}), "test")
    assert all(word in str(error.value) for word in words), str(error.value)


def test_all_problems_are_reported_at_once():
    with pytest.raises(KohyaConfigError) as error:
        convert(settings(optimizer_type="Lion", clip_skip=2, max_train_epochs=None), "cfg.toml")
    text = str(error.value)
    assert text.startswith("cfg.toml: cannot be trained as kohya would:")
    assert "optimizer_type" in text and "clip_skip" in text and "max_train_epochs is not set" in text


def test_the_guides_config_trains_as_meant_with_notes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = load_run(FIXTURES / "training_config.toml", None, {}, device_type="cpu")
    assert run.node_inputs(TRAIN).items() >= {"rank": 32, "alpha": 16.0, "lr_scheduler": "cosine_with_restarts",
                                      "batch_size": 2, "warmup_steps": 50, "epochs": 10, "unet_lr": 1e-4,
                                      "text_encoder_lr": 5e-5, "save_every_n_epochs": 2, "resolution": 512,
                                      "mixed_precision": "fp32", "optimizer": "AdamW"}.items()
    assert run.get(DATASET, "path") == str(tmp_path / "training_data")
    assert run.get(COMMAND, "checkpoint") == str(tmp_path / "models/sd/v1-5-pruned.safetensors")
    assert run.get(SAVE, "filename_prefix") == "my_lora" and run.get(COMMAND, "output_dir") == str(tmp_path / "output")
    notes = "\n".join(run.notes)
    assert "batch_size (training_config.toml [dataset]) is not a kohya argument" in notes
    assert "LoRA Lab trains at batch 2 as meant" in notes
    assert "lr_warmup_steps (training_config.toml [training]) counts kohya's steps of batch 1" in notes
    assert "mixed_precision fp16: this run is on the CPU" in notes and "trains in fp32" in notes
    assert "AdamW8bit needs an NVIDIA GPU" in notes
    on_gpu = load_run(FIXTURES / "training_config.toml", None, {}, device_type="cuda")
    assert on_gpu.get(TRAIN, "mixed_precision") == "fp16" and on_gpu.get(TRAIN, "optimizer") == "AdamW8bit"


def test_command_line_flags_win_over_the_file_and_are_typed():
    flags = parse_flags(["--network_dim", "8", "--network_module", "lycoris.kohya", "--network_args", "algo=loha",
                         "conv_dim=4", "--network_train_unet_only", "--learning_rate=2e-4", "--output_name", "cat"])
    assert flags["network_dim"].value == 8 and flags["learning_rate"].value == 2e-4
    assert flags["network_args"].value == ["algo=loha", "conv_dim=4"] and flags["network_train_unet_only"].value is True
    run = load_run(FIXTURES / "training_config.toml", None, flags)
    assert run.node_inputs(TRAIN).items() >= {"rank": 8, "network": "LoHa", "conv_rank": 4, "unet_lr": 1e-4,
                                      "text_encoder_lr": 0.0}.items()  # unet_lr in the file wins over learning_rate
    assert run.get(SAVE, "filename_prefix") == "cat"
    with pytest.raises(KohyaConfigError, match="expected a kohya flag"):
        parse_flags(["stray"])


def dataset_config(tmp_path: pathlib.Path, text: str) -> pathlib.Path:
    path = tmp_path / "dataset_config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_kohyas_dataset_config_fixture_flips_its_regularization_subset_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = load_run(FIXTURES / "training_config.toml", FIXTURES / "dataset_config.toml", {})
    assert run.get(COMMAND, "flip_training") is False and run.get(COMMAND, "flip_regularization") is True
    assert (TRAIN, "flip_augment") not in run.inputs or run.get(TRAIN, "flip_augment") is False
    mixed = (FIXTURES / "dataset_config.toml").read_text().replace('class_tokens = "sks dog"\n',
                                                                     'class_tokens = "sks dog"\n  keep_tokens = 2\n')
    with pytest.raises(KohyaConfigError, match="keep_tokens differs between subsets; LoRA Lab applies it to the whole"):
        read_dataset_config(dataset_config(tmp_path, mixed))


def test_a_dataset_config_maps_onto_load_dataset_and_training(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = (FIXTURES / "dataset_config.toml").read_text().replace("  flip_aug = true\n", "")
    path = dataset_config(tmp_path, text.replace("[general]", "[general]\nflip_aug = true"))
    run = load_run(FIXTURES / "training_config.toml", path, {})
    assert run.node_inputs(DATASET).items() >= {"path": str(tmp_path / "training_data/10_sks dog"), "repeats": 10,
                                        "class_tokens": "sks dog", "caption_extension": ".txt",
                                        "regularization_path": str(tmp_path / "reg_data"), "batch_size": 2}.items()
    assert run.node_inputs(TRAIN).items() >= {"keep_tokens": 1, "caption_shuffle": True, "flip_augment": True,
                                      "batch_size": 2, "warmup_steps": 100}.items()  # kohya's own batch: no scaling
    # The dataset config's batch_size is kohya's own; the guide's [dataset] batch_size beside it is not applied.
    assert any(note.startswith("batch_size (training_config.toml [dataset]) is not a kohya argument; "
                               "train_batch_size is set too and wins") for note in run.notes)


def test_several_subsets_are_read_as_the_n_name_folders_of_one_parent(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    subsets = ('[[datasets]]\n[[datasets.subsets]]\nimage_dir = "data/10_sks dog"\nnum_repeats = 10\n'
               'class_tokens = "sks dog"\n[[datasets.subsets]]\nimage_dir = "data/5_dog"\nnum_repeats = 5\n')
    assert read_dataset_config(dataset_config(tmp_path, subsets))["image_dir"].value == "data"
    elsewhere = subsets.replace('"data/5_dog"', '"other/5_dog"')
    with pytest.raises(KohyaConfigError, match="N_name folders of one parent"):
        read_dataset_config(dataset_config(tmp_path, elsewhere))
    wrong_repeats = subsets.replace("num_repeats = 5", "num_repeats = 3")
    with pytest.raises(KohyaConfigError, match="N_name folders of one parent"):
        read_dataset_config(dataset_config(tmp_path, wrong_repeats))


def test_the_readme_table_is_the_key_table():
    from loralab_cli.kohya_keys import readme_table

    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert readme_table() in readme, "README's kohya key table is out of date: paste kohya_config.readme_table()"


def test_the_tables_choices_are_the_nodes_choices():
    """The table checks values early (all problems at once, before a model loads); the nodes decide what exists."""
    from harness.runtime import boot

    from loralab_cli import kohya_keys

    def choices(node_type: str, name: str) -> set:
        return set(boot().NODE_CLASS_MAPPINGS[node_type].INPUT_TYPES()["required"][name][0])

    assert set(kohya_keys.SCHEDULERS) == choices("LoraLabTrainLoRA", "lr_scheduler")
    assert set(kohya_keys.OPTIMIZERS.values()) <= choices("LoraLabTrainLoRA", "optimizer")
    assert set(kohya_keys.PRECISIONS.values()) <= choices("LoraLabTrainLoRA", "mixed_precision")
    assert set(kohya_keys.LYCORIS_ALGOS.values()) | {"LoRA"} <= choices("LoraLabTrainLoRA", "network")
    assert set(kohya_keys.SAVE_PRECISIONS.values()) <= choices("LoraLabSaveLoRA", "dtype")
    assert set(kohya_keys.CAPTION_EXTENSIONS) == choices("LoraLabLoadDataset", "caption_extension")
