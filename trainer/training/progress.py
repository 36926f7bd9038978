"""What the loop reports while it runs; the node turns this into ComfyUI progress, text and websocket events."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class StepReport:
    step: int  # optimizer steps done
    total_steps: int
    epoch: int
    total_epochs: int
    loss: float
    learning_rate: float
    steps_per_second: float

    @property
    def eta_seconds(self) -> float:
        return (self.total_steps - self.step) / self.steps_per_second if self.steps_per_second > 0 else 0.0


@dataclass(frozen=True)
class EpochReport:
    epoch: int
    total_epochs: int
    train_loss: float
    validation_loss: float | None


class TrainingObserver(Protocol):
    def on_stage(self, text: str) -> None: ...

    def on_step(self, report: StepReport) -> None: ...

    def on_epoch(self, report: EpochReport) -> None: ...

    def interrupted(self) -> bool: ...
