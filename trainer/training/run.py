"""The one entry point of a training run, for Train LoRA and a headless command alike.

`run_training` takes plain values: the settings, the dataset, ComfyUI's MODEL/CLIP/VAE objects, the output
folder, the run options (resume, sample prompts, keeping the state) and an observer for progress, samples and
cancelling. It decides where the run's resumable state lives (a new `<date>-<time>-seed<seed>` folder, or the
one `resume_from` names), wires the epoch sample renderer, and trains (trainer/training/loop.py), data-parallel
when the process joined a launch's process group (trainer/training/data_parallel.py), where only the main process
renders samples and writes.
"""
from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass, field
from typing import Protocol

import comfy.model_management as mm
import torch

from ..data.dataset import LoraDataset
from ..models.families import detect_family
from ..setting_fields import setting
from ..sweep.epoch_samples import EpochSampler, parse_sample_prompts, sample_defaults
from . import data_parallel, run_folders
from .loop import TrainingCancelled, train_lora
from .progress import TrainingObserver
from .settings import TrainingSettings
from .trained_lora import TrainedLora

SAMPLES_FOLDER = "loralab/samples"  # under the output folder, one subfolder per run


@dataclass(frozen=True)
class RunOptions:
    """How a run is kept and watched, beside what it computes: Train LoRA's optional inputs, in this order."""

    resume_from: str = setting("", "The run to continue: the folder name in output/loralab/training_state (or the "
                                   "path printed when it was cancelled)", optional=True)
    sample_prompts: str = setting("", "One prompt per line, rendered with the LoRA after every sample_every_n_epochs "
                                      "epochs (training resolution and seed, 20 euler steps); kohya options --n --w "
                                      "--h --d --l --s override them", optional=True, widget={"multiline": True})
    sample_every_n_epochs: int = setting(0, "0 = no samples", min=0, max=10000, optional=True)
    keep_training_state: bool = setting(False, "Keep the resumable state of a finished run in "
                                               "output/loralab/training_state (a cancelled run's is always kept; a "
                                               "finished one's is deleted to save disk space)", optional=True)

    @property
    def wants_samples(self) -> bool:
        return bool(self.sample_prompts.strip()) and self.sample_every_n_epochs > 0


class RunObserver(TrainingObserver, Protocol):
    def started(self, state_dir: pathlib.Path) -> None:
        """Where this run's resumable state will be."""

    def cancelled(self, state_dir: pathlib.Path | None) -> None:
        """Where to resume from; None when cancelled before anything was saved."""

    def on_sample(self, epoch: int, index: int, total: int, image: torch.Tensor) -> None:
        """Sample `index` of `total` of `epoch` was rendered and saved."""


@dataclass
class RunResult:
    lora: TrainedLora
    state_dir: pathlib.Path
    warning: str = ""  # set when training stopped early but trained epochs were kept
    sample_files: list[dict[str, str]] = field(default_factory=list)  # ComfyUI `ui` image entries
    writes_files: bool = True  # False in a data-parallel run's other processes: the main process writes


def run_training(model, clip, vae, dataset: LoraDataset, settings: TrainingSettings, observer: RunObserver, *,
                 output_directory: str | os.PathLike, options: RunOptions = RunOptions(),
                 initial_lora: TrainedLora | None = None, prompt: dict | None = None,
                 extra_pnginfo: dict | None = None) -> RunResult:
    """Train a LoRA on the graph's MODEL/CLIP/VAE; they are left as they were.

    The state goes to `<output_directory>/loralab/training_state/<run>`, samples to `<output>/loralab/samples/<run>`
    (with `prompt`/`extra_pnginfo` embedded as ComfyUI's SaveImage does). On cancel, `observer.cancelled` says
    where to resume and TrainingCancelled (or ComfyUI's interrupt, when it came between saves) propagates.
    """
    resume = run_folders.resolve_resume_from(options.resume_from, output_directory) if options.resume_from.strip() else None
    state_dir = resume or run_folders.new_run_folder(output_directory, settings.seed)
    parallel = data_parallel.current()
    sampler = (_epoch_sampler(model, clip, vae, settings, options, state_dir, observer, prompt, extra_pnginfo)
               if parallel.is_main else None)
    observer.started(state_dir)
    try:
        outcome = train_lora(model, clip, vae, dataset, settings, observer, state_dir, resume, initial_lora,
                             on_epoch_weights=sampler, keep_state=options.keep_training_state, parallel=parallel)
    except TrainingCancelled as cancelled:
        if parallel.is_main:  # the one process that saved the state names it
            observer.cancelled(cancelled.state_dir)
        raise
    except mm.InterruptProcessingException:  # while encoding, or rendering samples: between saves
        if parallel.is_main:
            observer.cancelled(state_dir if run_folders.has_saved_state(state_dir) else None)
        raise
    if sampler is None:
        return RunResult(outcome.lora, state_dir, outcome.warning, writes_files=parallel.is_main)
    outcome.lora.samples = dict(sampler.samples)
    return RunResult(outcome.lora, state_dir, outcome.warning, list(sampler.files))


def _epoch_sampler(model, clip, vae, settings: TrainingSettings, options: RunOptions, state_dir: pathlib.Path,
                   observer: RunObserver, prompt: dict | None, extra_pnginfo: dict | None) -> EpochSampler | None:
    """The training hook that renders the sample prompts and saves them under output/loralab/samples/<run>."""
    if not options.wants_samples:
        return None
    family = detect_family(model)
    prompts = parse_sample_prompts(options.sample_prompts, sample_defaults(settings.resolution or family.native_resolution,
                                                                           settings.seed, family))

    def show(epoch: int, index: int, image: torch.Tensor) -> None:
        observer.on_sample(epoch, index, len(prompts), image)

    return EpochSampler(model, clip, vae, prompts, options.sample_every_n_epochs, f"{SAMPLES_FOLDER}/{state_dir.name}",
                        show, prompt, extra_pnginfo)
