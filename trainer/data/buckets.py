"""Aspect-ratio buckets, kohya style: pure maths shared by the dataset report and the trainer.

Every bucket has (about) the area of a square at the training resolution, sides in multiples of
`step`, so images keep their shape instead of being cropped to a square. An image goes to the bucket
whose aspect ratio is nearest its own; it is scaled to cover the bucket, then centre-cropped.
Same numbers as kohya's `make_bucket_resolutions` and `BucketManager.select_bucket`.
"""
from __future__ import annotations

import math
from typing import Iterable

Bucket = tuple[int, int]  # (width, height)


def default_side_limits(resolution: int, step: int = 64) -> tuple[int, int]:
    """kohya's 256/1024 defaults for 512 px, scaled with the resolution (512/2048 for SDXL's 1024)."""
    min_side = max(step, (resolution // 2) // step * step)
    max_side = max(min_side, resolution * 2 // step * step)
    return min_side, max_side


def make_buckets(resolution: int, step: int = 64, min_side: int | None = None,
                 max_side: int | None = None) -> list[Bucket]:
    """All (width, height) buckets for a square training resolution, sorted.

    `min_side`/`max_side` default to half and twice the resolution (kohya's 256/1024 at 512).
    """
    if resolution < step or step <= 0:
        raise ValueError(f"resolution {resolution} must be at least the bucket step {step} (both positive)")
    default_min, default_max = default_side_limits(resolution, step)
    min_side = default_min if min_side is None else min_side
    max_side = default_max if max_side is None else max_side
    if min_side > max_side:
        raise ValueError(f"min_side {min_side} is larger than max_side {max_side}")
    area = resolution * resolution
    square = int(math.sqrt(area) // step) * step
    buckets = {(square, square)}
    for width in range(min_side, max_side + 1, step):
        height = min(max_side, (area // width) // step * step)
        if height >= min_side:
            buckets.add((width, height))
            buckets.add((height, width))
    return sorted(buckets)


def nearest_bucket(width: int, height: int, buckets: list[Bucket]) -> Bucket:
    """The bucket whose aspect ratio is closest to the image's (kohya's `select_bucket`); the larger on a tie."""
    if not buckets:
        raise ValueError("no buckets to choose from")
    aspect = width / height
    return min(buckets, key=lambda bucket: (abs(bucket[0] / bucket[1] - aspect), -bucket[0] * bucket[1]))


def upscale_factor(width: int, height: int, bucket: Bucket) -> float:
    """How much an image is enlarged to cover its bucket (<= 1.0 means it is only shrunk)."""
    return max(bucket[0] / width, bucket[1] / height)


def samples_per_bucket(placed: Iterable[tuple[Bucket, int]]) -> dict[Bucket, int]:
    """Samples each bucket holds in one epoch, from (bucket, repeats) per image: every image `repeats` times."""
    counts: dict[Bucket, int] = {}
    for bucket, repeats in placed:
        counts[bucket] = counts.get(bucket, 0) + repeats
    return counts


def steps_per_epoch(per_bucket: dict[Bucket, int], batch_size: int, gradient_accumulation: int = 1) -> int:
    """Optimizer steps in one epoch as the trainer forms them: batches never mix buckets, so a part-filled batch
    per bucket counts, and the epoch's last accumulation may be short."""
    batches = sum(math.ceil(count / batch_size) for count in per_bucket.values())
    return math.ceil(batches / gradient_accumulation)
