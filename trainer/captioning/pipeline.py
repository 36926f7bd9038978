"""Caption a dataset: load the captioner once, caption image by image, write per mode, unload."""
from __future__ import annotations

import dataclasses
import logging
import pathlib
from dataclasses import dataclass, field
from typing import Callable, Protocol

from PIL import Image

from ..data.dataset import DatasetImage, LoraDataset
from ..data.images import UnreadableImage, open_training_image
from ..data.roots import DatasetRoots
from ..errors import SettingsError
from ..setting_fields import setting
from . import device, models
from .tags import finalize_caption, split_tags
from .writing import MODES, WriteResult, store_caption

logger = logging.getLogger(__name__)

WRITTEN = ("written", "replaced", "unchanged", "kept")  # actions after which a caption file exists
TAGGER_SIDE = 448  # no captioner looks at more pixels than this, so big photos decode at a reduced scale


class Captioner(Protocol):
    def caption(self, image: Image.Image) -> list[str]:
        """Tags (WD14) or a one-element sentence (BLIP, Florence-2); empty when it found nothing."""

    def close(self) -> None:
        """Drop the model so its memory can be reclaimed."""


@dataclass(frozen=True)
class CaptionSettings:
    """Auto Caption's inputs, checked once: each field is also the node's input of that name, in this order."""

    captioner: str = setting(help="WD14 taggers give booru tags; BLIP and Florence-2 a sentence. Weights go in "
                                  "models/captioners/<name> (downloaded on first use).", choices=models.captioner_names)
    trigger_word: str = setting("", "Goes first in every caption. Empty: the image's class tokens (from its N_name "
                                    "folder or Load Dataset).")
    mode: str = setting("fill_missing", "fill_missing: caption only images without a caption file. overwrite: caption "
                                        "all, keeping each old caption as .bak. memory_only: caption all for this run, "
                                        "write nothing.", choices=MODES)
    exclude_tags: str = setting("", "Comma-separated tags to leave out (e.g. what the trigger word should absorb).")
    general_threshold: float = setting(0.35, "WD14: minimum score for general tags.", min=0.0, max=1.0, step=0.01)
    character_threshold: float = setting(0.85, "WD14: minimum score for character tags.", min=0.0, max=1.0, step=0.01)
    replace_underscores: bool = setting(True, "long_hair -> long hair (kaomoji such as ^_^ are kept).")
    max_tags: int = setting(40, "Most tags per caption after the trigger word; CLIP reads only 75 tokens.", min=1, max=500)
    include_regularization: bool = setting(False, "Also caption regularization images.", optional=True)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise SettingsError(f"mode {self.mode!r} is not one of {', '.join(MODES)}.")
        for name in ("general_threshold", "character_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise SettingsError(f"{name} is {value}; it must be between 0 and 1.")
        if self.max_tags < 1:
            raise SettingsError(f"max_tags is {self.max_tags}; it must be at least 1.")

    @property
    def excluded_tags(self) -> tuple[str, ...]:
        return tuple(split_tags(self.exclude_tags))


@dataclass(frozen=True)
class CaptionOutcome:
    path: pathlib.Path
    caption: str
    action: str  # see WriteResult.action; "failed" when the image or the captioner gave nothing
    backup: pathlib.Path | None = None
    detail: str = ""


@dataclass
class CaptionRun:
    dataset: LoraDataset
    outcomes: list[CaptionOutcome] = field(default_factory=list)
    to_caption: int = 0  # images chosen; fewer outcomes when the run was stopped

    def count(self, action: str) -> int:
        return sum(1 for outcome in self.outcomes if outcome.action == action)


def images_to_caption(dataset: LoraDataset, settings: CaptionSettings) -> list[DatasetImage]:
    """fill_missing: only uncaptioned images; overwrite and memory_only: all of them."""
    chosen = [image for image in dataset.images if settings.include_regularization or not image.is_regularization]
    if settings.mode == "fill_missing":
        chosen = [image for image in chosen if not image.has_caption_file]
    return chosen


def load_captioner(settings: CaptionSettings) -> Captioner:
    """The backend for `settings.captioner`, its weights found or downloaded first."""
    spec = models.spec_for(settings.captioner)
    folder = models.ensure_model(spec)
    torch_device, _ = device.captioner_device()
    device.make_room(torch_device, _folder_bytes(folder) * 2)
    if spec.kind == "wd14":
        from .wd14 import Wd14Tagger

        return Wd14Tagger(folder, general_threshold=settings.general_threshold,
                          character_threshold=settings.character_threshold, use_gpu=torch_device.type == "cuda")
    if spec.kind == "blip":
        from .blip import BlipCaptioner

        return BlipCaptioner(folder)
    if spec.kind == "florence2":
        from .florence import FlorenceCaptioner

        return FlorenceCaptioner(folder)
    raise ValueError(f"captioner kind {spec.kind!r} has no backend")


def caption_dataset(dataset: LoraDataset, settings: CaptionSettings, *,
                    should_stop: Callable[[], bool] = lambda: False,
                    after_image: Callable[[int, int], None] = lambda done, total: None,
                    roots: DatasetRoots | None = None) -> CaptionRun:
    """Caption the chosen images and return the dataset with the new captions.

    `should_stop` is asked before each image (ComfyUI's cancel): the run then ends there, every file written
    so far whole, and the outcomes say which. `after_image(done, total)` runs once with 0 before loading and
    after each image (the progress bar). With `roots`, an image or caption file whose real path is outside
    them is neither read nor written. The captioner is unloaded even when stopped or failing.
    """
    targets = images_to_caption(dataset, settings)
    if not targets:
        return CaptionRun(dataset)
    outcomes: list[CaptionOutcome] = []
    after_image(0, len(targets))
    captioner = load_captioner(settings)
    try:
        for done, image in enumerate(targets, start=1):
            if should_stop():
                break
            outcomes.append(_caption_one(captioner, image, settings, roots))
            after_image(done, len(targets))
    finally:
        captioner.close()
        del captioner
        device.release_memory()
    return CaptionRun(_with_outcomes(dataset, outcomes), outcomes, len(targets))


def _caption_one(captioner: Captioner, image: DatasetImage, settings: CaptionSettings,
                 roots: DatasetRoots | None) -> CaptionOutcome:
    if roots is not None and not (roots.contains(image.path) and roots.contains(image.caption_path)):
        return CaptionOutcome(image.path, image.caption, "failed",
                              detail="the image or its caption file leads outside the dataset roots")
    try:
        pixels = open_training_image(image.path, draft_size=(TAGGER_SIDE, TAGGER_SIDE))
    except UnreadableImage as error:  # changed on disk since Load Dataset read it
        logger.warning("Not captioning %s", error)
        return CaptionOutcome(image.path, image.caption, "failed", detail=error.reason)
    parts = captioner.caption(pixels)
    if not parts:
        return CaptionOutcome(image.path, image.caption, "failed", detail="the captioner returned nothing")
    caption = finalize_caption(parts, prefix=settings.trigger_word.strip() or image.class_tokens,
                               exclude=settings.excluded_tags, replace_underscores=settings.replace_underscores,
                               max_tags=settings.max_tags)
    result: WriteResult = store_caption(image.caption_path, caption, settings.mode)
    # A kept file that holds no text (binary data) leaves the image with the caption it had.
    return CaptionOutcome(image.path, result.caption or image.caption, result.action, result.backup)


def _with_outcomes(dataset: LoraDataset, outcomes: list[CaptionOutcome]) -> LoraDataset:
    by_path = {outcome.path: outcome for outcome in outcomes if outcome.action != "failed"}
    images = tuple(
        dataclasses.replace(image, caption=by_path[image.path].caption,
                            has_caption_file=image.has_caption_file or by_path[image.path].action in WRITTEN)
        if image.path in by_path else image
        for image in dataset.images
    )
    return dataclasses.replace(dataset, images=images)


def _folder_bytes(folder: pathlib.Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
