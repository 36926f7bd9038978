"""The dataset report: counts, steps, sizes, buckets and captions, with the problems that spoil a LoRA.

`build_report` returns a DatasetReport: structured findings (trainer/data/findings.py) for code and tests, and
`text()` for people, where every line that needs action starts with "WARNING:" so a frontend can highlight it.
"""
from __future__ import annotations

import collections
import pathlib
import statistics
from dataclasses import dataclass, field
from typing import Callable

from .buckets import Bucket, default_side_limits, make_buckets, nearest_bucket, samples_per_bucket, steps_per_epoch
from .dataset import DatasetImage, LoraDataset
from .findings import TOKEN_LIMIT, Finding, dataset_findings
from .kohya_summary import tag_frequency
from .loading import LoadedDataset
from .tokens import clip_token_counter

TOP_TAGS = 20


@dataclass(frozen=True)
class FolderLine:
    name: str
    images: int
    repeats: int
    is_regularization: bool

    @property
    def image_repeats(self) -> int:
        return self.images * self.repeats


@dataclass
class DatasetReport:
    root: pathlib.Path
    shown_root: str  # how the text names the folder (relative to its dataset root for ComfyUI's nodes)
    layout: str
    folders: list[FolderLine]
    batch_size: int
    epochs: int
    steps_per_epoch: int
    base_resolution: int
    resolution_source: str
    bucket_counts: dict[Bucket, int]
    bucket_limits: tuple[int, int]
    bucket_step: int
    sizes: list[tuple[int, int]]
    caption_counts: dict[str, int]  # "file", "class tokens", "none"
    longest_caption_tokens: int
    tag_frequency: list[tuple[str, int]]
    findings: list[Finding] = field(default_factory=list)

    @property
    def warnings(self) -> list[Finding]:
        return [finding for finding in self.findings if finding.severity == "warning"]

    @property
    def notes(self) -> list[Finding]:
        return [finding for finding in self.findings if finding.severity == "note"]

    @property
    def codes(self) -> set[str]:
        return {finding.code for finding in self.findings}

    @property
    def training_images(self) -> int:
        return sum(line.images for line in self.folders if not line.is_regularization)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    def text(self) -> str:
        lines = [f"Dataset: {self.shown_root} ({self.layout} layout)", "Folders:"]
        for line in self.folders:
            role = " (regularization)" if line.is_regularization else ""
            lines.append(f"  {line.name or self.root.name}{role}: {line.images} images x {line.repeats} repeats "
                         f"= {line.image_repeats}")
        image_repeats = sum(line.image_repeats for line in self.folders if not line.is_regularization)
        regularization = sum(line.image_repeats for line in self.folders if line.is_regularization)
        extra = f" + {regularization} regularization" if regularization else ""
        lines.append(f"Training: {self.training_images} images, {image_repeats}{extra} image repeats per epoch -> "
                     f"{self.steps_per_epoch} steps per epoch at batch size {self.batch_size}; "
                     f"{self.epochs} epochs = {self.total_steps} steps")
        lines.append(f"Resolution: {self.base_resolution} px ({self.resolution_source}). {_size_summary(self.sizes)}")
        plan = ", ".join(f"{w}x{h}: {count}" for (w, h), count in
                         sorted(self.bucket_counts.items(), key=lambda item: (-item[1], item[0])))
        lines.append(f"Buckets ({self.bucket_step} px steps, sides {self.bucket_limits[0]}-{self.bucket_limits[1]}): {plan}")
        counts = self.caption_counts
        lines.append(f"Captions: {counts.get('file', 0)} from caption files, {counts.get('class tokens', 0)} from "
                     f"class tokens, {counts.get('none', 0)} empty; longest {self.longest_caption_tokens} tokens "
                     f"(limit {TOKEN_LIMIT}).")
        if self.tag_frequency:
            lines.append("Top tags: " + ", ".join(f"{tag} ({count})" for tag, count in self.tag_frequency[:TOP_TAGS]))
        lines.append("")
        lines += [f"WARNING: {finding.message}" for finding in self.warnings] or ["No problems found."]
        lines += [f"NOTE: {finding.message}" for finding in self.notes]
        return "\n".join(lines)


def build_report(loaded: LoadedDataset, *, batch_size: int = 1, epochs: int = 10, trigger_word: str = "",
                 count_tokens: Callable[[str], int] | None = None,
                 resolution_source: str = "default") -> DatasetReport:
    """Everything the report says about a freshly loaded dataset."""
    dataset = loaded.dataset
    training = dataset.training_images
    count_tokens = count_tokens or clip_token_counter()
    resolution = dataset.base_resolution
    buckets = make_buckets(resolution, dataset.bucket_step)
    findings = dataset_findings(loaded, trigger_word, count_tokens, epochs)
    return DatasetReport(
        root=dataset.root,
        shown_root=dataset.shown_root or str(dataset.root),
        layout=loaded.layout,
        folders=[FolderLine(folder.name, loaded.image_counts[folder.path], folder.repeats, folder.is_regularization)
                 for folder in loaded.folders],
        batch_size=batch_size,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch(epoch_buckets(dataset), batch_size),
        base_resolution=resolution,
        resolution_source=resolution_source,
        bucket_counts=dict(collections.Counter(nearest_bucket(i.width, i.height, buckets) for i in training)),
        bucket_limits=default_side_limits(resolution, dataset.bucket_step),
        bucket_step=dataset.bucket_step,
        sizes=[(image.width, image.height) for image in dataset.images],
        caption_counts=dict(collections.Counter(_caption_source(image) for image in dataset.images)),
        longest_caption_tokens=max((count_tokens(image.caption) for image in dataset.images), default=0),
        tag_frequency=tag_frequency(training).most_common(),
        findings=findings,
    )


def epoch_buckets(dataset: LoraDataset) -> dict[Bucket, int]:
    """Samples per aspect bucket in one epoch at the dataset's resolution (regularization images included)."""
    buckets = make_buckets(dataset.base_resolution, dataset.bucket_step)
    return samples_per_bucket((nearest_bucket(image.width, image.height, buckets), image.repeats)
                              for image in dataset.images)


def _caption_source(image: DatasetImage) -> str:
    if image.has_caption_file:
        return "file"
    return "class tokens" if image.caption else "none"


def _size_summary(sizes: list[tuple[int, int]]) -> str:
    if not sizes:
        return "No images."
    by_area = sorted(sizes, key=lambda size: size[0] * size[1])
    median = by_area[len(by_area) // 2]
    megapixels = statistics.median(w * h / 1e6 for w, h in sizes)
    return (f"Image sizes from {by_area[0][0]}x{by_area[0][1]} to {by_area[-1][0]}x{by_area[-1][1]}, "
            f"median {median[0]}x{median[1]} ({megapixels:.2f} MP).")
