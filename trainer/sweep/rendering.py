"""Images from a MODEL/CLIP/VAE with a LoRA state dict applied exactly as LoraLoader applies a file.

Every step mirrors a stock graph, so a user can reproduce any image with stock nodes:
LoraLoader (`comfy.sd.load_lora_for_models`) -> CLIPTextEncode -> empty latent -> KSampler -> VAEDecode.
The latent's size comes from the VAE's own compression and the model's latent format (not 8x / 4
channels), and the noise from `comfy.sample.prepare_noise`, as KSampler makes it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import comfy.model_management as mm
import comfy.sample
import comfy.sd
import torch

from ..errors import SettingsError
from ..models.families import detect_family, layers_family
from .plan import SweepPlan

# Limits of what one image may ask for: Strength Sweep's widgets and sample prompts' --w --h --s --l --d share them.
MIN_SIZE, MAX_SIZE, SIZE_STEP = 16, 4096, 8  # pixels; every supported VAE divides multiples of 8
MAX_STEPS = 200
MAX_CFG = 30.0
MAX_SEED = 0xFFFFFFFFFFFFFFFF  # KSampler's seed range

# (done, total, finished image or None): progress in sampler steps over the whole job, with a preview.
ProgressCallback = Callable[[int, int, "torch.Tensor | None"], None]


@dataclass(frozen=True)
class SamplingSettings:
    """KSampler's settings for one image (denoise is always 1: text to image)."""

    width: int
    height: int
    steps: int
    cfg: float
    sampler_name: str
    scheduler: str


def with_lora(model, clip, weights: dict[str, torch.Tensor], strength: float, clip_strength: float):
    """LoraLoader's logic: both strengths 0 gives the inputs back unchanged, otherwise patched clones."""
    if strength == 0 and clip_strength == 0:
        return model, clip
    return comfy.sd.load_lora_for_models(model, clip, weights, strength, clip_strength)


def encode_text(clip, text: str):
    """CLIPTextEncode: CONDITIONING for `text`."""
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def empty_latent(model, vae, width: int, height: int) -> torch.Tensor:
    """EmptyLatentImage for this VAE and model: size from the VAE's compression, channels from the latent format."""
    ratio = vae.spacial_compression_encode()
    channels = model.get_model_object("latent_format").latent_channels
    if width // ratio < 1 or height // ratio < 1:
        raise SettingsError(f"width x height {width}x{height} is smaller than one latent pixel of this VAE "
                            f"({ratio}x{ratio}); use at least {ratio}.")
    dtype = mm.intermediate_dtype() if hasattr(mm, "intermediate_dtype") else torch.float32
    return torch.zeros([1, channels, height // ratio, width // ratio], device=mm.intermediate_device(), dtype=dtype)


def render_image(model, vae, positive, negative, seed: int, settings: SamplingSettings,
                 on_step: Callable[[int], None] = lambda step: None) -> torch.Tensor:
    """KSampler (denoise 1) on an empty latent, then VAEDecode: one image [1, H, W, 3].

    Every sampler step is an interrupt point, so Cancel stops within one step.
    """
    latent = comfy.sample.fix_empty_latent_channels(model, empty_latent(model, vae, settings.width, settings.height))
    noise = comfy.sample.prepare_noise(latent, seed)

    def callback(step: int, denoised, x, total_steps: int) -> None:
        mm.throw_exception_if_processing_interrupted()
        on_step(step + 1)

    samples = comfy.sample.sample(model, noise, settings.steps, settings.cfg, settings.sampler_name, settings.scheduler,
                                  positive, negative, latent, denoise=1.0, callback=callback, disable_pbar=True, seed=seed)
    images = vae.decode(samples)
    if images.ndim == 5:  # VAEDecode folds video-style latents into the batch
        images = images.reshape(-1, *images.shape[-3:])
    return images


def check_lora_fits(model, lora) -> None:
    """LoraLoader skips layers whose shapes differ with only a log line; refuse a LoRA of another family up front."""
    try:
        family = detect_family(model).name
    except SettingsError:
        family = type(model.model.model_config).__name__
    if layers_family(family) != layers_family(lora.family):
        raise SettingsError(f"The LoRA was trained on a {lora.family} model but the connected MODEL is {family}: "
                            "connect the model it was trained on (or a fine-tune of it).")


def sweep_images(model, clip, vae, lora, plan: SweepPlan, negative: str, clip_strength_ratio: float,
                 settings: SamplingSettings, on_progress: ProgressCallback) -> torch.Tensor:
    """Every cell of `plan` as an IMAGE batch in reading order.

    One (epoch, strength) group at a time: its patched clones render all their prompts and seeds
    while loaded, so weights are patched once per group, not per cell. Strength-0 cells are the base
    model's images, rendered once per prompt and seed and reused in every epoch row. Text
    conditioning is cached whenever the CLIP carries no LoRA patches (a UNet-only LoRA).
    """
    check_lora_fits(model, lora)
    groups = plan.render_groups()
    renders = sum(len(cells) for epoch, strength, cells in groups if strength != 0)
    if any(strength == 0 for _, strength, _ in groups):
        renders += len(plan.prompts) * len(plan.seeds)
    total = renders * settings.steps
    done = 0
    images: dict[int, torch.Tensor] = {}
    base_images: dict[tuple[str, int], torch.Tensor] = {}
    conditioning: dict[tuple, object] = {}

    def encoded(patched_clip, key: tuple, text: str):
        if _patch_count(patched_clip.patcher) == _patch_count(clip.patcher):
            key = ("input",)  # the LoRA added no text-encoder patches: the input CLIP's conditioning
        if (key, text) not in conditioning:
            conditioning[(key, text)] = encode_text(patched_clip, text)
        return conditioning[(key, text)]

    for epoch, strength, cells in groups:
        clip_strength = strength * clip_strength_ratio
        patched_model, patched_clip = with_lora(model, clip, lora.weights(epoch), strength, clip_strength)
        group_key = ("lora", epoch, clip_strength)
        for cell in cells:
            base_key = (cell.prompt, cell.seed)
            if cell.uses_base_model and base_key in base_images:
                images[cell.index] = base_images[base_key]
                continue
            positive = encoded(patched_clip, group_key, cell.prompt)
            negative_conditioning = encoded(patched_clip, group_key, negative)
            image = render_image(patched_model, vae, positive, negative_conditioning, cell.seed, settings,
                                 lambda step, offset=done: on_progress(offset + step, total, None))
            done += settings.steps
            images[cell.index] = image[0]
            if cell.uses_base_model:
                base_images[base_key] = image[0]
            on_progress(done, total, image[0])
    return torch.stack([images[index] for index in range(len(images))])


def _patch_count(patcher) -> int:
    """Weight patches on a ModelPatcher: what load_lora_for_models adds to."""
    return sum(len(patches) for patches in patcher.patches.values())
