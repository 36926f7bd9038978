"""Progress of an in-process training run: Train LoRA's events become a terminal line with the run's cost.

The node reports through ComfyUI's PromptServer (`send_sync`, `send_progress_text`); without a server the command
installs `EventPrinter` as that server, so the node runs unchanged and its figures (epoch, loss, it/s, ETA) come
here. Cost is the rental price per hour times the wall time: so far, and estimated to the end.
"""
from __future__ import annotations

import time
from typing import Any, TextIO

from .progress import training_figures

TRAIN_EVENT = "loralab.train"
LOG_EVERY = 0.1  # without a terminal, one line per tenth of the run


def cost_text(price_per_hour: float | None, seconds: float) -> str:
    return "" if price_per_hour is None else f"${price_per_hour * seconds / 3600:.4f}"


class EventPrinter:
    """Stands in for ComfyUI's PromptServer in a process that has none; prints training progress to `stream`."""

    def __init__(self, stream: TextIO, interactive: bool, price_per_hour: float | None) -> None:
        self.stream, self.interactive, self.price_per_hour = stream, interactive, price_per_hour
        self.client_id = None
        self.label = ""
        self.started = time.monotonic()
        self.logged_tenth = -1
        self.line_open = False

    def start_run(self, label: str) -> None:
        self.label, self.logged_tenth = label, -1

    def send_sync(self, event: str, data: dict[str, Any], sid: Any = None) -> None:
        if event != TRAIN_EVENT:
            return
        if data.get("kind") == "step":
            self._step(data)
        elif data.get("kind") == "epoch":
            text = f"{self.label}epoch {data['epoch']}/{data['epochs']} done: loss {data['loss']:.4f}"
            if data.get("validation_loss") is not None:
                text += f", validation loss {data['validation_loss']:.4f}"
            self.print(text)

    def send_progress_text(self, text: str, node_id: Any, sid: Any = None) -> None:
        """Stage texts ("Encoding images with the VAE") are logged by the node itself; nothing to add here."""

    def _step(self, data: dict[str, Any]) -> None:
        elapsed = time.monotonic() - self.started
        text = f"{self.label}step {data['step']}/{data['total_steps']}  {training_figures(data)}"
        if self.price_per_hour is not None:
            text += (f"  cost {cost_text(self.price_per_hour, elapsed)} so far, "
                     f"~{cost_text(self.price_per_hour, elapsed + data['eta_s'])} at the end of this LoRA")
        if self.interactive:
            self.stream.write(f"\r{text}\x1b[K")
            self.stream.flush()
            self.line_open = True
            return
        tenth = int(data["step"] / data["total_steps"] / LOG_EVERY) if data["total_steps"] else 0
        if tenth > self.logged_tenth or data["step"] == 1:
            self.logged_tenth = tenth
            self.print(text)

    def print(self, text: str) -> None:
        if self.line_open:
            self.stream.write("\n")
            self.line_open = False
        self.stream.write(text + "\n")
        self.stream.flush()
