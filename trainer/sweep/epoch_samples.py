"""Sample images during training: the sample prompts rendered with an epoch's adapter, as LoraLoader at 1.0 would.

The prompts are one per line and accept kohya's sample-prompt options, so a kohya prompt file can be
pasted as it is: `--n` negative prompt, `--w`/`--h` size, `--d` seed, `--l` CFG scale, `--s` steps.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import Callable, Iterator

import comfy.model_management as mm
import torch

from ..errors import SettingsError
from ..files.image_files import output_path, png_info, save_output_png, to_pil
from .rendering import (MAX_CFG, MAX_SEED, MAX_SIZE, MAX_STEPS, MIN_SIZE, SIZE_STEP, SamplingSettings, encode_text,
                       render_image, with_lora)

DEFAULT_STEPS = 20
DEFAULT_SAMPLER, DEFAULT_SCHEDULER = "euler", "normal"


@dataclass(frozen=True)
class SamplePrompt:
    text: str
    negative: str
    seed: int
    settings: SamplingSettings


def parse_sample_prompts(text: str, defaults: SamplePrompt) -> list[SamplePrompt]:
    """One prompt per non-empty line; kohya's `--n --w --h --d --l --s` options override `defaults` per line."""
    prompts = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        head, *options = line.split(" --")
        prompt = replace(defaults, text=head.strip())
        for option in options:
            flag, _, value = option.strip().partition(" ")
            prompt = _apply_option(prompt, flag, value.strip(), number)
        if not prompt.text:
            raise SettingsError(f"sample_prompts line {number} has options but no prompt text before them.")
        prompts.append(prompt)
    return prompts


def _apply_option(prompt: SamplePrompt, flag: str, value: str, number: int) -> SamplePrompt:
    """One kohya option, parsed and bounded as Strength Sweep bounds its widgets."""

    def whole(kind: str, low: int, high: int, step: int = 1) -> int:
        try:
            parsed = int(value)
        except ValueError:
            raise SettingsError(f"sample_prompts line {number}: --{flag} needs a whole number ({kind}), "
                                f"got '{_excerpt(value)}'.") from None
        if not low <= parsed <= high or parsed % step:
            spacing = f", a multiple of {step}" if step > 1 else ""
            raise SettingsError(f"sample_prompts line {number}: --{flag} {_excerpt(str(parsed))} is out of range: the "
                                f"{kind} must be {low} to {high}{spacing}.")
        return parsed

    settings = prompt.settings
    if flag == "n":
        return replace(prompt, negative=value)
    if flag == "w":
        return replace(prompt, settings=replace(settings, width=whole("width in pixels", MIN_SIZE, MAX_SIZE, SIZE_STEP)))
    if flag == "h":
        return replace(prompt, settings=replace(settings, height=whole("height in pixels", MIN_SIZE, MAX_SIZE, SIZE_STEP)))
    if flag == "d":
        return replace(prompt, seed=whole("seed", 0, MAX_SEED))
    if flag == "s":
        return replace(prompt, settings=replace(settings, steps=whole("number of steps", 1, MAX_STEPS)))
    if flag == "l":
        try:
            cfg = float(value)
        except ValueError:
            raise SettingsError(f"sample_prompts line {number}: --l needs a CFG scale such as 7, got "
                                f"'{_excerpt(value)}'.") from None
        if not 0 <= cfg <= MAX_CFG:  # false for nan too
            raise SettingsError(f"sample_prompts line {number}: --l {_excerpt(value)} is out of range: the CFG scale "
                                f"must be a number from 0 to {MAX_CFG:g}.")
        return replace(prompt, settings=replace(settings, cfg=cfg))
    raise SettingsError(f"sample_prompts line {number}: unknown option --{_excerpt(flag)}; use --n (negative), --w, --h, "
                        "--d (seed), --l (CFG) or --s (steps).")


def _excerpt(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


class EpochSampler:
    """The training loop's `on_epoch_weights` hook: after every Nth epoch, renders, saves and shows the samples.

    Samples use the graph's own MODEL/CLIP/VAE with the epoch's kohya weights applied through
    `load_lora_for_models` at strength 1, so they match what LoraLoader gives with that epoch's file.
    """

    def __init__(self, model, clip, vae, prompts: list[SamplePrompt], every_n_epochs: int, filename_prefix: str,
                 on_image: Callable[[int, int, torch.Tensor], None], prompt: dict | None = None,
                 extra_pnginfo: dict | None = None) -> None:
        self.model, self.clip, self.vae = model, clip, vae
        self.prompts = prompts
        self.every_n_epochs = every_n_epochs
        self.filename_prefix = filename_prefix
        self.on_image = on_image
        self.prompt, self.extra_pnginfo = prompt, extra_pnginfo
        self.samples: dict[int, list[str]] = {}  # epoch -> file paths, for TrainedLora.samples
        self.files: list[dict[str, str]] = []  # `ui` image entries, for the node's preview and /history

    def wants(self, epoch: int) -> bool:
        return self.every_n_epochs > 0 and bool(self.prompts) and epoch % self.every_n_epochs == 0

    def __call__(self, epoch: int, weights: dict[str, torch.Tensor]) -> None:
        if not self.wants(epoch):
            return
        # Run as a ComfyUI node would (inference mode), leaving the global RNG as training left it.
        with torch.inference_mode(), _preserved_rng():
            model, clip = with_lora(self.model, self.clip, weights, 1.0, 1.0)
            for index, sample in enumerate(self.prompts):
                image = render_image(model, self.vae, encode_text(clip, sample.text), encode_text(clip, sample.negative),
                                     sample.seed, sample.settings)[0]
                details = {"epoch": epoch, "prompt": sample.text, "negative": sample.negative, "seed": sample.seed,
                           "sampler": vars(sample.settings), "lora_strength": 1.0}
                entry = save_output_png(to_pil(image), f"{self.filename_prefix}/epoch{epoch:04d}",
                                        png_info(self.prompt, self.extra_pnginfo, {"loralab_sample": details}))
                self.files.append(entry)
                self.samples.setdefault(epoch, []).append(output_path(entry))
                self.on_image(epoch, index, image)


@contextlib.contextmanager
def _preserved_rng() -> Iterator[None]:
    """KSampler's noise reseeds torch's global generator; training must not see that."""
    device = mm.get_torch_device()
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


def sample_defaults(resolution: int, seed: int, cfg: float) -> SamplePrompt:
    """What a sample line without options renders: the training resolution and seed, the family's CFG, 20 euler steps."""
    settings = SamplingSettings(resolution, resolution, DEFAULT_STEPS, cfg, DEFAULT_SAMPLER,
                                DEFAULT_SCHEDULER)
    return SamplePrompt("", "", seed, settings)
