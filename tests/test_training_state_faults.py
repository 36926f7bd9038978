"""A crash at any step of a state save, or a full disk, loses nothing: the run resumes from what was saved and
ends equal to an uninterrupted run; nothing partial or empty is left; the epochs trained so far are returned."""
from __future__ import annotations

import json
import logging
import pathlib
import signal
import subprocess
import sys

import pytest
import torch

from harness import models, runtime, training_data
from harness.small_disk import SmallDisk

loader = runtime.pack("trainer.data.loading")
run_folders = runtime.pack("trainer.training.run_folders")

SETTINGS = dict(epochs=3, unet_lr=2e-3, text_encoder_lr=5e-4)
KILLED_TRAINING = pathlib.Path(__file__).parent / "harness" / "killed_training.py"


@pytest.fixture(scope="module")
def sd15():
    return models.FAMILIES["sd15"]()


@pytest.fixture(scope="module")
def dataset_folder(tmp_path_factory) -> pathlib.Path:
    folder = tmp_path_factory.mktemp("faults") / "data"
    training_data.captioned_shapes(folder, count=2)
    return folder


def train(bundle, folder: pathlib.Path, **inputs):
    dataset = loader.load_dataset(folder, repeats=1, base_resolution=64).dataset
    return runtime.run_node("LoraLabTrainLoRA", **training_data.node_inputs(bundle, dataset, **SETTINGS, **inputs))


@pytest.fixture(scope="module")
def uninterrupted(sd15, dataset_folder, tmp_path_factory):
    import folder_paths

    saved = folder_paths.get_output_directory()
    folder_paths.set_output_directory(str(tmp_path_factory.mktemp("uninterrupted")))
    try:
        return train(sd15, dataset_folder)[2]
    finally:
        folder_paths.set_output_directory(saved)


def assert_same_run(lora, reference) -> None:
    assert sorted(lora.epochs) == sorted(reference.epochs)
    for key, value in reference.weights().items():
        assert torch.equal(lora.weights()[key], value), key
    assert [loss for _, loss in lora.loss_history] == [loss for _, loss in reference.loss_history]


def partial_files(folder: pathlib.Path) -> list[pathlib.Path]:
    return [path for path in folder.rglob("*") if path.name.endswith(".partial")]


# What the run folder holds after the kill: the snapshot run.json names, and the unnamed one left behind.
AFTER_KILL = {"writing": ("snapshot-000001", "snapshot-000002"), "before_switch": ("snapshot-000001", "snapshot-000002"),
              "after_switch": ("snapshot-000002", "snapshot-000001"), "removing_old": ("snapshot-000002", "snapshot-000001")}


@pytest.mark.parametrize("step", list(AFTER_KILL))
def test_a_save_killed_at_any_step_resumes_and_ends_as_an_uninterrupted_run(step, sd15, dataset_folder, uninterrupted,
                                                                             comfy_dirs, caplog):
    killed = subprocess.run([sys.executable, str(KILLED_TRAINING), str(comfy_dirs["output"]), str(dataset_folder), step,
                             json.dumps(SETTINGS)], capture_output=True, text=True, timeout=900)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-4000:]
    (run,) = run_folders.state_root(comfy_dirs["output"]).iterdir()  # the folder the user was shown exists
    current, leftover = AFTER_KILL[step]
    assert json.loads((run / "run.json").read_text())["snapshot"] == current
    assert (run / leftover).is_dir()

    with caplog.at_level(logging.WARNING):
        resumed = train(sd15, dataset_folder, resume_from=run.name)[2]
    assert f"removing {run / leftover}, an incomplete state left by an interrupted save" in caplog.text
    assert_same_run(resumed, uninterrupted)
    assert not run.exists(), "the finished run's state is removed"


class FillDiskAfter:
    """Fills `disk` once the diffusion model has run `calls` forwards (here: when epoch 1 and its save are done)."""

    def __init__(self, bundle, disk: SmallDisk, calls: int) -> None:
        self.disk, self.calls, self.seen = disk, calls, 0
        self.handle = bundle.model.model.diffusion_model.register_forward_hook(self)

    def __call__(self, module, args, output):
        self.seen += 1
        if self.seen == self.calls + 1:
            self.disk.fill()
        return output

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.handle.remove()


def test_a_full_disk_at_a_state_save_keeps_the_last_state_and_returns_the_trained_epochs(sd15, dataset_folder,
                                                                                          uninterrupted, comfy_dirs):
    root = run_folders.state_root(comfy_dirs["output"])
    with SmallDisk(comfy_dirs["output"], megabytes=32) as disk:
        with FillDiskAfter(sd15, disk, calls=2):  # 2 images, batch 1: epoch 1 is two forwards
            _, _, lora, summary, _ = train(sd15, dataset_folder)
        assert sorted(lora.epochs) == [1, 2], "epoch 2 was trained: it is returned although its state was not saved"
        assert f"Training stopped at the end of epoch 2. No space left on the disk of {root}" in summary
        assert "to save the training state: it needs about" in summary and "Nothing partial was left" in summary
        (run,) = root.iterdir()
        assert f"The last saved state is kept in {run}: set resume_from to it" in summary
        assert "Save LoRA" in summary and "The loss chart was not saved" in summary
        assert sorted(path.name for path in run.iterdir()) == ["run.json", "snapshot-000001"]
        assert not partial_files(comfy_dirs["output"])
        assert all(path.stat().st_size > 0 for path in run.rglob("*") if path.is_file())
        disk.free()
        resumed = train(sd15, dataset_folder, resume_from=run.name)[2]
    assert_same_run(resumed, uninterrupted)


def test_a_full_disk_at_the_first_save_returns_the_epoch_and_leaves_no_empty_run_folder(sd15, dataset_folder, comfy_dirs):
    root = run_folders.state_root(comfy_dirs["output"])
    with SmallDisk(comfy_dirs["output"], megabytes=32) as disk:
        root.mkdir(parents=True)
        with FillDiskAfter(sd15, disk, calls=0):
            _, _, lora, summary, _ = train(sd15, dataset_folder)
        assert sorted(lora.epochs) == [1]
        assert "Training stopped at the end of epoch 1" in summary and "No state of this run could be saved yet" in summary
        assert not any(root.iterdir()) and not partial_files(comfy_dirs["output"])


def test_a_full_disk_at_a_lora_save_leaves_only_whole_files_and_names_what_was_saved(uninterrupted, comfy_dirs):
    errors = runtime.pack("trainer.errors")
    lora_io = runtime.pack("trainer.files.lora_io")
    with SmallDisk(comfy_dirs["loras"], megabytes=16) as disk:
        runtime.run_node("LoraLabSaveLoRA", lora=uninterrupted, filename_prefix="probe", epochs="final", dtype="fp32",
                         overwrite=False)
        size = (comfy_dirs["loras"] / "probe.safetensors").stat().st_size
        (comfy_dirs["loras"] / "probe.safetensors").unlink()
        disk.fill(leave=size + size // 2)  # room for one file, not two
        with pytest.raises(errors.DiskFull) as raised:
            runtime.run_node("LoraLabSaveLoRA", lora=uninterrupted, filename_prefix="run/my_lora", epochs="all",
                             dtype="fp32", overwrite=False)
        message = str(raised.value)
        assert "my_lora-000002.safetensors was not saved" in message
        assert f"No space left on the disk of {comfy_dirs['loras'] / 'run'}" in message and "needs" in message
        assert "Saved before it: run/my_lora-000001.safetensors" in message
        files = sorted(path.name for path in (comfy_dirs["loras"] / "run").iterdir())
        assert files == ["my_lora-000001.safetensors"], files
        tensors, _ = lora_io.read_lora_file(comfy_dirs["loras"] / "run" / files[0])
        assert tensors.keys() == uninterrupted.weights(1).keys()
