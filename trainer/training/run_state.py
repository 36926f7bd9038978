"""Resumable training state: everything needed to continue a cancelled or crashed run bit-for-bit.

A snapshot (see run_folders for the folder, its crash-safe switch and its owner) holds tensors in safetensors
files and everything else in JSON; the optimizer, scheduler and grad-scaler state_dicts go through
state_codec. Nothing is ever unpickled, so a state folder cannot run code however it was made, and one that
does not parse is refused with a SettingsError naming `resume_from` and the file.
"""
from __future__ import annotations

import json
import pathlib
from dataclasses import asdict, dataclass, field
from typing import Any

import safetensors
import safetensors.torch
import torch

from ..errors import SettingsError, TrainingStateError
from ..files import state_codec
from . import run_folders
from .trained_lora import EpochWeights

STATE_FILE = "state.json"
ADAPTERS_FILE = "adapters.safetensors"
EPOCHS_FILE = "epochs.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"


@dataclass
class RunPosition:
    """Where the run stands: the next batch to train is `batch_index` of `epoch` (1-based epochs)."""

    epoch: int = 1
    batch_index: int = 0
    optimizer_step: int = 0


@dataclass
class RunState:
    run_id: str  # drawn when the run began; only a folder holding this id is ever replaced by a save
    settings: dict[str, Any]
    family: str
    dataset_fingerprint: str
    position: RunPosition
    adapters: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any] | None
    loss_history: list[list[float]] = field(default_factory=list)
    learning_rate_history: list[list[float]] = field(default_factory=list)
    validation_history: list[list[float]] = field(default_factory=list)
    epochs: dict[int, EpochWeights] = field(default_factory=dict)
    started_at: float = 0.0


def save_run_state(folder: pathlib.Path, state: RunState) -> None:
    """Make `state` the run's current snapshot (crash-safe; DiskFull when the disk has no room for it)."""
    training_tensors, training = state_codec.flatten(
        {"optimizer": state.optimizer, "scheduler": state.scheduler, "scaler": state.scaler}, "training state")
    epoch_tensors = {f"{epoch}/{key}": value.contiguous() for epoch, weights in state.epochs.items()
                     for key, value in weights.weights.items()}
    meta = {
        "settings": state.settings, "family": state.family, "dataset_fingerprint": state.dataset_fingerprint,
        "position": asdict(state.position), "loss_history": state.loss_history,
        "learning_rate_history": state.learning_rate_history, "validation_history": state.validation_history,
        "epochs": {str(e): {"step": w.step, "train_loss": w.train_loss, "validation_loss": w.validation_loss}
                   for e, w in state.epochs.items()},
        "started_at": state.started_at, "training": training,
    }
    run_folders.save_snapshot(folder, state.run_id, {
        ADAPTERS_FILE: safetensors.torch.save({k: v.contiguous() for k, v in state.adapters.items()}),
        EPOCHS_FILE: safetensors.torch.save(epoch_tensors),
        OPTIMIZER_FILE: safetensors.torch.save(training_tensors),
        STATE_FILE: json.dumps(meta, indent=1).encode("utf-8"),
    })


def load_run_state(folder: pathlib.Path) -> RunState:
    """The current snapshot of the run in `folder`; SettingsError naming resume_from and the file if it does not parse."""
    record, snapshot = run_folders.open_saved_run(folder)
    meta = _read(snapshot / STATE_FILE, lambda path: json.loads(path.read_bytes()))
    adapters = _read(snapshot / ADAPTERS_FILE, _load_tensors)
    stored = _read(snapshot / EPOCHS_FILE, _load_tensors)
    training_tensors = _read(snapshot / OPTIMIZER_FILE, _load_tensors)
    # Missing keys or wrong types surface while assembling: state.json describes everything, so it is named.
    return _read(snapshot / STATE_FILE, lambda _: _assemble(record.run_id, meta, adapters, stored, training_tensors))


def _assemble(run_id: str, meta: dict, adapters: dict[str, torch.Tensor], stored: dict[str, torch.Tensor],
              training_tensors: dict[str, torch.Tensor]) -> RunState:
    epochs = {}
    for epoch_text, info in meta["epochs"].items():
        prefix = f"{epoch_text}/"
        weights = {key[len(prefix):]: value for key, value in stored.items() if key.startswith(prefix)}
        epochs[int(epoch_text)] = EpochWeights(int(epoch_text), int(info["step"]), weights, float(info["train_loss"]),
                                               None if info["validation_loss"] is None else float(info["validation_loss"]))
    training = state_codec.unflatten(meta["training"], training_tensors)
    if not isinstance(training, dict) or not isinstance(training.get("optimizer"), dict):
        raise TrainingStateError("it holds no optimizer state")
    if not isinstance(meta["settings"], dict) or not all(isinstance(meta[key], list) for key in
                                                         ("loss_history", "learning_rate_history", "validation_history")):
        raise TrainingStateError("its settings or histories are malformed")
    return RunState(
        run_id=run_id, settings=meta["settings"], family=str(meta["family"]),
        dataset_fingerprint=str(meta["dataset_fingerprint"]), position=RunPosition(**meta["position"]),
        adapters=adapters, optimizer=training["optimizer"], scheduler=training["scheduler"], scaler=training["scaler"],
        loss_history=meta["loss_history"], learning_rate_history=meta["learning_rate_history"],
        validation_history=meta["validation_history"], epochs=epochs, started_at=float(meta["started_at"]),
    )


def _load_tensors(path: pathlib.Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(path))


def _read(path: pathlib.Path, read):
    """`read(path)`, with every way a damaged or foreign file can fail turned into one SettingsError naming it."""
    try:
        return read(path)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, safetensors.SafetensorError) as error:
        detail = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise SettingsError(f"resume_from: {path} cannot be read as part of a LoRA Lab training state ({detail}). "
                            "The state is damaged or was not written by LoRA Lab; start the run again, or resume "
                            "another run.") from error
