"""Training data on the device: latents encoded once per aspect bucket, captions, and cached conditioning."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from ..data.buckets import make_buckets, nearest_bucket
from ..data.dataset import DatasetImage
from ..data.images import open_training_image


@dataclass
class Sample:
    """One training image ready for the loop; `conds` is filled when text conditioning can be cached."""

    image: DatasetImage
    bucket: tuple[int, int]
    latents: torch.Tensor
    flipped_latents: torch.Tensor | None
    size_info: dict[str, int]
    conds: dict[str, Any] | None = field(default=None)


def fit_to_bucket(image: Image.Image, bucket: tuple[int, int]) -> tuple[Image.Image, tuple[int, int]]:
    """Scale to cover the bucket, then centre-crop (kohya); returns the image and the crop's top-left."""
    width, height = bucket
    scale = max(width / image.width, height / image.height)
    resized = image.resize((max(width, round(image.width * scale)), max(height, round(image.height * scale))), Image.LANCZOS)
    left, top = (resized.width - width) // 2, (resized.height - height) // 2
    return resized.crop((left, top, left + width, top + height)), (left, top)


def to_pixels(image: Image.Image) -> torch.Tensor:
    """ComfyUI IMAGE layout: [1, H, W, 3] floats in 0..1."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)[None]


def encode_samples(images: list[DatasetImage], vae, model_patcher, resolution: int, bucket_step: int, flip: bool,
                   device: torch.device, on_image: Callable[[int], None]) -> list[Sample]:
    """VAE-encode every image once at its bucket size (and mirrored, with flip augmentation)."""
    buckets = make_buckets(resolution, bucket_step)
    base_model = model_patcher.model
    samples = []
    for index, image in enumerate(images):
        picture = open_training_image(image.path)
        bucket = nearest_bucket(picture.width, picture.height, buckets)
        fitted, (left, top) = fit_to_bucket(picture, bucket)
        latents = base_model.process_latent_in(vae.encode(to_pixels(fitted))).to(device)[0]
        flipped = None
        if flip or image.flip_augment:
            mirrored = fitted.transpose(Image.FLIP_LEFT_RIGHT)
            flipped = base_model.process_latent_in(vae.encode(to_pixels(mirrored))).to(device)[0]
        size_info = {"width": picture.width, "height": picture.height, "crop_w": left, "crop_h": top,
                     "target_width": bucket[0], "target_height": bucket[1]}
        samples.append(Sample(image, bucket, latents, flipped, size_info))
        on_image(index + 1)
    return samples


def encode_text(clip, caption: str) -> dict[str, Any]:
    """The caption's conditioning as CLIPTextEncode gives it: `cond` and what the encoder adds (the pooled output,
    attention masks, HiDream's Llama 3 states...), which the model's extra_conds reads."""
    return clip.encode_from_tokens(clip.tokenize(caption), return_dict=True)


def model_conds(model_patcher, sample: Sample, encoded: dict[str, Any], device: torch.device,
                guidance: float | None = None) -> dict[str, Any]:
    """The conditioning ComfyUI's model expects (cross-attention, SDXL size vector, Flux's guidance...), per sample.

    `guidance` is passed explicitly: ComfyUI's Flux fills in 3.5 when it is missing (None: no guidance input).
    """
    extras = {name: value.to(device) if torch.is_tensor(value) else value
              for name, value in encoded.items() if name != "cond"}
    conds = model_patcher.model.extra_conds(cross_attn=encoded["cond"].to(device), device=device,
                                            noise=sample.latents[None], guidance=guidance, **extras, **sample.size_info)
    return {name: _to_device(value, device) for name, value in conds.items()}


def _to_device(cond, device: torch.device):
    return type(cond)(cond.cond.to(device)) if torch.is_tensor(getattr(cond, "cond", None)) else cond


def batch_conds(per_sample: list[dict[str, Any]]) -> list[tuple[slice, dict[str, torch.Tensor]]]:
    """The batch's conds, concatenated with ComfyUI's own rules (cross-attention lengths padded by repetition),
    as runs of consecutive samples that can share one forward: a model whose conds hold per-caption constants
    (Lumina 2 and Z-Image count each caption's tokens) needs one forward per distinct value, as ComfyUI's sampler
    batches them."""
    runs: list[tuple[int, int]] = []
    for index, conds in enumerate(per_sample):
        start = runs[-1][0] if runs else 0
        if runs and all(per_sample[start][name].can_concat(conds[name]) for name in conds):
            runs[-1] = (start, index + 1)
        else:
            runs.append((index, index + 1))
    whole = len(runs) == 1  # one forward for everything the batch holds (validation: one sample at many noise levels)
    return [(slice(None) if whole else slice(start, end),
             {name: per_sample[start][name].concat([other[name] for other in per_sample[start + 1:end]])
              for name in per_sample[start]}) for start, end in runs]


def epoch_batches(samples: list[Sample], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """kohya's epoch: every image `repeats` times, batches drawn from one bucket, order shuffled per epoch."""
    rng = random.Random(f"{seed}:{epoch}")
    by_bucket: dict[tuple[int, int], list[int]] = {}
    for index, sample in enumerate(samples):
        by_bucket.setdefault(sample.bucket, []).extend([index] * sample.image.repeats)
    batches = []
    for bucket in sorted(by_bucket):
        members = by_bucket[bucket]
        rng.shuffle(members)
        batches += [members[start:start + batch_size] for start in range(0, len(members), batch_size)]
    rng.shuffle(batches)
    return batches


def split_validation(images: list[DatasetImage], fraction: float, seed: int) -> tuple[list[DatasetImage], list[DatasetImage]]:
    """Hold out a fixed fraction of the training (not regularization) images for validation loss."""
    candidates = [image for image in images if not image.is_regularization]
    count = round(len(candidates) * fraction) if fraction > 0 else 0
    if fraction > 0 and len(candidates) >= 2:
        count = min(max(1, count), len(candidates) - 1)
    held_out = set(random.Random(seed).sample(range(len(candidates)), count)) if count else set()
    validation = [image for index, image in enumerate(candidates) if index in held_out]
    training = [image for image in images if image not in validation]
    return training, validation
