"""LoRA files: kohya's module names at full model size, metadata, kohya's hashes, atomic writes, safe names."""
from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import types

import pytest
import safetensors
import safetensors.torch
import torch

import test_lora_files_helpers as helpers
from harness import models, runtime

# Full-size UNet configs as ComfyUI's model detection produces them from the released checkpoints.
_COMMON = dict(use_checkpoint=False, image_size=32, in_channels=4, out_channels=4, use_spatial_transformer=True,
               legacy=False, adm_in_channels=None, use_temporal_resblock=False, use_temporal_attention=False,
               model_channels=320)
_SD_LEVELS = dict(num_res_blocks=[2, 2, 2, 2], channel_mult=[1, 2, 4, 4], transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
                  transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], transformer_depth_middle=1)
FULL_UNETS = {
    "sd15": dict(_COMMON, **_SD_LEVELS, context_dim=768, num_heads=8, num_head_channels=-1, use_linear_in_transformer=False),
    "sd2_v": dict(_COMMON, **_SD_LEVELS, context_dim=1024, num_heads=-1, num_head_channels=64, use_linear_in_transformer=True),
    "sdxl": dict(_COMMON, num_res_blocks=[2, 2, 2], channel_mult=[1, 2, 4], transformer_depth=[0, 0, 2, 2, 10, 10],
                 transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10], transformer_depth_middle=10, context_dim=2048,
                 num_heads=-1, num_head_channels=64, use_linear_in_transformer=True, adm_in_channels=2816,
                 num_classes="sequential"),
}
# Module counts measured on kohya sd-scripts (see shared/reference/kohya.md).
KOHYA_UNET_MODULES = {"sd15": (192, 278), "sd2_v": (192, 278), "sdxl": (722, 788)}
KOHYA_TEXT_ENCODER_MODULES = {"sd15": {"lora_te": 72}, "sd2_v": {"lora_te": 138}, "sdxl": {"lora_te1": 72, "lora_te2": 192}}
KOHYA_EXAMPLE_NAMES = {
    "sd15": ["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k",
             "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0",
             "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_0_proj",
             "lora_unet_mid_block_attentions_0_proj_out", "lora_unet_down_blocks_0_attentions_0_proj_in",
             "lora_te_text_model_encoder_layers_0_self_attn_k_proj", "lora_te_text_model_encoder_layers_11_mlp_fc2"],
    "sd15-conv": ["lora_unet_down_blocks_0_resnets_0_conv1", "lora_unet_up_blocks_0_upsamplers_0_conv",
                  "lora_unet_down_blocks_0_resnets_0_time_emb_proj", "lora_unet_down_blocks_1_resnets_0_conv_shortcut",
                  "lora_unet_down_blocks_0_downsamplers_0_conv"],
    "sdxl": ["lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k", "lora_unet_input_blocks_4_1_proj_in",
             "lora_unet_middle_block_1_transformer_blocks_9_attn1_to_out_0", "lora_unet_output_blocks_5_1_proj_out",
             "lora_te1_text_model_encoder_layers_11_self_attn_out_proj", "lora_te2_text_model_encoder_layers_31_mlp_fc1"],
    "sdxl-conv": ["lora_unet_input_blocks_1_0_in_layers_2", "lora_unet_input_blocks_1_0_out_layers_3",
                  "lora_unet_input_blocks_1_0_emb_layers_1", "lora_unet_input_blocks_3_0_op",
                  "lora_unet_input_blocks_4_0_skip_connection", "lora_unet_output_blocks_2_2_conv"],
}


def full_size_bundle(family: str):
    """A real-size ComfyUI model and text encoder on the meta device: module tree and shapes, no memory."""
    import comfy.model_base
    import comfy.sd1_clip
    import comfy.sdxl_clip
    import comfy.supported_models
    import comfy.text_encoders.sd2_clip as sd2_clip

    config_class, clip_class = {"sd15": (comfy.supported_models.SD15, comfy.sd1_clip.SD1ClipModel),
                                "sd2_v": (comfy.supported_models.SD20, sd2_clip.SD2ClipModel),
                                "sdxl": (comfy.supported_models.SDXL, comfy.sdxl_clip.SDXLClipModel)}[family]
    with torch.device("meta"):
        model = config_class(dict(FULL_UNETS[family])).get_model({}, device="meta")
        clip = clip_class(device="meta", dtype=torch.float16)
    return types.SimpleNamespace(family=family, model=types.SimpleNamespace(model=model),
                                 clip=types.SimpleNamespace(cond_stage_model=clip))


@pytest.mark.parametrize("family", sorted(FULL_UNETS))
@pytest.mark.parametrize("convs", [False, True], ids=["lora", "locon"])
def test_unet_modules_are_exactly_kohyas_for_full_size_models(family, convs):
    bundle = full_size_bundle(family)
    names = {layer.name for layer in helpers.adapter_layers(bundle, include_convs=convs, text_encoder=False)}
    assert len(names) == KOHYA_UNET_MODULES[family][convs]
    examples = KOHYA_EXAMPLE_NAMES.get(family, []) + (KOHYA_EXAMPLE_NAMES.get(f"{family}-conv", []) if convs else [])
    assert {name for name in examples if name.startswith("lora_unet_")} <= names


@pytest.mark.parametrize("family", [
    "sd15", "sdxl",
    "sd2_v",
])
def test_text_encoder_modules_are_exactly_kohyas_for_full_size_models(family):
    bundle = full_size_bundle(family)
    layers = [layer for layer in helpers.adapter_layers(bundle, include_convs=False) if not layer.in_unet]
    counts: dict[str, int] = {}
    for layer in layers:
        prefix = layer.name.split("_text_model_")[0]
        counts[prefix] = counts.get(prefix, 0) + 1
    assert counts == KOHYA_TEXT_ENCODER_MODULES[family]
    assert {name for name in KOHYA_EXAMPLE_NAMES.get(family, []) if name.startswith("lora_te")} <= {l.name for l in layers}


@pytest.mark.parametrize("family", sorted(FULL_UNETS))
@pytest.mark.parametrize("network", helpers.NETWORKS)
def test_every_key_of_a_full_size_file_maps_in_comfyui(comfy_dirs, family, network):
    """A saved rank-1 adapter for the real-size model: ComfyUI's key maps accept every key, none is left over."""
    import comfy.lora

    bundle = full_size_bundle(family)
    lora = helpers.random_trained_lora(bundle, network, rank=1, alpha=1.0, conv_rank=1, conv_alpha=1.0)
    lora_io = runtime.pack("trainer.files.lora_io")
    saved = lora_io.save_lora_files(lora, comfy_dirs["loras"], "full/size", "final", "fp16", overwrite=False)
    tensors, _ = lora_io.read_lora_file(saved[0].path)
    key_map = comfy.lora.model_lora_keys_unet(bundle.model.model, {})
    key_map = comfy.lora.model_lora_keys_clip(bundle.clip.cond_stage_model, key_map)
    with helpers.comfy_warnings() as warnings:
        patches = comfy.lora.load_lora(tensors, key_map)
    assert warnings == []
    assert len(patches) == len(helpers.module_names(tensors)) == len(helpers.module_names(lora.weights()))


# ---------------------------------------------------------------- metadata


def small_lora(network="LoCon", family="sd15", epochs=(2, 4), seed=0, **overrides):
    """A TrainedLora with a few adapter tensors (enough to pass 1 MiB, so the legacy hash window is full)."""
    trained_lora = runtime.pack("trainer.training.trained_lora")
    name = "lora_unet_down_blocks_0_attentions_0_proj_in"
    generator = torch.Generator().manual_seed(seed)
    kept = {}
    for epoch in epochs:
        weights = {f"{name}.lora_down.weight": torch.randn((16, 20000), generator=generator),
                   f"{name}.lora_up.weight": torch.randn((20000, 16), generator=generator),
                   f"{name}.alpha": torch.tensor(8.0)}
        kept[epoch] = trained_lora.EpochWeights(epoch=epoch, step=epoch * 25, weights=weights, train_loss=0.1)
    values = dict(family=family, network=network, rank=16, alpha=8.0, conv_rank=4 if network != "LoRA" else None,
                  conv_alpha=2.0 if network != "LoRA" else None, epochs=kept,
                  settings={"unet_lr": 1e-4, "text_encoder_lr": 5e-5, "optimizer": "AdamW", "lr_scheduler": "cosine",
                            "warmup_steps": 10, "epochs": 4, "batch_size": 2, "gradient_accumulation": 2,
                            "mixed_precision": "bf16", "seed": 42, "noise_offset": 0.05, "min_snr_gamma": 5.0,
                            "caption_shuffle": True, "keep_tokens": 1, "flip_augment": False, "resolution": 0},
                  dataset_summary={"tag_frequency": {"10_ohwx dog": {"ohwx": 3, "dog": 3, "草原": 1}},
                                   "dataset_dirs": {"10_ohwx dog": {"n_repeats": 10, "img_count": 3}},
                                   "num_train_images": 30, "resolution": 512, "buckets": [(512, 512), (448, 576)],
                                   "steps_per_epoch": 8},
                  started_at=1_700_000_000.25, finished_at=1_700_003_600.5)
    values.update(overrides)
    return trained_lora.TrainedLora(**values)


@pytest.mark.parametrize("family, version, v2, architecture, implementation, prediction, resolution", [
    ("sd15", "sd_v1", "False", "stable-diffusion-v1/lora", "diffusers", "epsilon", "512x512"),
    ("sd2", "sd_v2", "True", "stable-diffusion-v2-512/lora", "diffusers", "epsilon", "512x512"),
    ("sd2_v", "sd_v2_v", "True", "stable-diffusion-v2-768-v/lora", "diffusers", "v", "768x768"),
    ("sdxl", "sdxl_base_v1-0", "False", "stable-diffusion-xl-v1-base/lora",
     "https://github.com/Stability-AI/generative-models", "epsilon", "1024x1024"),
])
def test_metadata_names_the_base_model_as_kohya_and_a1111_expect(family, version, v2, architecture, implementation,
                                                                   prediction, resolution):
    lora_metadata = runtime.pack("trainer.files.metadata")
    lora = small_lora(family=family, dataset_summary={})
    metadata = lora_metadata.build_metadata(lora, 4, "my_lora")
    assert all(isinstance(value, str) for value in metadata.values())
    assert (metadata["ss_base_model_version"], metadata["ss_v2"]) == (version, v2)
    assert metadata["modelspec.architecture"] == architecture
    assert metadata["modelspec.implementation"] == implementation
    assert metadata["modelspec.prediction_type"] == prediction
    assert metadata["modelspec.resolution"] == resolution
    assert metadata["modelspec.sai_model_spec"] == "1.0.1"


@pytest.mark.parametrize("network, module, args", [
    ("LoRA", "networks.lora", {}),
    ("LoCon", "lycoris.kohya", {"algo": "locon", "conv_dim": "4", "conv_alpha": "2.0"}),
    ("LoHa", "lycoris.kohya", {"algo": "loha", "conv_dim": "4", "conv_alpha": "2.0"}),
    ("LoKr", "lycoris.kohya", {"algo": "lokr", "conv_dim": "4", "conv_alpha": "2.0"}),
])
def test_metadata_describes_the_network_and_the_training_run(network, module, args):
    lora_metadata = runtime.pack("trainer.files.metadata")
    metadata = lora_metadata.build_metadata(small_lora(network), 2, "my_lora", saved_at=1_700_004_000.0)
    assert metadata["ss_network_module"] == module
    assert (metadata["ss_network_dim"], metadata["ss_network_alpha"]) == ("16", "8.0")
    assert json.loads(metadata["ss_network_args"]) == args
    assert (metadata["ss_epoch"], metadata["ss_steps"]) == ("2", "50")
    assert metadata["ss_output_name"] == metadata["modelspec.title"] == "my_lora"
    assert (metadata["ss_training_started_at"], metadata["ss_training_finished_at"]) == ("1700000000.25", "1700003600.5")
    assert json.loads(metadata["ss_tag_frequency"]) == {"10_ohwx dog": {"ohwx": 3, "dog": 3, "草原": 1}}
    assert json.loads(metadata["ss_dataset_dirs"]) == {"10_ohwx dog": {"n_repeats": 10, "img_count": 3}}
    assert metadata["ss_num_train_images"] == "30"
    assert metadata["ss_resolution"] == "(512, 512)"
    assert (metadata["ss_learning_rate"], metadata["ss_unet_lr"], metadata["ss_text_encoder_lr"]) == ("0.0001", "0.0001", "5e-05")
    assert (metadata["ss_optimizer"], metadata["ss_lr_scheduler"], metadata["ss_lr_warmup_steps"]) == ("AdamW", "cosine", "10")
    assert (metadata["ss_seed"], metadata["ss_num_epochs"], metadata["ss_total_batch_size"]) == ("42", "4", "4")
    assert json.loads(metadata["ss_bucket_info"]) == {"buckets": {"0": {"resolution": [512, 512]},
                                                                  "1": {"resolution": [448, 576]}}}
    assert metadata["ss_max_train_steps"] == "32"
    assert metadata["modelspec.date"] == datetime.datetime.fromtimestamp(1_700_003_600).isoformat()  # local, as kohya


def test_metadata_and_weights_round_trip_through_the_file(comfy_dirs):
    lora_io = runtime.pack("trainer.files.lora_io")
    lora_metadata = runtime.pack("trainer.files.metadata")
    lora = small_lora()
    saved = lora_io.save_lora_files(lora, comfy_dirs["loras"], "loralab/round trip", "all", "fp32", overwrite=False)
    for item in saved:
        tensors, metadata = lora_io.read_lora_file(item.path)
        assert {key: value for key, value in metadata.items() if not key.startswith("sshs_")} == \
            lora_metadata.build_metadata(lora, item.epoch, "round trip", saved_at=0.0) | {"modelspec.date": metadata["modelspec.date"]}
        assert tensors.keys() == lora.weights(item.epoch).keys()
        assert all(torch.equal(tensors[key], value) for key, value in lora.weights(item.epoch).items())
        assert lora_metadata.settings_from_metadata(metadata) | {"resolution": 0} == lora.settings | {"max_train_steps": 32}
        summary = lora_metadata.dataset_summary_from_metadata(metadata)
        assert summary["tag_frequency"] == lora.dataset_summary["tag_frequency"]
        assert summary["num_train_images"] == 30


# ---------------------------------------------------------------- dtype and hashes


@pytest.mark.parametrize("dtype, torch_dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_every_tensor_alpha_included_is_saved_in_the_chosen_dtype(comfy_dirs, dtype, torch_dtype):
    lora_io = runtime.pack("trainer.files.lora_io")
    lora = small_lora()
    saved = lora_io.save_lora_files(lora, comfy_dirs["loras"], "dtype/test", "final", dtype, overwrite=False)
    tensors, _ = lora_io.read_lora_file(saved[0].path)
    assert {tensor.dtype for tensor in tensors.values()} == {torch_dtype}
    for key, value in lora.weights().items():
        assert torch.equal(tensors[key], value.to(torch_dtype))


def kohya_precalculated_hashes(path):
    """kohya's train_util.precalculate_safetensors_hashes, re-done from the written file's tensors and ss_ metadata."""
    with safetensors.safe_open(str(path), "pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        metadata = {key: value for key, value in (handle.metadata() or {}).items() if key.startswith("ss_")}
    stream = io.BytesIO(safetensors.torch.save(tensors, metadata))
    header_length = int.from_bytes(stream.read(8), "little")
    stream.seek(8 + header_length)
    model_hash = hashlib.sha256(stream.read()).hexdigest()
    stream.seek(0x100000)
    return model_hash, hashlib.sha256(stream.read(0x10000)).hexdigest()[:8]


def test_hashes_are_kohyas(comfy_dirs):
    lora_io = runtime.pack("trainer.files.lora_io")
    saved = lora_io.save_lora_files(small_lora(), comfy_dirs["loras"], "hash/test", "final", "fp16", overwrite=False)
    path = saved[0].path
    assert path.stat().st_size > 0x110000  # the legacy window (64 KiB at 1 MiB) lies inside the data
    _, metadata = lora_io.read_lora_file(path)
    assert (metadata["sshs_model_hash"], metadata["sshs_legacy_hash"]) == kohya_precalculated_hashes(path)
    # The model hash covers the tensor bytes only: the written file's bytes after its own header give it too.
    data = path.read_bytes()
    assert hashlib.sha256(data[8 + int.from_bytes(data[:8], "little"):]).hexdigest() == metadata["sshs_model_hash"]


def test_hashes_change_with_the_weights_not_with_the_save_time(comfy_dirs):
    lora_io = runtime.pack("trainer.files.lora_io")
    first = lora_io.save_lora_files(small_lora(), comfy_dirs["loras"], "a", "final", "fp16", overwrite=False)
    later = lora_io.save_lora_files(small_lora(finished_at=1_800_000_000.0), comfy_dirs["loras"], "b", "final", "fp16",
                                    overwrite=False)
    other = lora_io.save_lora_files(small_lora(seed=1), comfy_dirs["loras"], "c", "final", "fp16", overwrite=False)
    hashes = [lora_io.read_lora_file(saved[0].path)[1]["sshs_model_hash"] for saved in (first, later, other)]
    assert hashes[0] == hashes[1] != hashes[2]


# ---------------------------------------------------------------- names and overwriting


def listed_loras():
    import folder_paths

    return folder_paths.get_filename_list("loras")


def test_epoch_files_and_final_file_are_named_as_kohya_does(comfy_dirs):
    result = runtime.run_node("LoraLabSaveLoRA", lora=small_lora(epochs=(2, 4, 6)), filename_prefix="runs/dog",
                              epochs="all", dtype="fp16", overwrite=False)
    expected = [os.path.join("runs", name) for name in ("dog-000002.safetensors", "dog-000004.safetensors", "dog.safetensors")]
    assert [item["lora_name"] for item in result.ui["loras"]] == expected
    assert result[0].split("\n") == [str(comfy_dirs["loras"] / name) for name in expected] == result.ui["text"]
    assert sorted(listed_loras()) == sorted(expected)  # LoraLoader lists them at once, no restart
    chosen = runtime.run_node("LoraLabSaveLoRA", lora=small_lora(epochs=(2, 4, 6)), filename_prefix="picked/dog",
                              epochs="2, 6", dtype="fp16", overwrite=False)
    assert [item["filename"] for item in chosen.ui["loras"]] == ["dog-000002.safetensors", "dog.safetensors"]
    assert [item["epoch"] for item in chosen.ui["loras"]] == [2, 6]


def test_an_existing_file_is_never_replaced_without_overwrite(comfy_dirs):
    lora_io = runtime.pack("trainer.files.lora_io")
    existing = comfy_dirs["loras"] / "mine" / "dog.safetensors"
    existing.parent.mkdir()
    existing.write_bytes(b"the user's own file")
    saved = lora_io.save_lora_files(small_lora(), comfy_dirs["loras"], "mine/dog", "final", "fp16", overwrite=False)
    assert saved[0].path.name == "dog_2.safetensors"
    assert existing.read_bytes() == b"the user's own file"
    assert lora_io.read_lora_file(saved[0].path)[1]["ss_output_name"] == "dog_2"
    again = lora_io.save_lora_files(small_lora(), comfy_dirs["loras"], "mine/dog", "all", "fp16", overwrite=False)
    assert [item.path.name for item in again] == ["dog_3-000002.safetensors", "dog_3.safetensors"]
    replaced = lora_io.save_lora_files(small_lora(), comfy_dirs["loras"], "mine/dog", "final", "fp16", overwrite=True)
    assert replaced[0].path == existing
    assert lora_io.read_lora_file(existing)[1]["ss_output_name"] == "dog"


def test_a_file_that_appears_during_the_save_is_left_alone(comfy_dirs):
    lora_io = runtime.pack("trainer.files.lora_io")
    errors = runtime.pack("trainer.errors")
    target = comfy_dirs["loras"] / "race.safetensors"
    target.write_bytes(b"arrived first")
    with pytest.raises(errors.LoraFileError, match="already exists"):
        lora_io.write_atomically(target, b"new bytes", overwrite=False)
    assert target.read_bytes() == b"arrived first"
    assert [path.name for path in comfy_dirs["loras"].iterdir()] == ["race.safetensors"]


@pytest.mark.parametrize("prefix", ["../escape", "loralab/../../escape", "/tmp/absolute", "C:\\Users\\me\\lora",
                                    "\\\\server\\share\\lora", "..\\escape"])
def test_a_prefix_outside_the_loras_folder_is_refused(comfy_dirs, prefix):
    errors = runtime.pack("trainer.errors")
    with pytest.raises(errors.SettingsError, match="outside the loras folder"):
        runtime.run_node("LoraLabSaveLoRA", lora=small_lora(), filename_prefix=prefix, epochs="final", dtype="fp16",
                         overwrite=False)
    assert list(comfy_dirs["loras"].rglob("*")) == []


@pytest.mark.parametrize("prefix, problem", [("", "no file name"), ("loralab/", "no file name"),
                                             ("bad:name", "file systems reject"), ("a|b", "file systems reject")])
def test_an_unusable_prefix_is_refused_with_the_reason(comfy_dirs, prefix, problem):
    errors = runtime.pack("trainer.errors")
    with pytest.raises(errors.SettingsError, match=problem):
        runtime.run_node("LoraLabSaveLoRA", lora=small_lora(), filename_prefix=prefix, epochs="final", dtype="fp16",
                         overwrite=False)


@pytest.mark.parametrize("kept, epochs, message", [((2, 4), "3", "kept only epochs 2, 4"),
                                                  ((2, 4), "last two", "not 'final', 'all'"),
                                                  ((), "final", "kept no epoch")])
def test_unknown_epochs_are_refused_with_the_choices(comfy_dirs, kept, epochs, message):
    errors = runtime.pack("trainer.errors")
    with pytest.raises(errors.SettingsError, match=message):
        runtime.run_node("LoraLabSaveLoRA", lora=small_lora(epochs=kept), filename_prefix="x", epochs=epochs,
                         dtype="fp16", overwrite=False)
    assert list(comfy_dirs["loras"].iterdir()) == []


def test_spaces_japanese_and_full_width_names_work_and_load(comfy_dirs):
    prefix = "日本語 フォルダ/ＬｏＲＡ　キャラ v1"
    lora = helpers.random_trained_lora(models.FAMILIES["sd15"](), "LoRA")
    result = runtime.run_node("LoraLabSaveLoRA", lora=lora, filename_prefix=prefix, epochs="final", dtype="fp16",
                              overwrite=False)
    lora_name = os.path.join("日本語 フォルダ", "ＬｏＲＡ　キャラ v1.safetensors")
    assert result.ui["loras"][0]["lora_name"] == lora_name
    assert lora_name in listed_loras()
    bundle = models.FAMILIES["sd15"]()
    with helpers.comfy_warnings() as warnings:
        runtime.run_node("LoraLoader", model=bundle.model, clip=bundle.clip, lora_name=lora_name, strength_model=1.0,
                         strength_clip=1.0)
    assert warnings == []


# ---------------------------------------------------------------- crashes


CRASH_SCRIPT = textwrap.dedent("""
    import resource, signal, sys
    sys.path.insert(0, {tests!r})
    from harness import runtime
    import test_lora_files
    lora_io = runtime.pack("trainer.files.lora_io")
    lora = test_lora_files.small_lora()
    limit = 256 * 1024  # the kernel kills a process (SIGXFSZ) that writes past this many bytes
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores SIGXFSZ by default
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    lora_io.save_lora_files(lora, {root!r}, "crash/dog", "final", "fp16", overwrite=True)
""")


def test_a_crash_mid_write_leaves_the_previous_file_whole_and_nothing_listed(comfy_dirs):
    existing = comfy_dirs["loras"] / "crash" / "dog.safetensors"
    existing.parent.mkdir()
    existing.write_bytes(b"version one")
    script = CRASH_SCRIPT.format(tests=str(runtime.REPO_ROOT / "tests"), root=str(comfy_dirs["loras"]))
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert process.returncode == -signal.SIGXFSZ, process.stderr[-2000:]
    assert existing.read_bytes() == b"version one"
    assert listed_loras() == [os.path.join("crash", "dog.safetensors")]
    leftovers = [path.name for path in existing.parent.iterdir() if path != existing]
    assert len(leftovers) == 1 and leftovers[0].startswith(".dog.safetensors.") and leftovers[0].endswith(".partial")


def test_a_failed_write_raises_a_clear_error_and_leaves_no_file(comfy_dirs):
    errors = runtime.pack("trainer.errors")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, hard))
    try:
        with pytest.raises(errors.LoraFileError, match="no partial file was left behind"):
            runtime.run_node("LoraLabSaveLoRA", lora=small_lora(), filename_prefix="full/dog", epochs="final",
                             dtype="fp16", overwrite=False)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert [path for path in comfy_dirs["loras"].rglob("*") if path.is_file()] == []
