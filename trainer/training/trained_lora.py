"""The trained-LoRA value that travels between nodes (LORALAB_LORA)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .networks import Network, network



@dataclass
class EpochWeights:
    """The adapter after one epoch, as a kohya/LyCORIS-format state dict (fp32, CPU)."""

    epoch: int
    step: int
    weights: dict[str, torch.Tensor]
    train_loss: float
    validation_loss: float | None = None


@dataclass
class TrainedLora:
    """Everything Save LoRA, Strength Sweep and a later resume need from one training run.

    `family` is one of trainer.families (sd15, sd2, sd2_v, sdxl, sd3); `settings` are the training
    settings as plain values and `dataset_summary` holds what kohya records about the data
    (tag_frequency, dataset_dirs, num_train_images, resolution...), both for file metadata.
    """

    family: str
    network: str
    rank: int
    alpha: float
    conv_rank: int | None
    conv_alpha: float | None
    epochs: dict[int, EpochWeights]
    settings: dict[str, Any] = field(default_factory=dict)
    dataset_summary: dict[str, Any] = field(default_factory=dict)
    loss_history: list[tuple[int, float]] = field(default_factory=list)
    learning_rate_history: list[tuple[int, float]] = field(default_factory=list)
    validation_history: list[tuple[int, float]] = field(default_factory=list)
    recommended_epoch: int | None = None
    recommendation: str = ""
    samples: dict[int, list[str]] = field(default_factory=dict)
    state_dir: str | None = None
    started_at: float = 0.0
    finished_at: float = 0.0
    memory_estimate: dict[str, int] = field(default_factory=dict)  # the run's estimated peak in bytes, by part and "total"
    processes: int = 1  # data-parallel processes, each training settings["batch_size"] samples of every batch

    @property
    def final_epoch(self) -> int:
        return max(self.epochs)

    def weights(self, epoch: int | None = None) -> dict[str, torch.Tensor]:
        """The adapter of `epoch` (default: the last one kept)."""
        return self.epochs[self.final_epoch if epoch is None else epoch].weights

    @property
    def network_type(self) -> Network:
        return network(self.network)
