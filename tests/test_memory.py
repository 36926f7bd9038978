"""Peak-memory estimate: a run that cannot fit stops before any work and names settings that would fit."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys

import pytest
import torch

from harness import models, runtime, training_data
from harness.observers import SilentObserver

memory = runtime.pack("trainer.training.memory")
session = runtime.pack("trainer.training.session")
loop = runtime.pack("trainer.training.loop")
errors = runtime.pack("trainer.errors")
families = runtime.pack("trainer.models.families")
TrainingSettings = runtime.pack("trainer.training.settings").TrainingSettings

CALIBRATION_SCRIPT = runtime.REPO_ROOT / "tests" / "bench" / "benchmark_memory_calibration.py"
FAST = dict(rank=4, resolution=64, mixed_precision="fp32", batch_size=1, epochs=1, seed=7)


class StageRecorder(SilentObserver):
    def __init__(self) -> None:
        self.stages: list[str] = []

    def on_stage(self, text: str) -> None:
        self.stages.append(text)


@pytest.fixture(scope="module")
def sd15():
    return models.FAMILIES["sd15"]()


@pytest.fixture(scope="module")
def profile(sd15):
    diffusion_model = sd15.model.model.diffusion_model
    return memory.activation_profile(diffusion_model, session.checkpoint_blocks(diffusion_model))


def workload(**overrides):
    values = dict(weight_bytes=0, weight_count=1_000_000, weights_cast=False, adapter_parameters=100_000,
                  optimizer="AdamW", batches=((1, 64 * 64),), gradient_checkpointing=True, compute_bytes=4,
                  scores_materialised=True)
    return memory.Workload(**{**values, **overrides})


def test_estimate_follows_the_settings_that_cost_memory(profile):
    base = memory.estimate_peak(profile, workload())
    assert memory.estimate_peak(profile, workload(batches=((4, 64 * 64),))).activations > 3.9 * base.activations
    assert memory.estimate_peak(profile, workload(batches=((1, 128 * 128),))).activations > 4 * base.activations
    assert memory.estimate_peak(profile, workload(gradient_checkpointing=False)).activations > base.activations
    assert memory.estimate_peak(profile, workload(compute_bytes=2)).activations < base.activations
    assert memory.estimate_peak(profile, workload(optimizer="AdamW8bit")).adapters < base.adapters
    # Flash/SDPA attention keeps no score matrix: nothing quadratic in the token count.
    flash = workload(scores_materialised=False)
    small, large = (memory.estimate_peak(profile, dataclasses.replace(flash, batches=((1, side * side),))).activations
                    for side in (64, 128))
    assert large == pytest.approx(4 * small, rel=1e-6)


def test_largest_bucket_batch_decides(tmp_path):
    dataset = training_data.captioned_shapes(tmp_path / "data", count=3, size=64, repeats=2)
    # Six square images at 1024 px: one bucket of 128x128 latents, batches capped by the images there are.
    assert memory.bucket_batches(list(dataset.images), 4, 1024, families.SDXL) == ((4, 128 * 128),)
    assert memory.bucket_batches(list(dataset.images), 16, 1024, families.SDXL) == ((6, 128 * 128),)


def test_run_that_cannot_fit_stops_before_any_work_and_names_what_fits(sd15, tmp_path):
    dataset = training_data.captioned_shapes(tmp_path / "data", count=4, size=64, repeats=16)
    settings = TrainingSettings(**{**FAST, "resolution": 2048, "batch_size": 64})
    observer = StageRecorder()
    with pytest.raises(errors.OutOfMemory) as raised:
        loop.train_lora(sd15.model, sd15.clip, sd15.vae, dataset, settings, observer, tmp_path / "state")
    message = str(raised.value)
    assert "system RAM" in message and "Nothing was trained" in message
    assert "batch_size 64 -> " in message or "resolution 2048 -> " in message, message
    assert not any("Encoding" in stage for stage in observer.stages), observer.stages
    assert not (tmp_path / "state").exists()


def test_a_run_logs_its_estimate_and_keeps_it_in_the_lora(sd15, tmp_path, caplog):
    """The estimate a run was checked against travels with its LORA (the GPU check kit sets it beside the
    measured peak) and is in ComfyUI's log before the first step."""
    dataset = training_data.captioned_shapes(tmp_path / "data", count=2, size=64)
    with caplog.at_level(logging.INFO):
        lora = loop.train_lora(sd15.model, sd15.clip, sd15.vae, dataset, TrainingSettings(**FAST), SilentObserver(),
                               tmp_path / "state").lora
    estimate = lora.memory_estimate
    assert estimate["total"] == estimate["weights"] + estimate["adapters"] + estimate["activations"] + estimate["fixed"]
    adapter_parameters = sum(t.numel() for name, t in lora.weights().items() if not name.endswith(".alpha"))
    assert estimate["adapters"] == adapter_parameters * (4 + 4 + memory.OPTIMIZER_STATE_BYTES["AdamW"])
    assert estimate["weights"] == 0 and estimate["activations"] > 0  # CPU: the weights are in RAM already
    logged = [record.getMessage() for record in caplog.records if "this run needs about" in record.getMessage()]
    assert logged == [f"LoRA Lab: this run needs about {memory.gib(estimate['total'])} (adapters with gradients and "
                      f"optimizer state {memory.gib(estimate['adapters'])}, activations {memory.gib(estimate['activations'])}, "
                      f"workspace {memory.gib(estimate['fixed'])})"]


def test_named_settings_do_fit(sd15, tmp_path):
    """Each suggestion, applied, passes the same check."""
    dataset = training_data.captioned_shapes(tmp_path / "data", count=4, size=64, repeats=16)
    images = list(dataset.images)
    settings = TrainingSettings(**{**FAST, "resolution": 2048, "batch_size": 64})
    device = torch.device("cpu")

    def check(candidate: TrainingSettings, resolution: int):
        return memory.check_fits(sd15.model, sd15.clip, None, None, images, candidate, resolution, families.SD15, device)

    with pytest.raises(errors.OutOfMemory) as raised:
        check(settings, 2048)
    suggestions = [part.strip() for part in str(raised.value).split("would fit: ")[1].split(". Nothing")[0].split("; or ")]
    assert suggestions
    for suggestion in suggestions:
        candidate, resolution = settings, 2048
        for change in suggestion.split(" and "):
            name, _, value = change.partition(" ")
            new = value.split(" -> ")[1]
            if name == "resolution":
                resolution = int(new)
            else:
                field_type = type(getattr(settings, name))
                candidate = dataclasses.replace(candidate, **{name: (new == "on") if field_type is bool else field_type(new)})
        assert check(candidate, resolution).total > 0, suggestion


def test_changes_are_suggested_in_order_of_least_quality_cost(profile):
    """With every change needed at once, the message lists the cheap ones first."""
    settings = TrainingSettings(**{**FAST, "gradient_checkpointing": False, "batch_size": 8, "resolution": 1024})

    def estimate_for(candidate: TrainingSettings, resolution: int):
        work = workload(batches=((candidate.batch_size, (resolution // 8) ** 2),),
                        gradient_checkpointing=candidate.gradient_checkpointing,
                        compute_bytes=4 if candidate.mixed_precision == "fp32" else 2, optimizer=candidate.optimizer)
        return memory.estimate_peak(profile, work)

    tight = estimate_for(dataclasses.replace(settings, gradient_checkpointing=True, optimizer="Adafactor",
                                             mixed_precision="bf16", batch_size=1), 512).total
    (changes,) = memory.fitting_changes(estimate_for, settings, 1024, tight, on_cuda=False)
    assert [change.name for change in changes] == ["gradient_checkpointing", "optimizer", "mixed_precision",
                                                   "batch_size", "resolution"]
    assert str(changes[0]) == "gradient_checkpointing off -> on"
    assert str(changes[-1]) == "resolution 1024 -> 512"
    assert memory.fitting_changes(estimate_for, settings, 1024, 1, on_cuda=False) == []


def measured_peak_growth(**point) -> dict:
    """Peak RSS growth of two training steps, measured by the calibration script in a fresh process: a process
    that has trained before reuses freed memory and would show less growth (and compare runs unfairly)."""
    finished = subprocess.run([sys.executable, str(CALIBRATION_SCRIPT), "--child", json.dumps(point)],
                              capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    line = next((line for line in finished.stdout.splitlines() if line.startswith("CALIBRATION_RESULT ")), None)
    assert line is not None, finished.stderr[-3000:]
    return json.loads(line.split(" ", 1)[1])


def test_gradient_checkpointing_lowers_the_peak():
    peaks = {on: measured_peak_growth(model="tiny", checkpointing=on, resolution=256)["growth"] for on in (True, False)}
    assert peaks[True] < 0.85 * peaks[False], peaks


def test_estimate_is_near_a_measured_peak():
    """Calibration check: the estimate for a training step at 384 px (batch 1, fp32, checkpointing on)
    against the peak RSS growth the calibration script measures in a fresh process (a process that has
    trained before reuses freed memory and would show less growth)."""
    result = measured_peak_growth(model="tiny", checkpointing=True, resolution=384)
    work = workload(adapter_parameters=result["adapter_parameters"], batches=((1, result["pixels"]),),
                    scores_materialised=memory._scores_materialised())
    estimate = memory.estimate_peak(memory.ActivationProfile(**result["profile"]), work)
    assert 0.8 < estimate.total / result["growth"] < 1.6, (estimate, result["growth"])
