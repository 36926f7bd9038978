"""What kohya records about a dataset in a LoRA's metadata (ss_tag_frequency, ss_dataset_dirs...)."""
from __future__ import annotations

import collections
from typing import Any, Iterable

from .dataset import DatasetImage, LoraDataset


def tag_frequency(images: Iterable[DatasetImage]) -> collections.Counter[str]:
    """How often each comma-separated tag appears (lower-cased), as kohya's ss_tag_frequency counts."""
    counter: collections.Counter[str] = collections.Counter()
    for image in images:
        counter.update(tag for tag in (part.strip().lower() for part in image.caption.split(",")) if tag)
    return counter


def kohya_dataset_summary(dataset: LoraDataset) -> dict[str, Any]:
    """What kohya records about the data in a LoRA's metadata (ss_tag_frequency, ss_dataset_dirs...)."""
    by_folder: dict[str, list[DatasetImage]] = {}
    for image in dataset.images:
        by_folder.setdefault(image.folder or dataset.root.name, []).append(image)
    training = dataset.training_images
    return {
        "tag_frequency": {folder: dict(tag_frequency(group)) for folder, group in by_folder.items()
                          if not group[0].is_regularization},
        "dataset_dirs": {folder: {"n_repeats": group[0].repeats, "img_count": len(group)}
                         for folder, group in by_folder.items() if not group[0].is_regularization},
        "reg_dataset_dirs": {folder: {"n_repeats": group[0].repeats, "img_count": len(group)}
                             for folder, group in by_folder.items() if group[0].is_regularization},
        "num_train_images": sum(image.repeats for image in training),
        "num_reg_images": len(dataset.regularization_images),
        "resolution": dataset.base_resolution,
    }
