"""`torchrun -m loralab_cli train`: two CPU processes (gloo) train one LoRA data-parallel.

Runs of the command on a tiny SD1.5 checkpoint and three images (one bucket; a global batch of 2 leaves each
epoch's last batch with one sample, so one process trains nothing in it; 2 steps an epoch):
- 2 processes at batch_size 1 for epoch 1;
- 1 process at batch_size 2 for epochs 1-2 without a break;
- 2 processes at batch_size 1 for epochs 1-2, cancelled with Ctrl-C in epoch 2, then resumed by 1 process at
  batch_size 2.
Epoch 1 of the first equals epoch 1 of the second (same global batch and seed), the resumed run ends equal to the
uninterrupted one, and only the main process wrote files.
"""
from __future__ import annotations

import os
import pathlib
import signal
import socket
import sys
import time

import pytest
import torch
from harness.datasets import make_sample_dataset
from harness.models import detectable_sd15_checkpoint
from harness.process_group import ProcessGroup
from harness.runtime import REPO_ROOT
from safetensors import safe_open
from safetensors.torch import load_file

QUIET_LIMIT_S = 300  # a run that writes nothing for this long hangs
LEARNING_RATE = 1e-3


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> pathlib.Path:
    folder = tmp_path_factory.mktemp("distributed")
    make_sample_dataset(folder / "data", count=3, size=64, repeats=1, name="sks dog")
    return folder


def flags(folder: pathlib.Path, output: str, batch_size: int, epochs: int, *extra: str) -> list[str]:
    return ["--pretrained_model_name_or_path", str(detectable_sd15_checkpoint()), "--train_data_dir",
            str(folder / "data"), "--output_dir", str(folder / output), "--output_name", "lora", "--resolution", "64",
            "--min_bucket_reso", "64", "--max_bucket_reso", "128", "--train_batch_size", str(batch_size),
            "--max_train_epochs", str(epochs), "--save_every_n_epochs", "1", "--network_dim", "4",
            "--network_alpha", "4", "--optimizer_type", "AdamW", "--learning_rate", str(LEARNING_RATE), "--lr_scheduler",
            "constant", "--seed", "7", "--network_train_unet_only", "--cpu", *extra]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(arguments: list[str], processes: int) -> tuple[list[str], dict[str, str]]:
    """The command line (under torchrun for several processes) and its environment."""
    launcher = (["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_addr", "127.0.0.1",
                 "--master_port", str(free_port())] if processes > 1 else [])
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    return [sys.executable, *launcher, "-m", "loralab_cli", "train", *arguments], environment


def train(folder: pathlib.Path, logs: str, arguments: list[str], processes: int = 1) -> str:
    """Runs the command to its end; returns its log."""
    command, environment = launch(arguments, processes)
    (folder / logs).mkdir()
    with ProcessGroup(command, folder / logs, cwd=folder, env=environment) as run:
        status = run.wait(QUIET_LIMIT_S)
        log = run.output()
    assert status == 0, log[-5000:]
    return log


def cancelled(folder: pathlib.Path, logs: str, arguments: list[str], processes: int, after: str) -> str:
    """Runs the command and presses Ctrl-C (SIGINT to the whole process group, as a terminal sends it) once
    `after` has been printed; returns its log."""
    command, environment = launch(arguments, processes)
    (folder / logs).mkdir()
    with ProcessGroup(command, folder / logs, cwd=folder, env=environment) as run:
        deadline = time.monotonic() + QUIET_LIMIT_S
        while after not in run.output():
            assert run.process.poll() is None and time.monotonic() < deadline, run.output()[-5000:]
            time.sleep(0.2)
        os.killpg(run.group_id, signal.SIGINT)
        run.wait(QUIET_LIMIT_S)
        return run.output()


def assert_same_weights(path: pathlib.Path, expected: pathlib.Path) -> None:
    """Equal within float tolerance. The two halves of a batch are summed in another order than one batch's mean,
    and Adam divides each gradient element by its own magnitude: where an element is near zero those last bits can
    move it by a fraction of a step (about 200 of the ~940,000 elements here). So: nearly every element within 1e-6,
    none further than a tenth of one step (the learning rate)."""
    ours, theirs = load_file(str(path)), load_file(str(expected))
    assert ours.keys() == theirs.keys()
    differences = torch.cat([(ours[key] - theirs[key]).abs().flatten() for key in ours])
    assert differences.max().item() <= 0.1 * LEARNING_RATE, differences.max().item()
    assert (differences > 1e-6).sum().item() <= 1e-3 * differences.numel()


def test_two_processes_train_as_one_and_resume_on_one(folder):
    log = train(folder, "logs_two", flags(folder, "two", 1, 1, "--save_state"), processes=2)
    assert "note: 2 processes train data-parallel: each step's global batch is 2 (batch_size 1 x 2 processes)" in log
    assert log.count("wrote ") == 2  # the LoRA and the chart, once: only the main process prints and writes
    two = folder / "two"
    states = list((two / "loralab" / "training_state").iterdir())
    written = sorted(str(path.relative_to(two)) for path in two.rglob("*") if path.is_file() and states[0] not in path.parents)
    assert len(states) == 1 and len(written) == 3, written  # one state, one LoRA, one report, one chart
    assert "lora.safetensors" in written and "lora_dataset_report.txt" in written
    with safe_open(str(two / "lora.safetensors"), "pt") as handle:
        metadata = handle.metadata()
    assert (metadata["ss_batch_size_per_device"], metadata["ss_total_batch_size"], metadata["ss_steps"]) == ("1", "2", "2")

    train(folder, "logs_one", flags(folder, "one", 2, 2))
    assert_same_weights(two / "lora.safetensors", folder / "one" / "lora-000001.safetensors")

    log = cancelled(folder, "logs_cancelled", flags(folder, "cancelled", 1, 2), processes=2, after="step 3/4")
    resume = [line.split("--resume ", 1)[1].strip() for line in log.splitlines() if "continue with --resume" in line]
    assert len(resume) == 1, log[-5000:]  # named once, by the main process, which saved the state
    assert not (folder / "cancelled" / "lora.safetensors").exists()
    train(folder, "logs_resumed", flags(folder, "cancelled", 2, 2, "--resume", resume[0]))
    assert_same_weights(folder / "cancelled" / "lora.safetensors", folder / "one" / "lora.safetensors")
