"""The training loop: one narrated pass over kohya-style epochs on the graph's own model."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import pathlib
import random
import time
from dataclasses import dataclass
from typing import Callable

import comfy.model_management as mm
import torch

from ..data.caption_augmentation import process_caption
from ..data.dataset import LoraDataset
from ..data.report import kohya_dataset_summary
from ..errors import DatasetError, DiskFull, OutOfMemory, SettingsError, TrainingDiverged
from ..files.kohya_names import text_encoder_name, unet_names
from ..models.families import Family, detect_family
from ..models.targets import text_encoder_targets, unet_targets
from . import batches, memory, objectives, run_folders, session
from .adapters import AdapterSet, create_adapters
from .optim import build_optimizer, build_scheduler
from .precision import choose_precision
from .progress import EpochReport, StepReport, TrainingObserver
from .run_state import ADAPTERS_FILE, EPOCHS_FILE, OPTIMIZER_FILE, RunPosition, RunState, load_run_state, save_run_state
from .settings import TrainingSettings
from .trained_lora import EpochWeights, TrainedLora

log = logging.getLogger(__name__)
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
FACTORED_OPTIMIZERS = ("Adafactor", "AdamW8bit")  # per-parameter state in row/column factors or quantised blocks
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


def dataset_fingerprint(dataset: LoraDataset) -> str:
    text = "\n".join(f"{image.path}|{image.caption}|{image.repeats}" for image in dataset.images)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def step_seed(seed: int, epoch: int, batch_index: int) -> int:
    """Each batch's randomness depends only on its position, so a resumed run repeats it exactly."""
    return int(hashlib.sha256(f"{seed}:{epoch}:{batch_index}".encode()).hexdigest()[:15], 16)


class Trainer:
    """Holds one run's pieces so the loop below reads as the maths it does."""

    def __init__(self, model, clip, vae, dataset: LoraDataset, settings: TrainingSettings, observer: TrainingObserver,
                 state_dir: pathlib.Path, resume_from: pathlib.Path | None = None,
                 initial_lora: TrainedLora | None = None, on_epoch_weights: EpochWeightsHook | None = None,
                 keep_state: bool = False) -> None:
        self.model, self.clip, self.vae = model, clip, vae
        self.initial_lora = initial_lora
        self.on_epoch_weights = on_epoch_weights
        self.dataset, self.observer = dataset, observer
        self.state_dir, self.resume_from, self.keep_state = state_dir, resume_from, keep_state
        self.family: Family = detect_family(model)
        self.resolution = settings.resolution or self.family.native_resolution
        self._check_resolution()
        self.device = mm.get_torch_device()
        # Settings as given are what a resume must match; everything computed uses the resolved precision.
        self.requested_settings = settings
        self.precision = choose_precision(settings.mixed_precision, self.device)
        self.settings = dataclasses.replace(settings, mixed_precision=self.precision.value)
        with torch.inference_mode(False):  # nodes run in inference mode; the optimizer state must be trainable
            self.resume = load_run_state(resume_from) if resume_from else None
        if self.resume:
            self._check_resumable(self.resume)
        if initial_lora is not None:
            self._check_continuable(initial_lora)

    # ------------------------------------------------------------------ setup

    def _check_resolution(self) -> None:
        """Buckets step in the family's latent grid (64 px for SD, 8 px for the toy world), as kohya's do."""
        step = self.family.bucket_step
        if self.resolution % step or self.resolution < step:
            raise SettingsError(f"resolution {self.resolution} must be a multiple of {step} for {self.family.name} models "
                                f"(e.g. {self.family.native_resolution}; 0 = native size).")

    def _check_resumable(self, state: RunState) -> None:
        differing = [name for name, value in self.requested_settings.as_dict().items()
                     if name != "epochs" and state.settings.get(name) != value]
        if differing:
            raise SettingsError(f"resume_from: the saved run used different settings ({', '.join(differing)}); "
                                "set them back to the saved values to continue it, or clear resume_from to start over.")
        if state.dataset_fingerprint != dataset_fingerprint(self.dataset):
            raise SettingsError("resume_from: the dataset changed since the run was saved (images or captions differ); "
                                "continue with the same dataset, or clear resume_from.")

    def _check_continuable(self, lora: TrainedLora) -> None:
        s = self.settings
        if lora.family != self.family.name:
            raise SettingsError(f"initial_lora was trained for {lora.family}, but the connected model is {self.family.name}.")
        if (lora.network, lora.rank) != (s.network, s.rank) or (s.trains_convs and lora.conv_rank not in (None, s.conv_rank)):
            raise SettingsError(f"initial_lora is a {lora.network} of rank {lora.rank}"
                                + (f" (conv rank {lora.conv_rank})" if lora.conv_rank else "")
                                + f"; set network {lora.network} and rank {lora.rank} to continue training it.")

    def _start_from_initial_lora(self) -> None:
        """Continue an existing LoRA: its weights replace the fresh initialisation."""
        weights = self.initial_lora.weights()
        for adapters in (self.unet_adapters, self.text_adapters):
            if adapters:
                missing = adapters.load_kohya_state_dict(weights)
                if missing:
                    log.warning("initial_lora has no weights for %d layers (e.g. %s); they start fresh.", len(missing), missing[0])

    def _build_adapters(self) -> tuple[AdapterSet | None, AdapterSet | None]:
        # peft draws initial weights from torch's global generator: seed a private fork of it.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.settings.seed)
            return self._create_adapters()

    def _create_adapters(self) -> tuple[AdapterSet | None, AdapterSet | None]:
        s = self.settings
        unet = None
        if s.unet_lr > 0:
            diffusion_model = self.model.model.diffusion_model
            targets = unet_targets(diffusion_model, include_convs=s.trains_convs)
            names = unet_names(self.model.model.model_config.unet_config, self.family, [t.path for t in targets])
            unet = create_adapters(targets, names, diffusion_model, s.network, s.rank, s.network_alpha,
                                   s.conv_rank, s.network_conv_alpha)
        text = None
        if s.trains_text_encoder:
            encoder = self.clip_for_training.cond_stage_model
            targets = text_encoder_targets(encoder, self.family.text_encoder_prefixes, self.family.text_encoder_layers)
            names = {t.path: text_encoder_name(t.path, self.family) for t in targets}
            text = create_adapters(targets, names, encoder, s.network, s.rank, s.network_alpha, s.conv_rank, s.network_conv_alpha)
        for adapters in (unet, text):
            if adapters:
                adapters.to(self.device)  # fp32 on the training device, whatever the base weights are
        return unet, text

    # ------------------------------------------------------------------ run

    def run(self) -> TrainingOutcome:
        with torch.inference_mode(False), session.training_flag():
            self.unet_patcher = session.isolated_clone(self.model)
            session.compute_fp8_weights_in(self.unet_patcher, memory.COMPUTE_DTYPES[self.settings.mixed_precision])
            self.clip_for_training = self.clip.clone() if self.settings.trains_text_encoder else self.clip
            self.unet_adapters, self.text_adapters = self._build_adapters()
            if self.initial_lora is not None and self.resume is None:
                self._start_from_initial_lora()
            session.inject(self.unet_patcher, session.PartInjection(
                self.unet_patcher.model.diffusion_model, self.unet_adapters,
                session.checkpoint_blocks(self.unet_patcher.model.diffusion_model) if self.settings.gradient_checkpointing else [],
                out_of_place_clip=False, device=self.device))
            if self.text_adapters:
                session.inject(self.clip_for_training.patcher, session.PartInjection(
                    self.clip_for_training.cond_stage_model, self.text_adapters, [], out_of_place_clip=True, device=self.device))
            try:
                return self._train()
            except mm.OOM_EXCEPTION as error:
                raise OutOfMemory(
                    f"Out of GPU memory while training at resolution {self.resolution}, batch_size {self.settings.batch_size}, "
                    f"rank {self.settings.rank}. Lower batch_size or resolution, turn gradient_checkpointing on, "
                    "use optimizer AdamW8bit or Adafactor, or set text_encoder_lr to 0. The memory was released."
                ) from error
            finally:
                session.unload(self.unet_patcher)
                if self.text_adapters:
                    session.unload(self.clip_for_training.patcher)
                self.unet_adapters = self.text_adapters = None
                session.release_memory()

    def _train(self) -> TrainingOutcome:
        s = self.settings
        self.observer.on_stage(self.precision.reason)
        training_images, validation_images = batches.split_validation(list(self.dataset.images), s.validation_split, s.seed)
        if not training_images:
            raise DatasetError(f"The dataset at {self.dataset.shown_root or self.dataset.root} has no training images "
                               "left after the validation split; lower validation_split or add images.")
        # Before any work: stop now, naming settings that would fit, if the estimated peak memory cannot fit.
        estimate = memory.check_fits(self.unet_patcher, self.clip_for_training, self.unet_adapters, self.text_adapters,
                                     training_images, s, self.resolution, self.family.bucket_step, self.device)
        self.memory_estimate = estimate
        log.info("LoRA Lab: this run needs about %s", estimate.describe())
        # What training needs beside the weights: ComfyUI frees that much when it loads them (unloading the VAE
        # and a cached-away text encoder from the GPU), as it does for a sampler's activations. RAM is not freed.
        self.working_memory = 0 if self.device.type == "cpu" else estimate.total - estimate.weights

        # Encode every image once with the VAE, at its aspect bucket; the VAE is not needed again.
        self.observer.on_stage("Encoding images with the VAE")
        with torch.no_grad():
            self.samples = batches.encode_samples(training_images, self.vae, self.model, self.resolution,
                                               self.family.bucket_step, s.flip_augment, self.device, lambda n: None)
            self.validation_samples = batches.encode_samples(validation_images, self.vae, self.model, self.resolution,
                                                          self.family.bucket_step, False, self.device, lambda n: None)
            # Frozen text encoder and fixed captions: encode each caption once and keep the model conditioning.
            cached = self.samples + self.validation_samples if not s.trains_text_encoder and s.static_captions else self.validation_samples
            if cached:
                self.observer.on_stage("Encoding captions")
            for sample in cached:
                sample.conds = self._conds_for(sample, sample.image.caption)

        self._load_for_training()
        self.model_sampling = self.unet_patcher.get_model_object("model_sampling")
        self.sigma_table = self.model_sampling.sigmas.to(self.device, torch.float32)
        self.prediction = objectives.prediction_type(self.model_sampling)

        batches_per_epoch = len(batches.epoch_batches(self.samples, s.batch_size, s.seed, 1))
        self.steps_per_epoch = math.ceil(batches_per_epoch / s.gradient_accumulation)
        total_steps = self.steps_per_epoch * s.epochs
        groups = []
        if self.unet_adapters:
            groups.append({"params": self.unet_adapters.parameters(), "lr": s.unet_lr})
        if self.text_adapters:
            groups.append({"params": self.text_adapters.parameters(), "lr": s.text_encoder_lr})
        self.optimizer = build_optimizer(s.optimizer, groups, self.device)
        self.trainable = [parameter for group in self.optimizer.param_groups for parameter in group["params"]]
        self.scheduler = build_scheduler(s.lr_scheduler, self.optimizer, s.warmup_steps, total_steps)
        self.scaler = torch.amp.GradScaler(self.device.type) if s.mixed_precision == "fp16" else None

        state = self._initial_state()
        self.observer.on_stage(f"Training {s.epochs} epochs x {self.steps_per_epoch} steps")
        started = time.monotonic()
        steps_this_session = 0
        for epoch in range(state.position.epoch, s.epochs + 1):
            order = batches.epoch_batches(self.samples, s.batch_size, s.seed, epoch)
            epoch_losses: list[float] = []
            accumulated: list[float] = []
            start_batch = state.position.batch_index if epoch == state.position.epoch else 0
            for batch_index in range(start_batch, len(order)):
                try:
                    loss = self._micro_step(order[batch_index], step_seed(s.seed, epoch, batch_index))
                except mm.InterruptProcessingException as interrupt:
                    # ComfyUI's layers raise on cancel mid-forward: keep the last completed optimizer step.
                    raise self._cancelled(state) from interrupt
                if not math.isfinite(loss):
                    warning = self._divergence_message(epoch, state)
                    if not state.epochs:
                        raise TrainingDiverged(warning)
                    return self._finished(state, warning)
                accumulated.append(loss)
                is_last = batch_index == len(order) - 1
                if len(accumulated) < s.gradient_accumulation and not is_last:
                    continue
                # Enough micro-batches accumulated: one optimizer step.
                self._optimizer_step()
                state.position = RunPosition(epoch, batch_index + 1, state.position.optimizer_step + 1)
                step_loss = sum(accumulated) / len(accumulated)
                accumulated.clear()
                epoch_losses.append(step_loss)
                learning_rate = self.scheduler.get_last_lr()[0]
                state.loss_history.append([state.position.optimizer_step, step_loss])
                state.learning_rate_history.append([state.position.optimizer_step, learning_rate])
                steps_this_session += 1
                rate = steps_this_session / max(1e-9, time.monotonic() - started)
                if self.observer.interrupted():
                    raise self._cancelled(state)
                self.observer.on_step(StepReport(state.position.optimizer_step, total_steps, epoch, s.epochs,
                                                 step_loss, learning_rate, rate))
            try:
                self._end_epoch(state, epoch, epoch_losses)
            except DiskFull as error:
                return self._stopped_by_full_disk(state, epoch, error)
        return self._finished(state)

    def _finished(self, state: RunState, warning: str = "") -> TrainingOutcome:
        """A run that ended (every epoch, or diverged): its state is of no further use unless asked to keep it."""
        kept = self.keep_state or not run_folders.remove_run(self.state_dir, state.run_id)
        return TrainingOutcome(self._result(state, self.state_dir if kept else None), warning)

    def _stopped_by_full_disk(self, state: RunState, epoch: int, error: DiskFull) -> TrainingOutcome:
        """Keep what was trained: the epochs so far go out in the LORA, the last saved state stays resumable."""
        if not state.epochs:
            raise error
        kept = ", ".join(str(number) for number in sorted(state.epochs))
        warning = (f"Training stopped at the end of epoch {epoch}. {error} {self._resume_hint()} The LORA output holds "
                   f"the epochs trained so far ({kept}): save them with Save LoRA (on another disk if this one is full).")
        return TrainingOutcome(self._result(state, self.state_dir), warning)

    def _cancelled(self, state: RunState) -> TrainingCancelled:
        """Save the state at the last completed optimizer step; the caller raises what this returns."""
        try:
            self._save_state(state)
        except DiskFull as error:
            raise DiskFull(f"Training was cancelled, but its state could not be saved. {error} {self._resume_hint()}",
                           error.folder, error.needed) from error
        return TrainingCancelled(self.state_dir)

    def _resume_hint(self) -> str:
        if run_folders.has_saved_state(self.state_dir):
            return f"The last saved state is kept in {self.state_dir}: set resume_from to it to continue once there is space."
        return "No state of this run could be saved yet."

    def _initial_state(self) -> RunState:
        if self.resume is None:
            return RunState(run_folders.new_run_id(), self.requested_settings.as_dict(), self.family.name,
                            dataset_fingerprint(self.dataset), RunPosition(), {}, {}, {}, None, started_at=time.time())
        state = self.resume
        self._check_resumed_tensors(state)
        self._load_adapters(state.adapters)
        try:
            self.optimizer.load_state_dict(state.optimizer)
            self.scheduler.load_state_dict(state.scheduler)
            if self.scaler and state.scaler:
                self.scaler.load_state_dict(state.scaler)
        except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as error:
            raise SettingsError(f"resume_from: the optimizer state in {self.resume_from} ({OPTIMIZER_FILE}) does not fit "
                                f"this run ({error}); the state is damaged. Start the run again.") from error
        self._check_optimizer_shapes()
        if state.position.batch_index >= len(batches.epoch_batches(self.samples, self.settings.batch_size, self.settings.seed, state.position.epoch)):
            state.position = RunPosition(state.position.epoch + 1, 0, state.position.optimizer_step)
        return state

    # ------------------------------------------------------------------ one step

    def _micro_step(self, batch: list[int], seed: int) -> float:
        """Forward and backward for one micro-batch; returns its loss."""
        s = self.settings
        generator = torch.Generator(self.device).manual_seed(seed)  # noise made where it is used: no copies
        chooser = random.Random(seed)
        samples = [self.samples[index] for index in batch]

        # Clean latents, mirrored at random when flip augmentation is on.
        latents = torch.stack([
            sample.flipped_latents if sample.flipped_latents is not None and chooser.random() < 0.5 else sample.latents
            for sample in samples])
        conds = batches.batch_conds([sample.conds or self._conds_for(sample, self._caption_for(sample, chooser)) for sample in samples])

        # Forward diffusion: noise (with optional offset) at a uniformly drawn training timestep per sample.
        noise = torch.randn(latents.shape, generator=generator, device=self.device)
        if s.noise_offset > 0:
            noise += s.noise_offset * torch.randn((latents.shape[0], latents.shape[1], 1, 1), generator=generator,
                                                  device=self.device)
        sigmas = objectives.sample_sigmas(self.sigma_table, latents.shape[0], generator)
        noisy = objectives.noisy_latents(self.model_sampling, sigmas, noise, latents)

        # The model predicts; the loss is measured in its own prediction space, min-SNR weighted.
        with self._autocast():
            denoised = self._apply_model(noisy, sigmas, conds)
        losses = objectives.per_sample_loss(denoised, latents, sigmas, self.model_sampling)
        loss = (losses * objectives.min_snr_weight(self.model_sampling, sigmas, s.min_snr_gamma)).mean()
        scaled = loss / s.gradient_accumulation
        (self.scaler.scale(scaled) if self.scaler else scaled).backward()
        # The step's one device sync, after the backward is queued; a non-finite loss stops the run (caller).
        return loss.item()

    def _apply_model(self, noisy: torch.Tensor, sigmas: torch.Tensor, conds: dict[str, torch.Tensor]) -> torch.Tensor:
        options = self.unet_patcher.model_options.get("transformer_options", {}).copy()
        return self.unet_patcher.model.apply_model(noisy, sigmas, transformer_options=options, **conds)

    def _optimizer_step(self) -> None:
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if self.settings.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.settings.max_grad_norm)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _autocast(self):
        dtype = AUTOCAST.get(self.settings.mixed_precision)
        return torch.autocast(self.device.type, dtype=dtype) if dtype else contextlib.nullcontext()

    def _caption_for(self, sample: batches.Sample, chooser: random.Random) -> str:
        s = self.settings
        return process_caption(sample.image.caption, chooser, s.caption_shuffle, s.keep_tokens, s.caption_dropout)

    def _conds_for(self, sample: batches.Sample, caption: str) -> dict:
        """Text conditioning for one sample; carries gradients when the text encoder trains."""
        with contextlib.nullcontext() if self.settings.trains_text_encoder else torch.no_grad():
            cond, pooled = batches.encode_text(self.clip_for_training, caption)
        return batches.model_conds(self.model, sample, cond.to(self.device), None if pooled is None else pooled.to(self.device), self.device)

    # ------------------------------------------------------------------ epochs, validation, results

    def validation_loss(self) -> float | None:
        """Mean loss over held-out images at fixed timesteps and fixed noise: comparable across epochs."""
        if not self.validation_samples:
            return None
        generator = torch.Generator().manual_seed(self.settings.seed)
        sigmas = objectives.validation_sigmas(self.model_sampling)
        total = []
        with torch.no_grad(), self._autocast():
            for sample in self.validation_samples:
                for sigma in sigmas:
                    noise = torch.randn((1, *sample.latents.shape), generator=generator).to(self.device)
                    sigma_batch = sigma.view(1).to(self.device)
                    noisy = objectives.noisy_latents(self.model_sampling, sigma_batch, noise, sample.latents[None])
                    denoised = self._apply_model(noisy, sigma_batch, batches.batch_conds([sample.conds]))
                    total.append(objectives.per_sample_loss(denoised, sample.latents[None], sigma_batch, self.model_sampling).item())
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

    def _load_for_training(self) -> None:
        mm.load_models_gpu(self._training_patchers(), memory_required=self.working_memory, force_full_load=True)

    def _training_patchers(self) -> list:
        return [self.unet_patcher] + ([self.clip_for_training.patcher] if self.text_adapters else [])

    def _hand_over_epoch(self, epoch: int, weights: dict[str, torch.Tensor]) -> None:
        """Run the epoch hook on the graph's own models, then continue training exactly where it was.

        The adapters leave the module tree first, so LoraLoader's key mapping sees the original layers;
        the hook's patched clones of the same model make ComfyUI unload ours, so they are loaded
        (and the adapters injected) again afterwards. Adapters and optimizer state are untouched.
        """
        patchers = self._training_patchers()
        for patcher in patchers:
            patcher.eject_model()
        self.on_epoch_weights(epoch, weights)
        self._load_for_training()

    def _kohya_weights(self) -> dict[str, torch.Tensor]:
        weights = {}
        for adapters in (self.unet_adapters, self.text_adapters):
            if adapters:
                weights.update(adapters.kohya_state_dict())
        return weights

    def _load_adapters(self, raw: dict[str, torch.Tensor]) -> None:
        for adapters in (self.unet_adapters, self.text_adapters):
            if adapters:
                adapters.load_raw_state(raw)

    def _save_state(self, state: RunState) -> None:
        raw = {}
        for adapters in (self.unet_adapters, self.text_adapters):
            if adapters:
                raw.update(adapters.raw_state())
        state.adapters = raw
        state.optimizer = self.optimizer.state_dict()
        state.scheduler = self.scheduler.state_dict()
        state.scaler = self.scaler.state_dict() if self.scaler else None
        save_run_state(self.state_dir, state)

    def _check_resumed_tensors(self, state: RunState) -> None:
        """The saved adapters and epochs must have this run's layers and shapes, or nothing after would make sense."""
        expected = {key: tuple(value.shape) for adapters in (self.unet_adapters, self.text_adapters) if adapters
                    for key, value in adapters.raw_state().items()}
        if {key: tuple(value.shape) for key, value in state.adapters.items()} != expected:
            raise SettingsError(f"resume_from: the adapters in {self.resume_from} ({ADAPTERS_FILE}) do not have this "
                                "model's layers and shapes; the state is damaged or from another model. Start the run again.")
        kohya = {key: tuple(value.shape) for key, value in self._kohya_weights().items()}
        for epoch, weights in state.epochs.items():
            if {key: tuple(value.shape) for key, value in weights.weights.items()} != kohya:
                raise SettingsError(f"resume_from: epoch {epoch} in {self.resume_from} ({EPOCHS_FILE}) does not have "
                                    "this model's layers and shapes; the state is damaged. Start the run again.")

    def _check_optimizer_shapes(self) -> None:
        """Per-parameter optimizer state must match its parameter (factored and 8-bit states have their own shapes)."""
        if self.settings.optimizer in FACTORED_OPTIMIZERS:
            return
        for parameter in self.trainable:
            for name, value in self.optimizer.state.get(parameter, {}).items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != parameter.shape:
                    raise SettingsError(f"resume_from: the optimizer state '{name}' in {self.resume_from} "
                                        f"({OPTIMIZER_FILE}) has shape {tuple(value.shape)} for a parameter of shape "
                                        f"{tuple(parameter.shape)}; the state is damaged. Start the run again.")

    def _divergence_message(self, epoch: int, state: RunState) -> str:
        s = self.settings
        kept = f"The last good epoch ({max(state.epochs)}) is kept." if state.epochs else "No epoch finished, so nothing was kept."
        advice = ("fp16 overflows easily: use mixed_precision bf16 (or fp32)" if s.mixed_precision == "fp16"
                  else f"lower unet_lr (now {s.unet_lr:g})" + (f" and text_encoder_lr (now {s.text_encoder_lr:g})" if s.trains_text_encoder else ""))
        return f"Training stopped in epoch {epoch}: the loss became NaN/inf (diverged). {kept} To fix: {advice}."

    def _result(self, state: RunState, state_dir: pathlib.Path | None) -> TrainedLora:
        s = self.settings
        validation = [(int(e), float(v)) for e, v in state.validation_history]
        if validation:
            best = min((v, e) for e, v in validation if e in state.epochs) if any(e in state.epochs for e, _ in validation) else None
            recommended = best[1] if best else max(state.epochs)
            reason = f"epoch {recommended} has the lowest validation loss among the kept epochs"
        else:
            recommended = max(state.epochs)
            reason = "no validation split was set, so the last epoch is recommended; set validation_split to choose by held-out loss"
        return TrainedLora(
            family=self.family.name, network=s.network, rank=s.rank, alpha=s.network_alpha,
            conv_rank=s.conv_rank if s.trains_convs else None, conv_alpha=s.network_conv_alpha if s.trains_convs else None,
            epochs=dict(state.epochs), settings=s.as_dict(), dataset_summary=self._dataset_summary(),
            loss_history=[(int(a), float(b)) for a, b in state.loss_history],
            learning_rate_history=[(int(a), float(b)) for a, b in state.learning_rate_history],
            validation_history=validation, recommended_epoch=recommended, recommendation=reason,
            state_dir=None if state_dir is None else str(state_dir), started_at=state.started_at, finished_at=time.time(),
            memory_estimate=self.memory_estimate.as_dict(),
        )

    def _dataset_summary(self) -> dict:
        summary = kohya_dataset_summary(self.dataset)
        summary.update(resolution=self.resolution, num_validation_images=len(self.validation_samples),
                       buckets=sorted({sample.bucket for sample in self.samples}), steps_per_epoch=self.steps_per_epoch)
        return summary


def train_lora(model, clip, vae, dataset: LoraDataset, settings: TrainingSettings, observer: TrainingObserver,
               state_dir: pathlib.Path, resume_from: pathlib.Path | None = None,
               initial_lora: TrainedLora | None = None,
               on_epoch_weights: EpochWeightsHook | None = None, keep_state: bool = False) -> TrainingOutcome:
    """Train a LoRA on the graph's MODEL/CLIP/VAE (from scratch, or continuing `initial_lora`); they are left as they were.

    The resumable state in `state_dir` is removed when the run finishes, unless `keep_state`; a cancelled run,
    or one stopped by a full disk, keeps it.
    """
    return Trainer(model, clip, vae, dataset, settings, observer, state_dir, resume_from, initial_lora, on_epoch_weights,
                   keep_state).run()
