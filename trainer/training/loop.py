"""The training loop: one narrated pass over kohya-style epochs on the graph's own model.

It reads top to bottom: `plan_run` decides and checks what the run will do before any model is touched;
`inject_adapters` puts the peft adapters on clones of the graph's MODEL/CLIP; `prepare` builds the frozen
`TrainingContext` (encoded samples, loaded models, model sampling, optimizer, scheduler, scaler); then
`Trainer` walks the epochs, each step the diffusion maths in order. A distributed run hooks in through
`DataParallel` (which batches this process takes, and the gradient all-reduce before each optimizer step).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import logging
import math
import pathlib
import random
import time
from dataclasses import dataclass
from typing import Callable, Protocol

import comfy.model_management as mm
import torch

from ..data.buckets import samples_per_bucket, steps_per_epoch
from ..data.caption_augmentation import process_caption
from ..data.dataset import DatasetImage, LoraDataset
from ..data.kohya_summary import kohya_dataset_summary
from ..errors import DatasetError, DiskFull, OutOfMemory, SettingsError, TrainingDiverged
from ..files.kohya_names import text_encoder_name, unet_names
from ..models.families import GENERIC_PREFIX, Family, detect_family
from ..models.targets import text_encoder_targets, unet_targets
from . import batches, memory, objectives, run_folders, session
from .adapters import AdapterSet, create_adapters
from .flow_matching import FLUX_SHIFT
from .optim import FACTORED, build_optimizer, build_scheduler
from .precision import COMPUTE_DTYPES, PrecisionChoice, autocast, choose_precision
from .progress import EpochReport, StepReport, TrainingObserver
from .run_state import ADAPTERS_FILE, EPOCHS_FILE, OPTIMIZER_FILE, RunPosition, RunState, load_run_state, save_run_state
from .settings import FAMILY_DEFAULT, TrainingSettings
from .trained_lora import EpochWeights, TrainedLora

log = logging.getLogger(__name__)
# Called after each epoch with its kohya weights (e.g. to render samples); may load other models.
EpochWeightsHook = Callable[[int, dict[str, torch.Tensor]], None]


@dataclass
class TrainingOutcome:
    lora: TrainedLora
    warning: str = ""  # set when training stopped early (divergence, a full disk) but trained epochs were kept


class TrainingCancelled(Exception):
    """Raised after the resumable state was written; the node turns it into ComfyUI's interrupt."""

    def __init__(self, state_dir: pathlib.Path) -> None:
        super().__init__(f"Training cancelled; its state is in {state_dir}")
        self.state_dir = state_dir


class DataParallel(Protocol):
    """Where a multi-process run hooks in (trainer/training/data_parallel.py): each epoch is planned in global
    batches of batch_size x world_size samples, of which this process trains the positions `shard` gives; the
    adapter gradients are summed over processes before every optimizer step, and only the main process writes.
    A single process trains every position and reduces nothing."""

    world_size: int
    is_main: bool

    def shard(self, batch_size: int) -> range: ...

    def reduce_gradients(self, parameters: list[torch.nn.Parameter]) -> None: ...

    def total(self, value: float) -> float: ...

    def barrier(self) -> None: ...


class SingleProcess:
    world_size = 1
    is_main = True

    def shard(self, batch_size: int) -> range:
        return range(batch_size)

    def reduce_gradients(self, parameters: list[torch.nn.Parameter]) -> None:
        pass

    def total(self, value: float) -> float:
        return value

    def barrier(self) -> None:
        pass


def dataset_fingerprint(dataset: LoraDataset) -> str:
    text = "\n".join(f"{image.path}|{image.caption}|{image.repeats}" for image in dataset.images)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """Each sample's randomness (noise, noise level, flip, caption) depends only on its index in the epoch's order,
    so a resumed run repeats it exactly and it does not matter which process trains the sample."""
    return int(hashlib.sha256(f"{seed}:{epoch}:{index}".encode()).hexdigest()[:15], 16)


# ---------------------------------------------------------------------- the plan: decided before any model work


@dataclass(frozen=True)
class RunPlan:
    """What the run will do, checked before any model is touched."""

    model: object  # the graph's MODEL, CLIP and VAE, left as they are
    clip: object
    vae: object
    dataset: LoraDataset
    family: Family
    resolution: int
    device: torch.device
    requested: TrainingSettings  # as given, batch_size counting the global batch: what a resume must match
    settings: TrainingSettings  # with mixed_precision resolved: what everything computes with (batch_size per process)
    precision: PrecisionChoice
    state_dir: pathlib.Path
    resume_from: pathlib.Path | None
    resume: RunState | None
    initial_lora: TrainedLora | None
    processes: int = 1  # data-parallel processes, each training batch_size samples of every global batch

    @property
    def global_batch(self) -> int:
        return self.settings.batch_size * self.processes


def plan_run(model, clip, vae, dataset: LoraDataset, settings: TrainingSettings, state_dir: pathlib.Path,
             resume_from: pathlib.Path | None, initial_lora: TrainedLora | None, processes: int = 1) -> RunPlan:
    family = detect_family(model)
    resolution = settings.resolution or family.native_resolution
    if family.name.startswith(GENERIC_PREFIX):
        log.warning("LoRA Lab: %s is not in LoRA Lab's family table; training it the generic way: adapters on its "
                    "transformer blocks' linears with ComfyUI's key names, %d px (resolution %d), buckets of %d px, "
                    "its own noise schedule, text encoders frozen.", type(model.model.model_config).__name__,
                    family.native_resolution, resolution, family.bucket_step)
    _check_resolution(family, resolution)
    _check_settings_apply(family, settings)
    device = mm.get_torch_device()
    precision = choose_precision(settings.mixed_precision, device)
    with torch.inference_mode(False):  # nodes run in inference mode; the optimizer state must be trainable
        resume = load_run_state(resume_from) if resume_from else None
    # The state holds global progress (batches of the global batch), so N processes may save it and M resume it.
    requested = dataclasses.replace(settings, batch_size=settings.batch_size * processes)
    plan = RunPlan(model, clip, vae, dataset, family, resolution, device, requested,
                   dataclasses.replace(settings, mixed_precision=precision.value), precision, state_dir, resume_from,
                   resume, initial_lora, processes)
    if resume:
        _check_resumable(plan, resume)
    if initial_lora is not None:
        _check_continuable(plan, initial_lora)
    return plan


def _check_resolution(family: Family, resolution: int) -> None:
    """Buckets step in the family's latent grid (64 px for SD, 8 px for the toy world), as kohya's do."""
    step = family.bucket_step
    if resolution % step or resolution < step:
        raise SettingsError(f"resolution {resolution} must be a multiple of {step} for {family.name} models "
                            f"(e.g. {family.native_resolution}; 0 = native size).")


def timestep_sampler(family: Family, settings: TrainingSettings) -> str | None:
    """The flow-matching sampler a run uses (None: uniform over the model's own schedule)."""
    if family.prediction_type != "flow":
        return None
    return family.timestep_sampling if settings.timestep_sampling == FAMILY_DEFAULT else settings.timestep_sampling


def training_guidance(family: Family, settings: TrainingSettings) -> float | None:
    """What a Flux-type model's guidance input holds while training (None for models without one)."""
    return settings.guidance_scale if family.guidance_setting else family.fixed_guidance


def _check_settings_apply(family: Family, settings: TrainingSettings) -> None:
    """A setting that means nothing for the connected family is refused by name, never silently ignored."""
    s, flow, sampler = settings, family.prediction_type == "flow", timestep_sampler(family, settings)
    changed = {item.name for item in dataclasses.fields(s) if getattr(s, item.name) != item.default}
    if s.discrete_flow_shift == FLUX_SHIFT:  # the default before the family table held each family's shift:
        changed.discard("discrete_flow_shift")  # saved workflows of every family carry it
    refusals = []
    # The default min_snr_gamma is for eps/v models, so a flow model leaves it out; only a value the user chose is refused.
    if flow and "min_snr_gamma" in changed and s.min_snr_gamma > 0:
        refusals.append(f"min_snr_gamma {s.min_snr_gamma} weights eps/v noise levels by their SNR, which flow-matching "
                        "models do not have: set it to 0 (weighting_scheme weights a flow model's noise levels)")
    for name in ("timestep_sampling", "weighting_scheme"):
        if not flow and name in changed:
            refusals.append(f"{name} applies to flow-matching models (Flux, Chroma, SD3) only: leave it at its default")
    if "sigmoid_scale" in changed and sampler not in ("sigmoid", "shift", "flux_shift"):
        refusals.append(f"sigmoid_scale applies to the sigmoid, shift and flux_shift samplers, not to {sampler or 'the model schedule'}")
    if "discrete_flow_shift" in changed and sampler != "shift":
        refusals.append(f"discrete_flow_shift applies to the shift sampler, not to {sampler or 'the model schedule'}")
    if "guidance_scale" in changed and not family.guidance_setting:
        refusals.append("guidance_scale applies to guidance-distilled models (Flux.1 dev, Flux.2 dev) only: leave it at 1.0")
    if s.text_encoder_lr > 0 and not family.text_encoder_prefixes:
        refusals.append("text_encoder_lr trains CLIP text encoders, and this model has none: its T5 or LLM encoders stay "
                        "frozen, as kohya and musubi-tuner keep them: set it to 0")
    if refusals:
        raise SettingsError(f"Settings that do not apply to {family.name} models: " + "; ".join(refusals) + ".")


def _check_resumable(plan: RunPlan, state: RunState) -> None:
    differing = [name for name, value in plan.requested.as_dict().items()
                 if name != "epochs" and state.settings.get(name) != value]
    if differing:
        batch = (f" The saved run trained global batches of {state.settings.get('batch_size')} samples (batch_size x "
                 f"processes); this one would train {plan.requested.batch_size} ({plan.settings.batch_size} x "
                 f"{plan.processes}): choose batch_size so that batch_size x processes is the same."
                 if "batch_size" in differing else "")
        raise SettingsError(f"resume_from: the saved run used different settings ({', '.join(differing)}); "
                            "set them back to the saved values to continue it, or clear resume_from to start over."
                            + batch)
    if state.dataset_fingerprint != dataset_fingerprint(plan.dataset):
        raise SettingsError("resume_from: the dataset changed since the run was saved (images or captions differ); "
                            "continue with the same dataset, or clear resume_from.")


def _check_continuable(plan: RunPlan, lora: TrainedLora) -> None:
    s = plan.settings
    if lora.family != plan.family.name:
        raise SettingsError(f"initial_lora was trained for {lora.family}, but the connected model is {plan.family.name}.")
    if (lora.network, lora.rank) != (s.network, s.rank) or (s.trains_convs and lora.conv_rank not in (None, s.conv_rank)):
        raise SettingsError(f"initial_lora is a {lora.network} of rank {lora.rank}"
                            + (f" (conv rank {lora.conv_rank})" if lora.conv_rank else "")
                            + f"; set network {lora.network} and rank {lora.rank} to continue training it.")
    other_ranks = {key.rsplit(".", 2)[0]: tensor.shape[0] for key, tensor in lora.weights().items()
                   if key.endswith(".lora_down.weight") and tensor.ndim == 2 and tensor.shape[0] != s.rank}
    if other_ranks:
        name, rank = next(iter(sorted(other_ranks.items())))
        raise SettingsError(f"initial_lora: {len(other_ranks)} layers such as {name} have rank {rank}, not {s.rank} "
                            "like the rest (a diffusers/ai-toolkit file's split q/k/v LoRAs become one layer of the "
                            "summed rank on ComfyUI's fused layers); LoRA Lab continues LoRAs whose layers share one "
                            "rank: save or sweep this one, or train from scratch.")


# ---------------------------------------------------------------------- the adapters, on clones of the graph's models


@dataclass(frozen=True)
class TrainingParts:
    """Clones of the graph's MODEL (and CLIP, when it trains) with the adapters injected."""

    unet_patcher: object
    clip: object
    unet_adapters: AdapterSet | None
    text_adapters: AdapterSet | None

    @property
    def adapter_sets(self) -> list[AdapterSet]:
        return [adapters for adapters in (self.unet_adapters, self.text_adapters) if adapters]

    @property
    def patchers(self) -> list:
        """What loads for training: the UNet clone, and the CLIP clone when its encoder trains."""
        return [self.unet_patcher] + ([self.clip.patcher] if self.text_adapters else [])


def inject_adapters(plan: RunPlan) -> TrainingParts:
    s = plan.settings
    unet_patcher = session.isolated_clone(plan.model)
    session.compute_fp8_weights_in(unet_patcher, COMPUTE_DTYPES[s.mixed_precision])
    clip = plan.clip.clone() if s.trains_text_encoder else plan.clip
    # peft draws initial weights from torch's global generator: seed a private fork of it.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)
        unet_adapters, text_adapters = _create_adapters(plan, clip)
    if plan.initial_lora is not None and plan.resume is None:
        _start_from(plan.initial_lora, [adapters for adapters in (unet_adapters, text_adapters) if adapters])
    diffusion_model = unet_patcher.model.diffusion_model
    session.inject(unet_patcher, session.PartInjection(
        diffusion_model, unet_adapters, session.checkpoint_blocks(diffusion_model) if s.gradient_checkpointing else [],
        out_of_place_clip=False, device=plan.device))
    if text_adapters:
        session.inject(clip.patcher, session.PartInjection(
            clip.cond_stage_model, text_adapters, [], out_of_place_clip=True, device=plan.device))
    return TrainingParts(unet_patcher, clip, unet_adapters, text_adapters)


def _create_adapters(plan: RunPlan, clip) -> tuple[AdapterSet | None, AdapterSet | None]:
    s = plan.settings
    unet = None
    if s.unet_lr > 0:
        diffusion_model = plan.model.model.diffusion_model
        targets = unet_targets(diffusion_model, s.trains_convs, plan.family.adapter_blocks, plan.family.adapter_exclude)
        names = unet_names(plan.model.model.model_config.unet_config, plan.family, [t.path for t in targets])
        unet = create_adapters(targets, names, diffusion_model, s.network_type, s.rank, s.network_alpha,
                               s.conv_rank, s.network_conv_alpha)
    text = None
    if s.trains_text_encoder:
        encoder = clip.cond_stage_model
        targets = text_encoder_targets(encoder, plan.family.text_encoder_prefixes, plan.family.text_encoder_layers)
        names = {t.path: text_encoder_name(t.path, plan.family) for t in targets}
        text = create_adapters(targets, names, encoder, s.network_type, s.rank, s.network_alpha, s.conv_rank,
                               s.network_conv_alpha)
    for adapters in (unet, text):
        if adapters:
            adapters.to(plan.device)  # fp32 on the training device, whatever the base weights are
    return unet, text


def _start_from(initial_lora: TrainedLora, adapter_sets: list[AdapterSet]) -> None:
    """Continue an existing LoRA: its weights replace the fresh initialisation."""
    weights = initial_lora.weights()
    for adapters in adapter_sets:
        missing = adapters.load_kohya_state_dict(weights)
        if missing:
            log.warning("initial_lora has no weights for %d layers (e.g. %s); they start fresh.", len(missing), missing[0])


def remove_adapters(parts: TrainingParts) -> None:
    session.unload(parts.unet_patcher)
    if parts.text_adapters:
        session.unload(parts.clip.patcher)


# ---------------------------------------------------------------------- the context: built once before the loop


@dataclass(frozen=True)
class TrainingContext:
    """Everything the loop works with, built once: encoded samples, model sampling, optimizer and schedule."""

    samples: list[batches.Sample]
    validation_samples: list[batches.Sample]
    model_sampling: object  # ComfyUI's model_sampling: sigmas, noise and denoising in the model's own space
    noise_levels: objectives.NoiseLevels
    steps_per_epoch: int
    optimizer: torch.optim.Optimizer
    trainable: list[torch.nn.Parameter]
    scheduler: object
    scaler: torch.amp.GradScaler | None
    memory_estimate: memory.MemoryEstimate
    working_memory: int  # what ComfyUI frees beside the weights when it loads them for training


def prepare(plan: RunPlan, parts: TrainingParts, observer: TrainingObserver) -> TrainingContext:
    s = plan.settings
    observer.on_stage(plan.precision.reason)
    training_images, validation_images = batches.split_validation(list(plan.dataset.images), s.validation_split, s.seed)
    if not training_images:
        raise DatasetError(f"The dataset at {plan.dataset.shown_root or plan.dataset.root} has no training images "
                           "left after the validation split; lower validation_split or add images.")
    # Before any work: stop now, naming settings that would fit, if the estimated peak memory cannot fit.
    estimate = memory.check_fits(parts.unet_patcher, parts.clip, parts.unet_adapters, parts.text_adapters,
                                 training_images, s, plan.resolution, plan.family, plan.device)
    log.info("LoRA Lab: this run needs about %s", estimate.describe())
    # What training needs beside the weights: ComfyUI frees that much when it loads them (unloading the VAE
    # and a cached-away text encoder from the GPU), as it does for a sampler's activations. RAM is not freed.
    working_memory = 0 if plan.device.type == "cpu" else estimate.total - estimate.weights
    samples, validation_samples = _encode(plan, parts, training_images, validation_images, observer)
    mm.load_models_gpu(parts.patchers, memory_required=working_memory, force_full_load=True)
    model_sampling = parts.unet_patcher.get_model_object("model_sampling")
    per_bucket = samples_per_bucket((sample.bucket, sample.image.repeats) for sample in samples)
    steps = steps_per_epoch(per_bucket, plan.global_batch, s.gradient_accumulation)
    groups = []
    if parts.unet_adapters:
        groups.append({"params": parts.unet_adapters.parameters(), "lr": s.unet_lr})
    if parts.text_adapters:
        groups.append({"params": parts.text_adapters.parameters(), "lr": s.text_encoder_lr})
    optimizer = build_optimizer(s.optimizer, groups, plan.device)
    return TrainingContext(
        samples=samples, validation_samples=validation_samples, model_sampling=model_sampling,
        noise_levels=objectives.NoiseLevels(
            model_sampling.sigmas.to(plan.device, torch.float32), timestep_sampler(plan.family, s), s.sigmoid_scale,
            s.discrete_flow_shift or plan.family.flow_shift, s.weighting_scheme, s.min_snr_gamma, plan.family.latent_patch),
        steps_per_epoch=steps, optimizer=optimizer,
        trainable=[parameter for group in optimizer.param_groups for parameter in group["params"]],
        scheduler=build_scheduler(s.lr_scheduler, optimizer, s.warmup_steps, steps * s.epochs),
        scaler=torch.amp.GradScaler(plan.device.type) if s.mixed_precision == "fp16" else None,
        memory_estimate=estimate, working_memory=working_memory)


def _encode(plan: RunPlan, parts: TrainingParts, training_images: list[DatasetImage],
            validation_images: list[DatasetImage], observer: TrainingObserver
            ) -> tuple[list[batches.Sample], list[batches.Sample]]:
    """Every image encoded once with the VAE at its aspect bucket (the VAE is not needed again), and, with a
    frozen text encoder and fixed captions, every caption encoded once into the model's conditioning."""
    s = plan.settings
    observer.on_stage("Encoding images with the VAE")
    with torch.no_grad():
        samples = batches.encode_samples(training_images, plan.vae, plan.model, plan.resolution,
                                         plan.family.bucket_step, s.flip_augment, plan.device, lambda n: None)
        validation_samples = batches.encode_samples(validation_images, plan.vae, plan.model, plan.resolution,
                                                    plan.family.bucket_step, False, plan.device, lambda n: None)
        cached = samples + validation_samples if not s.trains_text_encoder and s.static_captions else validation_samples
        if cached:
            observer.on_stage("Encoding captions")
        for sample in cached:
            sample.conds = conditioning(plan, parts.clip, sample, sample.image.caption)
    return samples, validation_samples


def conditioning(plan: RunPlan, clip, sample: batches.Sample, caption: str) -> dict:
    """Text conditioning for one sample; carries gradients when the text encoder trains."""
    with contextlib.nullcontext() if plan.settings.trains_text_encoder else torch.no_grad():
        encoded = batches.encode_text(clip, caption)
    return batches.model_conds(plan.model, sample, encoded, plan.device, training_guidance(plan.family, plan.settings))


# ---------------------------------------------------------------------- the loop


class Trainer:
    """Walks the epochs of one planned, prepared run; the run's RunState is the only thing that changes."""

    def __init__(self, plan: RunPlan, parts: TrainingParts, context: TrainingContext, observer: TrainingObserver,
                 on_epoch_weights: EpochWeightsHook | None = None, keep_state: bool = False,
                 parallel: DataParallel = SingleProcess()) -> None:
        self.plan, self.parts, self.context = plan, parts, context
        self.settings = plan.settings
        self.device = plan.device
        self.observer = observer
        self.on_epoch_weights = on_epoch_weights
        self.keep_state = keep_state
        self.parallel = parallel

    def train(self) -> TrainingOutcome:
        s, context = self.settings, self.context
        state = self._initial_state()
        total_steps = context.steps_per_epoch * s.epochs
        self.observer.on_stage(f"Training {s.epochs} epochs x {context.steps_per_epoch} steps")
        started = time.monotonic()
        steps_this_session = 0
        for epoch in range(state.position.epoch, s.epochs + 1):
            order = batches.epoch_batches(context.samples, self.plan.global_batch, s.seed, epoch)
            firsts = list(itertools.accumulate((len(batch) for batch in order), initial=0))  # each batch's first index
            epoch_losses: list[float] = []
            accumulated: list[float] = []
            start_batch = state.position.batch_index if epoch == state.position.epoch else 0
            for batch_index in range(start_batch, len(order)):
                try:
                    share = self._micro_step(order[batch_index], epoch, firsts[batch_index])
                except mm.InterruptProcessingException as interrupt:
                    # ComfyUI's layers raise on cancel mid-forward: keep the last completed optimizer step.
                    raise self._cancelled(state) from interrupt
                loss = self.parallel.total(share)  # every process sees the batch's loss, and stops alike on NaN
                if not math.isfinite(loss):
                    warning = self._divergence_message(epoch, state)
                    if not state.epochs:
                        raise TrainingDiverged(warning)
                    return self._finished(state, warning)
                accumulated.append(loss)
                if len(accumulated) < s.gradient_accumulation and batch_index < len(order) - 1:
                    continue
                # Enough micro-batches accumulated (or the epoch's last): one optimizer step.
                self._optimizer_step()
                state.position = RunPosition(epoch, batch_index + 1, state.position.optimizer_step + 1)
                step_loss = sum(accumulated) / len(accumulated)
                accumulated.clear()
                epoch_losses.append(step_loss)
                learning_rate = context.scheduler.get_last_lr()[0]
                state.loss_history.append([state.position.optimizer_step, step_loss])
                state.learning_rate_history.append([state.position.optimizer_step, learning_rate])
                steps_this_session += 1
                rate = steps_this_session / max(1e-9, time.monotonic() - started)
                if self.parallel.total(float(self.observer.interrupted())):  # one cancels, all stop at this step
                    raise self._cancelled(state)
                self.observer.on_step(StepReport(state.position.optimizer_step, total_steps, epoch, s.epochs,
                                                 step_loss, learning_rate, rate))
            full_disk = None
            try:
                self._end_epoch(state, epoch, epoch_losses)
            except DiskFull as error:  # only the main process writes, so only it can find the disk full
                full_disk = error
            if self.parallel.total(float(full_disk is not None)):  # also where the others wait while it writes
                return self._stopped_by_full_disk(state, epoch, full_disk or DiskFull(
                    "The main process could not save the epoch.", str(self.plan.state_dir), 0))
        return self._finished(state)

    # ------------------------------------------------------------------ one step

    def _micro_step(self, batch: list[int], epoch: int, first: int) -> float:
        """Forward and backward for this process's slice of one micro-batch (`batch` indexes the samples; `first`
        is the index of its first sample in the epoch's order).

        Returns the slice's share of the batch's mean loss: the shares of all processes add up to it, and so do
        their gradients, whichever samples each process trained.
        """
        s, context = self.settings, self.context
        positions = self.parallel.shard(len(batch))
        if not positions:  # a bucket's last short batch left this process nothing: it adds zero gradients
            return 0.0
        samples = [context.samples[batch[position]] for position in positions]
        seeds = [sample_seed(s.seed, epoch, first + position) for position in positions]
        choosers = [random.Random(seed) for seed in seeds]

        # Clean latents, mirrored at random when flip augmentation is on.
        latents = torch.stack([
            sample.flipped_latents if sample.flipped_latents is not None and chooser.random() < 0.5 else sample.latents
            for sample, chooser in zip(samples, choosers)])
        conds = batches.batch_conds([sample.conds or self._conds_with_augmented_caption(sample, chooser)
                                     for sample, chooser in zip(samples, choosers)])

        # Forward diffusion: each sample's noise (with optional offset) at its own drawn noise level.
        drawn = [self._draw_noise(latent[None], torch.Generator(self.device).manual_seed(seed))
                 for latent, seed in zip(latents, seeds)]
        noise = torch.cat([sample_noise for sample_noise, _ in drawn])
        sigmas = torch.cat([sigma for _, sigma in drawn])
        noisy = objectives.noisy_latents(context.model_sampling, sigmas, noise, latents)

        # The model predicts; the loss is measured in its own prediction space, weighted per noise level.
        with autocast(s.mixed_precision, self.device):
            denoised = self._apply_model(noisy, sigmas, conds)
        losses = objectives.per_sample_loss(denoised, latents, sigmas, context.model_sampling)
        loss = (losses * context.noise_levels.weights(context.model_sampling, sigmas)).sum() / len(batch)
        scaled = loss / s.gradient_accumulation
        (context.scaler.scale(scaled) if context.scaler else scaled).backward()
        # The step's one device sync, after the backward is queued; a non-finite loss stops the run (caller).
        return loss.item()

    def _draw_noise(self, latent: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One sample's noise and noise level, from its own generator."""
        noise = torch.randn(latent.shape, generator=generator, device=self.device)
        if self.settings.noise_offset > 0:
            noise += self.settings.noise_offset * torch.randn((1, latent.shape[1]) + (1,) * (latent.ndim - 2),
                                                              generator=generator, device=self.device)
        return noise, self.context.noise_levels.draw(latent, generator)

    def _conds_with_augmented_caption(self, sample: batches.Sample, chooser: random.Random) -> dict:
        s = self.settings
        caption = process_caption(sample.image.caption, chooser, s.caption_shuffle, s.keep_tokens, s.caption_dropout)
        return conditioning(self.plan, self.parts.clip, sample, caption)

    def _apply_model(self, noisy: torch.Tensor, sigmas: torch.Tensor,
                     conds: list[tuple[slice, dict[str, torch.Tensor]]]) -> torch.Tensor:
        patcher = self.parts.unet_patcher
        options = patcher.model_options.get("transformer_options", {}).copy()
        return torch.cat([patcher.model.apply_model(noisy[run], sigmas[run], transformer_options=options, **run_conds)
                          for run, run_conds in conds])

    def _optimizer_step(self) -> None:
        context = self.context
        self.parallel.reduce_gradients(context.trainable)
        if context.scaler:
            context.scaler.unscale_(context.optimizer)
        if self.settings.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(context.trainable, self.settings.max_grad_norm)
        if context.scaler:
            context.scaler.step(context.optimizer)
            context.scaler.update()
        else:
            context.optimizer.step()
        context.scheduler.step()
        context.optimizer.zero_grad(set_to_none=True)

    # ------------------------------------------------------------------ epochs, validation

    def validation_loss(self) -> float | None:
        """Mean loss over held-out images at fixed timesteps and fixed noise: comparable across epochs."""
        context = self.context
        if not context.validation_samples:
            return None
        generator = torch.Generator().manual_seed(self.settings.seed)
        sigmas = objectives.validation_sigmas(context.model_sampling)
        total = []
        with torch.no_grad(), autocast(self.settings.mixed_precision, self.device):
            for sample in context.validation_samples:
                for sigma in sigmas:
                    noise = torch.randn((1, *sample.latents.shape), generator=generator).to(self.device)
                    sigma_batch = sigma.view(1).to(self.device)
                    noisy = objectives.noisy_latents(context.model_sampling, sigma_batch, noise, sample.latents[None])
                    denoised = self._apply_model(noisy, sigma_batch, batches.batch_conds([sample.conds]))
                    total.append(objectives.per_sample_loss(denoised, sample.latents[None], sigma_batch,
                                                            context.model_sampling).item())
        return sum(total) / len(total)

    def _end_epoch(self, state: RunState, epoch: int, losses: list[float]) -> None:
        s = self.settings
        train_loss = sum(losses) / len(losses) if losses else float("nan")
        validation = self.validation_loss()
        if validation is not None:
            state.validation_history.append([epoch, validation])
        keep = epoch == s.epochs or (s.save_every_n_epochs > 0 and epoch % s.save_every_n_epochs == 0)
        weights = self._kohya_weights() if keep or self.on_epoch_weights else None
        if keep:
            state.epochs[epoch] = EpochWeights(epoch, state.position.optimizer_step, weights, train_loss, validation)
        state.position = RunPosition(epoch + 1, 0, state.position.optimizer_step)
        self._save_state(state)
        self.observer.on_epoch(EpochReport(epoch, s.epochs, train_loss, validation))
        if self.on_epoch_weights:
            self._hand_over_epoch(epoch, weights)

    def _hand_over_epoch(self, epoch: int, weights: dict[str, torch.Tensor]) -> None:
        """Run the epoch hook on the graph's own models, then continue training exactly where it was.

        The adapters leave the module tree first, so LoraLoader's key mapping sees the original layers;
        the hook's patched clones of the same model make ComfyUI unload ours, so they are loaded
        (and the adapters injected) again afterwards. Adapters and optimizer state are untouched.
        """
        for patcher in self.parts.patchers:
            patcher.eject_model()
        self.on_epoch_weights(epoch, weights)
        mm.load_models_gpu(self.parts.patchers, memory_required=self.context.working_memory, force_full_load=True)

    def _kohya_weights(self) -> dict[str, torch.Tensor]:
        weights = {}
        for adapters in self.parts.adapter_sets:
            weights.update(adapters.kohya_state_dict())
        return weights

    # ------------------------------------------------------------------ the run's state: start, save, resume

    def _initial_state(self) -> RunState:
        plan, context = self.plan, self.context
        if plan.resume is None:
            return RunState(run_folders.new_run_id(), plan.requested.as_dict(), plan.family.name,
                            dataset_fingerprint(plan.dataset), RunPosition(), {}, {}, {}, None, started_at=time.time())
        state = plan.resume
        self._check_resumed_tensors(state)
        for adapters in self.parts.adapter_sets:
            adapters.load_raw_state(state.adapters)
        try:
            context.optimizer.load_state_dict(state.optimizer)
            context.scheduler.load_state_dict(state.scheduler)
            if context.scaler and state.scaler:
                context.scaler.load_state_dict(state.scaler)
        except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as error:
            raise SettingsError(f"resume_from: the optimizer state in {plan.resume_from} ({OPTIMIZER_FILE}) does not "
                                f"fit this run ({error}); the state is damaged. Start the run again.") from error
        self._check_optimizer_shapes()
        s = self.settings
        if state.position.batch_index >= len(batches.epoch_batches(context.samples, plan.global_batch, s.seed,
                                                                    state.position.epoch)):
            state.position = RunPosition(state.position.epoch + 1, 0, state.position.optimizer_step)
        return state

    def _save_state(self, state: RunState) -> None:
        if not self.parallel.is_main:  # the others hold the same state; one process writes it
            return
        context = self.context
        raw = {}
        for adapters in self.parts.adapter_sets:
            raw.update(adapters.raw_state())
        state.adapters = raw
        state.optimizer = context.optimizer.state_dict()
        state.scheduler = context.scheduler.state_dict()
        state.scaler = context.scaler.state_dict() if context.scaler else None
        save_run_state(self.plan.state_dir, state)

    def _check_resumed_tensors(self, state: RunState) -> None:
        """The saved adapters and epochs must have this run's layers and shapes, or nothing after would make sense."""
        expected = {key: tuple(value.shape) for adapters in self.parts.adapter_sets
                    for key, value in adapters.raw_state().items()}
        if {key: tuple(value.shape) for key, value in state.adapters.items()} != expected:
            raise SettingsError(f"resume_from: the adapters in {self.plan.resume_from} ({ADAPTERS_FILE}) do not have "
                                "this model's layers and shapes; the state is damaged or from another model. Start "
                                "the run again.")
        kohya = {key: tuple(value.shape) for key, value in self._kohya_weights().items()}
        for epoch, weights in state.epochs.items():
            if {key: tuple(value.shape) for key, value in weights.weights.items()} != kohya:
                raise SettingsError(f"resume_from: epoch {epoch} in {self.plan.resume_from} ({EPOCHS_FILE}) does not "
                                    "have this model's layers and shapes; the state is damaged. Start the run again.")

    def _check_optimizer_shapes(self) -> None:
        """Per-parameter optimizer state must match its parameter (factored and 8-bit states have their own shapes)."""
        if self.settings.optimizer in FACTORED:
            return
        for parameter in self.context.trainable:
            for name, value in self.context.optimizer.state.get(parameter, {}).items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != parameter.shape:
                    raise SettingsError(f"resume_from: the optimizer state '{name}' in {self.plan.resume_from} "
                                        f"({OPTIMIZER_FILE}) has shape {tuple(value.shape)} for a parameter of shape "
                                        f"{tuple(parameter.shape)}; the state is damaged. Start the run again.")

    # ------------------------------------------------------------------ how a run ends

    def _finished(self, state: RunState, warning: str = "") -> TrainingOutcome:
        """A run that ended (every epoch, or diverged): its state is of no further use unless asked to keep it."""
        kept = self.keep_state or (self.parallel.is_main and not run_folders.remove_run(self.plan.state_dir, state.run_id))
        return TrainingOutcome(self._result(state, self.plan.state_dir if kept else None), warning)

    def _stopped_by_full_disk(self, state: RunState, epoch: int, error: DiskFull) -> TrainingOutcome:
        """Keep what was trained: the epochs so far go out in the LORA, the last saved state stays resumable."""
        if not state.epochs:
            raise error
        kept = ", ".join(str(number) for number in sorted(state.epochs))
        warning = (f"Training stopped at the end of epoch {epoch}. {error} {self._resume_hint()} The LORA output holds "
                   f"the epochs trained so far ({kept}): save them with Save LoRA (on another disk if this one is full).")
        return TrainingOutcome(self._result(state, self.plan.state_dir), warning)

    def _cancelled(self, state: RunState) -> TrainingCancelled:
        """Save the state at the last completed optimizer step; the caller raises what this returns."""
        try:
            self._save_state(state)
        except DiskFull as error:
            raise DiskFull(f"Training was cancelled, but its state could not be saved. {error} {self._resume_hint()}",
                           error.folder, error.needed) from error
        return TrainingCancelled(self.plan.state_dir)

    def _resume_hint(self) -> str:
        state_dir = self.plan.state_dir
        if run_folders.has_saved_state(state_dir):
            return f"The last saved state is kept in {state_dir}: set resume_from to it to continue once there is space."
        return "No state of this run could be saved yet."

    def _divergence_message(self, epoch: int, state: RunState) -> str:
        s = self.settings
        kept = f"The last good epoch ({max(state.epochs)}) is kept." if state.epochs else "No epoch finished, so nothing was kept."
        advice = ("fp16 overflows easily: use mixed_precision bf16 (or fp32)" if s.mixed_precision == "fp16"
                  else f"lower unet_lr (now {s.unet_lr:g})" + (f" and text_encoder_lr (now {s.text_encoder_lr:g})" if s.trains_text_encoder else ""))
        return f"Training stopped in epoch {epoch}: the loss became NaN/inf (diverged). {kept} To fix: {advice}."

    def _result(self, state: RunState, state_dir: pathlib.Path | None) -> TrainedLora:
        s, plan, context = self.settings, self.plan, self.context
        validation = [(int(e), float(v)) for e, v in state.validation_history]
        if validation:
            best = min((v, e) for e, v in validation if e in state.epochs) if any(e in state.epochs for e, _ in validation) else None
            recommended = best[1] if best else max(state.epochs)
            reason = f"epoch {recommended} has the lowest validation loss among the kept epochs"
        else:
            recommended = max(state.epochs)
            reason = "no validation split was set, so the last epoch is recommended; set validation_split to choose by held-out loss"
        summary = kohya_dataset_summary(plan.dataset)
        summary.update(resolution=plan.resolution, num_validation_images=len(context.validation_samples),
                       buckets=sorted({sample.bucket for sample in context.samples}),
                       steps_per_epoch=context.steps_per_epoch)
        return TrainedLora(
            family=plan.family.name, network=s.network, rank=s.rank, alpha=s.network_alpha,
            conv_rank=s.conv_rank if s.trains_convs else None, conv_alpha=s.network_conv_alpha if s.trains_convs else None,
            epochs=dict(state.epochs), settings=s.as_dict(), dataset_summary=summary,
            loss_history=[(int(a), float(b)) for a, b in state.loss_history],
            learning_rate_history=[(int(a), float(b)) for a, b in state.learning_rate_history],
            validation_history=validation, recommended_epoch=recommended, recommendation=reason,
            state_dir=None if state_dir is None else str(state_dir), started_at=state.started_at, finished_at=time.time(),
            memory_estimate=context.memory_estimate.as_dict(), processes=plan.processes,
        )


def train_lora(model, clip, vae, dataset: LoraDataset, settings: TrainingSettings, observer: TrainingObserver,
               state_dir: pathlib.Path, resume_from: pathlib.Path | None = None,
               initial_lora: TrainedLora | None = None, on_epoch_weights: EpochWeightsHook | None = None,
               keep_state: bool = False, parallel: DataParallel = SingleProcess()) -> TrainingOutcome:
    """Train a LoRA on the graph's MODEL/CLIP/VAE (from scratch, or continuing `initial_lora`); they are left as they were.

    The resumable state in `state_dir` is removed when the run finishes, unless `keep_state`; a cancelled run,
    or one stopped by a full disk, keeps it. trainer/training/run.py decides `state_dir` and the hook for callers.
    """
    plan = plan_run(model, clip, vae, dataset, settings, state_dir, resume_from, initial_lora, parallel.world_size)
    with torch.inference_mode(False), session.training_flag():
        parts = inject_adapters(plan)
        try:
            return _train(plan, parts, observer, on_epoch_weights, keep_state, parallel)
        except mm.OOM_EXCEPTION as error:
            raise OutOfMemory(
                f"Out of GPU memory while training at resolution {plan.resolution}, batch_size {settings.batch_size}, "
                f"rank {settings.rank}. Lower batch_size or resolution, turn gradient_checkpointing on, "
                "use optimizer AdamW8bit or Adafactor, or set text_encoder_lr to 0. The memory was released."
            ) from error
        finally:
            remove_adapters(parts)
            del parts
            session.release_memory()


def _train(plan: RunPlan, parts: TrainingParts, observer: TrainingObserver, on_epoch_weights: EpochWeightsHook | None,
           keep_state: bool, parallel: DataParallel) -> TrainingOutcome:
    """Prepare and run in a frame of their own, so the context's tensors are gone when memory is released."""
    context = prepare(plan, parts, observer)
    return Trainer(plan, parts, context, observer, on_epoch_weights, keep_state, parallel).train()
