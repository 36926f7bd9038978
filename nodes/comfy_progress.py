"""Training and sweep progress in ComfyUI: the node's progress bar, text under the node, websocket events, the console."""
from __future__ import annotations

import logging

import comfy.model_management as mm
import comfy.utils

from ..trainer.files.image_files import to_pil
from ..trainer.training.progress import EpochReport, StepReport

log = logging.getLogger("LoRA Lab")
EVENT = "loralab.train"
PREVIEW_SIZE = 512  # the longest side of an image previewed on the node


def _server():
    try:
        from server import PromptServer
    except ImportError:
        return None
    return getattr(PromptServer, "instance", None)


def _prompt_id() -> str | None:
    try:
        from comfy_execution.utils import get_executing_context
    except ImportError:
        return None
    context = get_executing_context()
    return getattr(context, "prompt_id", None)


def send_event(event: str, payload: dict, node_id: str | None) -> None:
    """A websocket message to the client that queued the running prompt."""
    server = _server()
    if server is not None:
        payload = {"node": node_id, "prompt_id": _prompt_id(), **payload}
        server.send_sync(event, payload, getattr(server, "client_id", None))


def send_text(text: str, node_id: str | None) -> None:
    """Text shown under the node in ComfyUI's frontend."""
    server = _server()
    if server is not None and node_id is not None:
        server.send_progress_text(text, node_id)


class SweepProgress:
    """Strength Sweep's progress: the bar moves per sampler step (clients divide by `steps` for images); the text
    under the node counts images."""

    def __init__(self, node_id: str | None, steps_per_image: int) -> None:
        self.node_id = node_id
        self.steps_per_image = steps_per_image
        self.bar = comfy.utils.ProgressBar(1, node_id=node_id)
        self.images_done: int | None = None

    def update(self, steps_done: int, steps_total: int, finished_image=None) -> None:
        """sampling.ProgressCallback: sampler steps over the whole sweep, and the image just finished if any."""
        images_done, images = steps_done // self.steps_per_image, steps_total // self.steps_per_image
        if images_done != self.images_done:
            self.images_done = images_done
            send_text(f"image {images_done}/{images}", self.node_id)
        preview = None if finished_image is None else ("PNG", to_pil(finished_image), PREVIEW_SIZE)
        self.bar.update_absolute(steps_done, steps_total, preview)


class ComfyObserver:
    """Implements trainer.training.run.RunObserver for a node run inside ComfyUI."""

    def __init__(self, node_id: str | None) -> None:
        self.node_id = node_id
        self.progress_bar: comfy.utils.ProgressBar | None = None

    def _text(self, text: str) -> None:
        send_text(text, self.node_id)

    def _event(self, payload: dict) -> None:
        send_event(EVENT, payload, self.node_id)

    def started(self, state_dir) -> None:
        """Tell headless callers where the resumable state of this run will be."""
        self._event({"kind": "start", "state_dir": str(state_dir)})

    def cancelled(self, state_dir) -> None:
        """Say where to resume from, or (`state_dir` None: cancelled before the first save) that nothing was saved."""
        if state_dir is None:
            text = "Cancelled before the first training step ended, so nothing could be saved yet; start the run again."
        else:
            text = f"Cancelled. To continue, set resume_from to {state_dir}"
        log.warning("Training: %s", text)
        self._text(text)
        self._event({"kind": "cancelled", "state_dir": None if state_dir is None else str(state_dir)})

    def on_stage(self, text: str) -> None:
        log.info(text)
        self._text(text)

    def on_step(self, report: StepReport) -> None:
        if self.progress_bar is None:
            self.progress_bar = comfy.utils.ProgressBar(report.total_steps, node_id=self.node_id)
        self.progress_bar.update_absolute(report.step, report.total_steps)
        eta = report.eta_seconds
        text = (f"epoch {report.epoch}/{report.total_epochs}  step {report.step}/{report.total_steps}  "
                f"loss {report.loss:.4f}  {report.steps_per_second:.2f} it/s  ETA {int(eta // 60)}m{int(eta % 60):02d}s")
        if report.step == 1 or report.step % 10 == 0 or report.step == report.total_steps:
            log.info(text)
        self._text(text)
        self._event({"kind": "step", "step": report.step, "total_steps": report.total_steps, "epoch": report.epoch,
                     "epochs": report.total_epochs, "loss": report.loss, "lr": report.learning_rate,
                     "it_s": report.steps_per_second, "eta_s": eta})

    def on_epoch(self, report: EpochReport) -> None:
        text = f"epoch {report.epoch}/{report.total_epochs} done: loss {report.train_loss:.4f}"
        if report.validation_loss is not None:
            text += f", validation loss {report.validation_loss:.4f}"
        log.info(text)
        self._event({"kind": "epoch", "epoch": report.epoch, "epochs": report.total_epochs,
                     "loss": report.train_loss, "validation_loss": report.validation_loss})

    def on_sample(self, epoch: int, index: int, total: int, image) -> None:
        self.on_stage(f"epoch {epoch}: sample {index + 1}/{total} rendered")
        bar = self.progress_bar or comfy.utils.ProgressBar(1, node_id=self.node_id)
        bar.update_absolute(bar.current, bar.total, ("PNG", to_pil(image), PREVIEW_SIZE))

    def interrupted(self) -> bool:
        return mm.processing_interrupted()
