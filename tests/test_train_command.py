"""`python -m loralab_cli train`: the public guide's kohya config trains through the command on a tiny SD1.5
checkpoint file and a generated dataset, writing what Save LoRA writes; several configs share one model load."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import comfy.sd
from harness.datasets import make_sample_dataset
from harness.models import detectable_sd15_checkpoint
from harness.runtime import REPO_ROOT, boot
from safetensors import safe_open
from safetensors.torch import save_file

from loralab_cli import train_command
from loralab_cli.kohya_config import load_run
from loralab_cli.kohya_workflow import apply_kohya_run

GUIDE = pathlib.Path("/work/shared/fixtures/kohya/training_config.toml")
# The guide trains 10 epochs at 512 px; on a test CPU the same config runs shorter and smaller through kohya flags
# (LoRA Lab's buckets span half to twice the resolution, so the bucket limits follow it).
SHORTER = ["--resolution", "64", "--min_bucket_reso", "64", "--max_bucket_reso", "128", "--max_train_epochs", "2",
           "--cpu"]


def guide_folder(folder: pathlib.Path) -> pathlib.Path:
    """What the guide's relative paths expect: the checkpoint, the dataset and the config, in one folder."""
    (folder / "models" / "sd").mkdir(parents=True)
    (folder / "models" / "sd" / "v1-5-pruned.safetensors").symlink_to(detectable_sd15_checkpoint())
    make_sample_dataset(folder / "training_data", count=2, size=64, repeats=1, name="sks dog")
    shutil.copy(GUIDE, folder / "training_config.toml")
    return folder


def metadata(path: pathlib.Path) -> dict[str, str]:
    with safe_open(str(path), "pt") as handle:
        return handle.metadata()


def test_the_guides_config_trains_through_the_command(tmp_path):
    folder = guide_folder(tmp_path)
    (folder / "output").mkdir()
    (folder / "output" / "my_lora.safetensors").write_bytes(b"the user's own file")
    done = subprocess.run([sys.executable, "-m", "loralab_cli", "train", "--config", "training_config.toml",
                           "--gpu-price", "0.79", *SHORTER], cwd=folder, capture_output=True, text=True, timeout=1500,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    log = done.stderr
    assert "note: batch_size (training_config.toml [dataset]) is not a kohya argument" in log
    assert "note: mixed_precision fp16: this run is on the CPU" in log and "so it trains in fp32" in log
    assert "note: lr_warmup_steps (training_config.toml [training]) counts kohya's steps of batch 1" in log
    assert "step 2/2  epoch 2/2  loss " in log and " it/s  ETA " in log and "cost $" in log
    assert "training_config.toml: " in log and " 2 steps, " in log and "samples/s, cost $" in log
    assert "done: 1 LoRA in " in log and "at $0.79/h" in log and "per LoRA" in log

    output = folder / "output"
    assert (output / "my_lora.safetensors").read_bytes() == b"the user's own file"  # never replaced
    lora = output / "my_lora_2.safetensors"
    values = metadata(lora)
    assert {key: values[key] for key in ("ss_network_dim", "ss_network_alpha", "ss_lr_scheduler", "ss_lr_warmup_steps",
                                         "ss_mixed_precision", "ss_batch_size_per_device", "ss_num_epochs",
                                         "ss_text_encoder_lr", "ss_unet_lr", "ss_output_name")} == {
        "ss_network_dim": "32", "ss_network_alpha": "16.0", "ss_lr_scheduler": "cosine_with_restarts",
        "ss_lr_warmup_steps": "50", "ss_mixed_precision": "fp32", "ss_batch_size_per_device": "2",
        "ss_num_epochs": "2", "ss_text_encoder_lr": "5e-05", "ss_unet_lr": "0.0001", "ss_output_name": "my_lora_2"}
    assert json.loads(values["ss_network_args"]) == {}
    assert f"wrote {lora}" in log
    report = output / "my_lora_dataset_report.txt"
    assert "1_sks dog: 2 images x 1 repeats" in report.read_text() and f"dataset report: {report}" in log
    charts = list((output / "loralab" / "charts").glob("*_loss_*.png"))
    assert len(charts) == 1 and charts[0].read_bytes().startswith(b"\x89PNG")


def test_two_configs_train_two_loras_with_one_model_load(tmp_path, monkeypatch, capsys):
    folder = guide_folder(tmp_path)
    second = folder / "second.toml"
    second.write_text(GUIDE.read_text().replace('output_name = "my_lora"', 'output_name = "other_lora"')
                      .replace("[model]\n", '[model]\nvae = "./models/vae.safetensors"\n'))
    with safe_open(str(detectable_sd15_checkpoint()), "pt") as checkpoint:  # the checkpoint's own VAE, as a file
        save_file({key.removeprefix("first_stage_model."): checkpoint.get_tensor(key) for key in checkpoint.keys()
                   if key.startswith("first_stage_model.")}, str(folder / "models" / "vae.safetensors"))
    loads = []
    real_loader = comfy.sd.load_checkpoint_guess_config

    def counting_loader(*args, **kwargs):
        loads.append(args[0])
        return real_loader(*args, **kwargs)

    monkeypatch.setattr(comfy.sd, "load_checkpoint_guess_config", counting_loader)
    monkeypatch.chdir(folder)
    status = train_command.main(["--config", "training_config.toml", "--config", "second.toml", *SHORTER,
                                 "--max_train_epochs", "1", "--network_train_unet_only"])
    log = capsys.readouterr().err
    assert status == 0, log[-4000:]
    assert loads == [str(folder / "models" / "sd" / "v1-5-pruned.safetensors")]
    assert log.count("Loading checkpoint ") == 1 and log.count("Loading VAE ") == 1  # the second config's VAE
    assert (folder / "output" / "my_lora.safetensors").is_file() and (folder / "output" / "other_lora.safetensors").is_file()
    assert "[1/2 training_config.toml] " in log and "[2/2 second.toml] " in log and "done: 2 LoRAs in " in log


def test_kohyas_dataset_config_trains_flipping_only_its_regularization_subset_then_sweeps(tmp_path, monkeypatch, capsys):
    folder = guide_folder(tmp_path)
    make_sample_dataset(folder / "training_data", count=1, size=64, repeats=10, name="sks dog", seed=1)
    make_sample_dataset(folder / "reg_data", count=1, size=64, repeats=1, name="dog", seed=2)
    shutil.copy(GUIDE.with_name("dataset_config.toml"), folder / "dataset_config.toml")
    trained_on, encoded = [], []
    train_class = boot().NODE_CLASS_MAPPINGS["LoraLabTrainLoRA"]
    real_train, real_encode = train_class.train, comfy.sd.VAE.encode

    def recording_train(self, **inputs):
        trained_on.append(inputs["dataset"])
        return real_train(self, **inputs)

    def counting_encode(self, pixels, *args, **kwargs):
        encoded.append(pixels.shape)
        return real_encode(self, pixels, *args, **kwargs)

    monkeypatch.setattr(train_class, "train", recording_train)
    monkeypatch.setattr(comfy.sd.VAE, "encode", counting_encode)
    monkeypatch.chdir(folder)
    status = train_command.main(["--config", "training_config.toml", "--dataset_config", "dataset_config.toml",
                                 *SHORTER, "--max_train_epochs", "1", "--network_train_unet_only", "--num_repeats", "1",
                                 "--sweep", "sks dog",
                                 "--sweep-set", "steps=1", "--sweep-set", "strengths=1", "--sweep-set", "seeds=1"])
    log = capsys.readouterr().err
    assert status == 0, log[-4000:]
    flips = {image.path.parent.name: image.flip_augment for image in trained_on[0].images}
    assert flips == {"10_sks dog": False, "1_dog": True}
    assert len(encoded) == 3  # the training image, the regularization image and its mirror (before the sweep)
    grids = list((folder / "output" / "loralab" / "sweeps").glob("*.png"))
    assert len(grids) == 1 and grids[0].read_bytes().startswith(b"\x89PNG") and f"wrote {grids[0]}" in log


def test_a_sweep_input_is_typed_as_strength_sweep_declares_it(capsys):
    assert train_command.main(["--config", str(GUIDE), "--sweep", "x", "--sweep-set", "steps=many", "--cpu"]) == 2
    assert "--sweep-set steps: expects a whole number, got 'many'" in capsys.readouterr().err


def test_a_refused_config_stops_before_loading_anything_and_exits_2(tmp_path, monkeypatch, capsys):
    folder = tmp_path
    (folder / "bad.toml").write_text(GUIDE.read_text() + 'clip_skip = 2\nnetwork_dimm = 8\n')
    monkeypatch.chdir(folder)
    assert train_command.main(["--config", "bad.toml", "--cpu"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: bad.toml: cannot be trained as kohya would:")
    assert "clip_skip (bad.toml [training]) = 2" in error and "Did you mean network_dim?" in error
    assert "Loading checkpoint" not in error


def test_a_world_size_without_the_launchers_other_variables_is_refused(monkeypatch, capsys):
    """accelerate and torchrun set them all (tests/test_train_distributed.py trains under torchrun)."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert train_command.main(["--config", str(GUIDE)]) == 2
    assert "WORLD_SIZE=2 but RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT not set" in capsys.readouterr().err


def test_a_kohya_config_sets_the_workflows_training_inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    workflow = json.loads((REPO_ROOT / "example_workflows" / "api" / "loralab_sd15_pipeline.json").read_text())
    result, notes = apply_kohya_run(workflow, load_run(GUIDE, None, {}))
    train = next(node["inputs"] for node in result.values() if node["class_type"] == "LoraLabTrainLoRA")
    dataset = next(node["inputs"] for node in result.values() if node["class_type"] == "LoraLabLoadDataset")
    save = next(node["inputs"] for node in result.values() if node["class_type"] == "LoraLabSaveLoRA")
    assert {name: train[name] for name in ("rank", "alpha", "lr_scheduler", "batch_size", "warmup_steps",
                                           "mixed_precision", "optimizer")} == {
        "rank": 32, "alpha": 16.0, "lr_scheduler": "cosine_with_restarts", "batch_size": 2, "warmup_steps": 50,
        "mixed_precision": "fp16", "optimizer": "AdamW8bit"}  # no device here: the server's Train LoRA decides
    assert dataset["path"] == str(tmp_path / "training_data") and save["filename_prefix"] == "my_lora"
    assert isinstance(train["model"], list)  # links stay links
    assert any("the workflow loads its own model" in note for note in notes)
    assert workflow != result  # the loaded workflow is left alone


def test_ctrl_c_keeps_the_state_and_the_printed_resume_finishes_the_run(tmp_path):
    folder = guide_folder(tmp_path)
    command = [sys.executable, "-m", "loralab_cli", "train", "--config", "training_config.toml", *SHORTER,
               "--max_train_epochs", "3", "--network_train_unet_only"]
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    running = subprocess.Popen(command, cwd=folder, stderr=subprocess.PIPE, text=True, env=environment)
    seen = []
    for line in running.stderr:
        seen.append(line)
        if line.startswith("step 1/3"):
            running.send_signal(signal.SIGINT)  # as Ctrl-C in the terminal
            break
    rest = running.communicate(timeout=900)[1]
    log = "".join(seen) + rest
    assert running.returncode == 130, log[-4000:]
    resume = next(line.split("--resume ", 1)[1].strip() for line in log.splitlines() if "continue with --resume" in line)
    assert pathlib.Path(resume).parent == folder / "output" / "loralab" / "training_state"
    assert not (folder / "output" / "my_lora.safetensors").exists()

    done = subprocess.run(command + ["--resume", resume], cwd=folder, capture_output=True, text=True, timeout=900,
                          env=environment)
    assert done.returncode == 0, done.stderr[-4000:]
    assert metadata(folder / "output" / "my_lora.safetensors")["ss_steps"] == "3"
