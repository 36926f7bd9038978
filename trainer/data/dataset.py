"""The dataset value that travels between nodes (LORALAB_DATASET): images, captions and where they came from."""
from __future__ import annotations

import pathlib
from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetImage:
    """One training image and its caption.

    `caption` is what training uses (sidecar text, or the folder's class tokens when there is none);
    `caption_path` is where the sidecar lives or would live, so captioners know where to write.
    """

    path: pathlib.Path
    caption: str
    caption_path: pathlib.Path
    has_caption_file: bool
    folder: str  # subfolder name as on disk ("10_ohwx woman"), "" for a flat folder
    repeats: int
    width: int  # after EXIF orientation
    height: int
    is_regularization: bool = False
    class_tokens: str = ""  # the folder's (or Load Dataset's) class tokens: the caption when there is no sidecar
    has_alpha: bool = False  # the file has transparent pixels; training composites them on white
    flip_augment: bool = False  # mirrored at random like kohya's per-subset flip_aug (the setting flips every image)


@dataclass(frozen=True)
class LoraDataset:
    """An immutable set of images; nodes derive new datasets (dataclasses.replace) instead of mutating."""

    root: pathlib.Path
    images: tuple[DatasetImage, ...]
    caption_extension: str = ".txt"
    base_resolution: int = 512
    bucket_step: int = 64  # the model family's bucket grid (8 px for the toy world), for the report's buckets
    report: str = ""
    shown_root: str = ""  # how messages name `root` (relative to its dataset root when a remote client may read them)

    @property
    def training_images(self) -> tuple[DatasetImage, ...]:
        return tuple(image for image in self.images if not image.is_regularization)

    @property
    def regularization_images(self) -> tuple[DatasetImage, ...]:
        return tuple(image for image in self.images if image.is_regularization)
