"""Progress from ComfyUI's websocket messages: a live bar on a terminal, sparse lines in a log file."""
from __future__ import annotations

from typing import Any, TextIO

from .workflow import Workflow, node_title

BAR_WIDTH = 24
TRAIN_NODE = "LoraLabTrainLoRA"  # sends loralab.train events after each progress update
SWEEP_NODE = "LoraLabStrengthSweep"  # its bar counts sampler steps over all its images: shown in images
LOG_EVERY = 0.1  # without a terminal, one line per tenth of a node's progress


def format_duration(seconds: float) -> str:
    total = max(0, round(seconds))
    if total >= 3600:
        return f"{total // 3600}h{total % 3600 // 60:02d}m"
    return f"{total // 60}m{total % 60:02d}s"


def training_figures(event: dict[str, Any]) -> str:
    """What the Train LoRA node shows: epoch, loss, speed and time left."""
    return (f"epoch {event['epoch']}/{event['epochs']}  loss {event['loss']:.4f}  "
            f"{event['it_s']:.2f} it/s  ETA {format_duration(event['eta_s'])}")


def progress_count(workflow: Workflow, node_id: str, value: int, maximum: int) -> str:
    """A bar's count as the user thinks of it: Strength Sweep's sampler steps become images (steps per image is its
    `steps` input), anything else as it comes."""
    node = workflow.get(node_id, {})
    steps = node.get("inputs", {}).get("steps")
    if node.get("class_type") == SWEEP_NODE and isinstance(steps, int) and steps > 0:
        return f"{value // steps}/{maximum // steps} images"
    return f"{value}/{maximum}"


class ProgressDisplay:
    """Feed it every websocket message with `handle`; it writes to `stream` (stderr), never to stdout."""

    def __init__(self, stream: TextIO, interactive: bool) -> None:
        self.stream = stream
        self.interactive = interactive
        self.runs: dict[str, tuple[str, Workflow]] = {}
        self.training: dict[str, Any] | None = None
        self.progress: tuple[str, int, int] | None = None
        self.logged_tenth = -1
        self.line_open = False

    def add_run(self, prompt_id: str, label: str, workflow: Workflow) -> None:
        self.runs[prompt_id] = (label, workflow)

    def queued(self, server: str) -> None:
        count = len(self.runs)
        self._print(f"Queued {count} run{'s' if count > 1 else ''} on ComfyUI at {server}; progress follows.")

    def handle(self, kind: str, data: dict[str, Any]) -> None:
        run = self.runs.get(data.get("prompt_id"))
        if run is None:
            return
        label, workflow = run
        if kind == "execution_start":
            self._print(f"{label}ComfyUI started the run")
        elif kind == "executing" and data.get("node") is not None:
            self.training, self.progress, self.logged_tenth = None, None, -1
            self._status(f"{label}{self._title(workflow, data['node'])}", permanent=not self.interactive)
        elif kind == "progress":
            self.progress = (str(data.get("node")), int(data["value"]), int(data["max"]))
            self._show_progress(label, workflow, from_training=False)
        elif kind == "loralab.train" and data.get("kind") == "step":
            self.training = data
            self._show_progress(label, workflow, from_training=True)
        elif kind == "loralab.train" and data.get("kind") == "epoch":
            text = f"{label}epoch {data['epoch']}/{data['epochs']} done: loss {data['loss']:.4f}"
            if data.get("validation_loss") is not None:
                text += f", validation loss {data['validation_loss']:.4f}"
            self._print(text)

    def close(self) -> None:
        if self.line_open:
            self.stream.write("\n")
            self.stream.flush()
            self.line_open = False

    def _title(self, workflow: Workflow, node_id: Any) -> str:
        node_id = str(node_id)
        return node_title(workflow, node_id) if node_id in workflow else f"node {node_id}"

    def _show_progress(self, label: str, workflow: Workflow, from_training: bool) -> None:
        if self.progress is None:
            return
        node_id, value, maximum = self.progress
        trains = workflow.get(node_id, {}).get("class_type") == TRAIN_NODE
        if not self.interactive and trains and not from_training:
            return  # the step's loss event follows this bar update: log once, with the figures
        filled = round(BAR_WIDTH * value / maximum) if maximum else 0
        text = (f"{label}{self._title(workflow, node_id)} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] "
                f"{progress_count(workflow, node_id, value, maximum)}")
        if self.training is not None and str(self.training.get("node")) == node_id:
            text += "  " + training_figures(self.training)
        if self.interactive:
            self._status(text, permanent=False)
            return
        tenth = int(value / maximum / LOG_EVERY) if maximum else 0
        if tenth > self.logged_tenth:
            self.logged_tenth = tenth
            self._print(text)

    def _status(self, text: str, permanent: bool) -> None:
        if permanent:
            self._print(text)
            return
        self.stream.write(f"\r{text}\x1b[K")
        self.stream.flush()
        self.line_open = True

    def _print(self, text: str) -> None:
        self.close()
        self.stream.write(text + "\n")
        self.stream.flush()
