"""Aspect-ratio buckets as kohya's sd-scripts computes them (pure maths)."""
from __future__ import annotations

import math


def make_buckets(resolution: int, step: int = 64, min_side: int | None = None, max_side: int | None = None) -> list[tuple[int, int]]:
    """Bucket sizes (width, height) with about resolution**2 pixels, sides multiples of `step`.

    Follows `model_util.make_bucket_resolutions`: 512 gives 17 buckets between 256 and 1024 px.
    """
    min_side = min_side or max(step, resolution // 2)
    max_side = max_side or resolution * 2
    area = resolution * resolution
    square = int(math.sqrt(area) // step * step)
    buckets = {(square, square)}
    width = min_side
    while width <= max_side:
        height = min(max_side, int(area // width // step * step))
        if height >= min_side:
            buckets.add((width, height))
            buckets.add((height, width))
        width += step
    return sorted(buckets)


def nearest_bucket(width: int, height: int, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is closest to the image's (kohya's `select_bucket`)."""
    ratio = width / height
    return min(buckets, key=lambda bucket: (abs(bucket[0] / bucket[1] - ratio), -bucket[0] * bucket[1]))
