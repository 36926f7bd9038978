"""Resumable training state: everything needed to continue a cancelled or crashed run bit-for-bit."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
from dataclasses import asdict, dataclass, field
from typing import Any

import safetensors.torch
import torch

from .errors import SettingsError
from .trained_lora import EpochWeights

STATE_FILE = "state.json"


@dataclass
class RunPosition:
    """Where the run stands: the next batch to train is `batch_index` of `epoch` (1-based epochs)."""

    epoch: int = 1
    batch_index: int = 0
    optimizer_step: int = 0


@dataclass
class RunState:
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
    """Write the whole state into a fresh folder, then swap it in, so a crash never leaves half a state."""
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.adapters.items()}, str(partial / "adapters.safetensors"))
    epoch_tensors = {f"{epoch}/{key}": value.contiguous() for epoch, weights in state.epochs.items() for key, value in weights.weights.items()}
    safetensors.torch.save_file(epoch_tensors, str(partial / "epochs.safetensors"))
    torch.save({"optimizer": state.optimizer, "scheduler": state.scheduler, "scaler": state.scaler}, partial / "optimizer.pt")
    meta = {
        "settings": state.settings, "family": state.family, "dataset_fingerprint": state.dataset_fingerprint,
        "position": asdict(state.position), "loss_history": state.loss_history,
        "learning_rate_history": state.learning_rate_history, "validation_history": state.validation_history,
        "epochs": {str(e): {"step": w.step, "train_loss": w.train_loss, "validation_loss": w.validation_loss}
                   for e, w in state.epochs.items()},
        "started_at": state.started_at,
    }
    (partial / STATE_FILE).write_text(json.dumps(meta, indent=1))
    previous = folder.with_name(folder.name + ".previous")
    if folder.exists():
        os.replace(folder, previous)
    os.replace(partial, folder)
    shutil.rmtree(previous, ignore_errors=True)


def load_run_state(folder: pathlib.Path) -> RunState:
    if not (folder / STATE_FILE).is_file():
        raise SettingsError(f"resume_from: {folder} is not a LoRA Lab training state (no {STATE_FILE}). "
                            "Use the folder named in the message of the cancelled run.")
    meta = json.loads((folder / STATE_FILE).read_text())
    adapters = safetensors.torch.load_file(str(folder / "adapters.safetensors"))
    stored = safetensors.torch.load_file(str(folder / "epochs.safetensors"))
    epochs = {}
    for epoch_text, info in meta["epochs"].items():
        prefix = f"{epoch_text}/"
        weights = {key[len(prefix):]: value for key, value in stored.items() if key.startswith(prefix)}
        epochs[int(epoch_text)] = EpochWeights(int(epoch_text), info["step"], weights, info["train_loss"], info["validation_loss"])
    optimizer = torch.load(folder / "optimizer.pt", weights_only=False)
    return RunState(
        settings=meta["settings"], family=meta["family"], dataset_fingerprint=meta["dataset_fingerprint"],
        position=RunPosition(**meta["position"]), adapters=adapters, optimizer=optimizer["optimizer"],
        scheduler=optimizer["scheduler"], scaler=optimizer["scaler"], loss_history=meta["loss_history"],
        learning_rate_history=meta["learning_rate_history"], validation_history=meta["validation_history"],
        epochs=epochs, started_at=meta["started_at"],
    )
