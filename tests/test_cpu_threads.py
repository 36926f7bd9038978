"""CPU training and sampling use no more torch threads than the machine has free cores, so a busy machine slows
them in proportion instead of thirty-fold; a user's OMP_NUM_THREADS and GPU work are left alone.
(The speed itself is measured, not tested: see README, "The demo".)
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import pytest
import torch

from harness import models, runtime, training_data

cpu_threads = runtime.pack("trainer.cpu_threads")


@pytest.mark.parametrize(("cores", "load", "own", "most", "expected"), [
    (2, 0.0, 0.0, 2, 2),  # idle: every core
    (2, 5.0, 0.0, 2, 1),  # the busy 2-core machine of pitfall 9: one thread
    (2, 1.4, 0.0, 2, 1),  # one core mostly taken
    (2, 2.1, 2.0, 2, 2),  # the load is this process's own earlier work: still idle for it
    (16, 4.2, 0.0, 16, 12),
    (16, 0.0, 0.0, 8, 8),  # never above torch's own choice
    (4, 40.0, 1.0, 4, 1),  # at least one
])
def test_the_count_is_the_cores_other_processes_leave_free(cores, load, own, most, expected):
    assert cpu_threads.fitted_thread_count(cores, load, own, most) == expected


@pytest.fixture
def without_user_setting(monkeypatch):
    monkeypatch.delenv(cpu_threads.USER_SETTING, raising=False)  # the suite may run with OMP_NUM_THREADS=1
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_the_count_holds_inside_the_block_and_is_put_back(without_user_setting):
    outside = len(os.sched_getaffinity(0)) + 1  # more than the fitting ever picks, so its change shows
    torch.set_num_threads(outside)
    with cpu_threads.threads_fitted_to_load(torch.device("cpu")) as count:
        assert 1 <= count < outside and torch.get_num_threads() == count
    assert torch.get_num_threads() == outside


@pytest.mark.parametrize("reason", ["gpu", "user"])
def test_gpu_work_and_a_user_setting_are_left_alone(reason, without_user_setting, monkeypatch):
    if reason == "user":
        monkeypatch.setenv(cpu_threads.USER_SETTING, "3")
    device = torch.device("cuda" if reason == "gpu" else "cpu")
    torch.set_num_threads(1)
    with cpu_threads.threads_fitted_to_load(device) as count:
        assert count == 1 and torch.get_num_threads() == 1


def test_a_busy_machine_gets_one_thread(without_user_setting):
    """Real load: busy processes on every core until the load average shows them (a minute on an idle machine)."""
    cores = len(os.sched_getaffinity(0))
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2 * cores)]
    try:
        deadline = time.monotonic() + 180
        while os.getloadavg()[0] < cores + 1 and time.monotonic() < deadline:
            time.sleep(2)
        assert os.getloadavg()[0] >= cores + 1, f"the load average stayed at {os.getloadavg()[0]:.1f}"
        with cpu_threads.threads_fitted_to_load(torch.device("cpu")) as count:
            assert count == 1 and torch.get_num_threads() == 1
    finally:
        for process in busy:
            process.kill()
            process.wait()


@pytest.mark.parametrize("node_id", ["LoraLabTrainLoRA", "LoraLabStrengthSweep"])
def test_training_and_the_sweep_run_with_the_fitted_count(node_id, without_user_setting, tmp_path, comfy_dirs, caplog):
    bundle = models.FAMILIES["sd15"]()
    dataset = training_data.captioned_shapes(tmp_path / "data", count=1)
    seen: set[int] = set()
    handle = bundle.model.model.diffusion_model.register_forward_hook(
        lambda module, args, output: seen.add(torch.get_num_threads()))
    outside = len(os.sched_getaffinity(0)) + 1  # more than the fitting ever picks, so its change shows
    torch.set_num_threads(outside)
    caplog.set_level(logging.INFO)
    try:
        lora = runtime.run_node("LoraLabTrainLoRA", **training_data.node_inputs(bundle, dataset, epochs=1))[2]
        if node_id == "LoraLabStrengthSweep":
            seen.clear()
            caplog.clear()
            runtime.run_node(node_id, model=bundle.model, clip=bundle.clip, vae=bundle.vae, lora=lora, prompts="sks",
                             negative="", strengths="1", seeds="1", epochs="final", clip_strength_ratio=1.0, width=64,
                             height=64, steps=1, cfg=1.0, sampler_name="euler", scheduler="normal")
    finally:
        handle.remove()
    logged = [record.getMessage() for record in caplog.records if "CPU thread(s) for this run" in record.getMessage()]
    assert len(logged) == 1, logged
    fitted = int(logged[0].split("LoRA Lab: ")[1].split()[0])
    assert seen == {fitted} and fitted < outside, "every forward pass ran with the fitted count"
    assert torch.get_num_threads() == outside, "put back afterwards"
