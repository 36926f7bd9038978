"""Observers for driving the training loop from tests and benchmarks, where there is no UI."""
from __future__ import annotations

from typing import Any


class SilentObserver:
    """Implements trainer.training.progress.TrainingObserver and reports nothing."""

    def on_stage(self, text: str) -> None:
        pass

    def on_step(self, report: Any) -> None:
        pass

    def on_epoch(self, report: Any) -> None:
        pass

    def interrupted(self) -> bool:
        return False
