"""What a person sees in a toy-world image: the object's colour, its shape and the background, measured.

The object is found as the pixels that differ clearly from the background (the median of the border),
keeping the largest connected blob. Colour is the hue of the object's inner pixels, named after the
nearest hue of the toy-world palette. Shape is template matching: each candidate shape (circle, square,
triangle, star, cross, ring, drawn as the scene generator draws them) is stretched over the object's bounding box and
compared by intersection-over-union; the best match names the shape, unless even that one overlaps poorly
("other": a blob or a squiggle is not a star). Matching whole silhouettes tolerates blur and rounded
corners: a square with well-rounded corners still overlaps the square template (IoU ~0.93) more than the
circle (~0.84).
"""
from __future__ import annotations

import colorsys
import functools
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from harness.runtime import pack

scenes = pack("trainer.toy_world.scenes")

MIN_CONTRAST = 40.0  # RGB distance below which there is no object at all
MIN_SATURATION = 0.25  # below this the object is grey, not a colour
MIN_SHAPE_IOU = 0.6  # below this the object matches no shape template
SHAPE_TEMPLATES = ("circle", "square", "triangle", "star", "cross", "ring")


@dataclass(frozen=True)
class Analysis:
    colour: str  # a toy-world colour name, "grey" or "none"
    shape: str  # one of SHAPE_TEMPLATES, "other" or "none"
    background: str  # a toy-world background name or "other"
    shape_iou: dict[str, float] | None = None  # overlap with each shape template


def analyse(image: np.ndarray) -> Analysis:
    """`image`: uint8 (H, W, 3) or float in [0, 1] as ComfyUI's IMAGE holds it."""
    image = _as_uint8(image).astype(np.float32)
    background = np.median(np.concatenate([image[:2].reshape(-1, 3), image[-2:].reshape(-1, 3),
                                           image[:, :2].reshape(-1, 3), image[:, -2:].reshape(-1, 3)]), axis=0)
    background_name = _nearest_background(background)
    distance = np.linalg.norm(image - background, axis=-1)
    contrast = float(np.percentile(distance, 98))
    if contrast < MIN_CONTRAST:
        return Analysis("none", "none", background_name)
    mask = _largest_blob(distance > contrast / 2)
    overlaps = shape_overlaps(mask)
    best = max(overlaps, key=overlaps.get)
    shape = best if overlaps[best] >= MIN_SHAPE_IOU else "other"
    return Analysis(_colour_name(image, mask, distance, contrast), shape, background_name, overlaps)


def shape_overlaps(mask: np.ndarray) -> dict[str, float]:
    """Intersection-over-union of a boolean mask with each shape template fitted to its bounding box."""
    ys, xs = np.nonzero(mask)
    box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    overlaps = {}
    for shape in SHAPE_TEMPLATES:
        template = _template(shape, box, mask.shape)
        overlaps[shape] = float((template & mask).sum() / (template | mask).sum())
    return overlaps


def rates(analyses: Iterable[Analysis], colour: str | None = None, shape: str | None = None,
          background: str | None = None) -> dict[str, float]:
    """Fraction of images that show the requested colour, shape, background, and all of them at once."""
    analyses = list(analyses)
    wanted = {"colour": colour, "shape": shape, "background": background}
    hits = {key: [getattr(a, key) == value for a in analyses] for key, value in wanted.items() if value is not None}
    result = {key: float(np.mean(values)) for key, values in hits.items()}
    result["all"] = float(np.mean([all(values) for values in zip(*hits.values())]))
    return result


# ---------------------------------------------------------------- internals


def _as_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    return image


def _nearest_background(rgb: np.ndarray) -> str:
    name, distance = min(((name, float(np.linalg.norm(rgb - np.asarray(value))))
                          for name, value in scenes.BACKGROUNDS.items()), key=lambda item: item[1])
    return name if distance < 60 else "other"


def _hue(rgb: Iterable[float]) -> tuple[float, float, float]:
    return colorsys.rgb_to_hsv(*(float(v) / 255.0 for v in rgb))


PALETTE_HUES = {name: _hue(rgb)[0] for name, rgb in scenes.COLOURS.items()}


def _colour_name(image: np.ndarray, mask: np.ndarray, distance: np.ndarray, contrast: float) -> str:
    """Hue of the object's confidently-inside pixels, so anti-aliased edges do not mix in the background."""
    core = mask & (distance > contrast * 0.75)
    pixels = image[core if core.any() else mask]
    hue, saturation, value = _hue(np.median(pixels, axis=0))
    if saturation < MIN_SATURATION or value < 0.15:
        return "grey"
    return min(PALETTE_HUES, key=lambda name: min(abs(hue - PALETTE_HUES[name]), 1 - abs(hue - PALETTE_HUES[name])))


def _template(shape: str, box: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """`shape` as the scene generator draws it, stretched to fill `box` (left, top, right, bottom), as a mask."""
    from PIL import Image

    left, top, right, bottom = box
    fitted = _silhouette(shape).resize((right - left, bottom - top), Image.Resampling.BOX)
    mask = np.zeros(size, dtype=bool)
    mask[top:bottom, left:right] = np.asarray(fitted) >= 128
    return mask


@functools.lru_cache(maxsize=None)
def _silhouette(shape: str) -> Any:
    """A large anti-aliased drawing of `shape`, cropped to its bounding box (greyscale PIL image)."""
    from PIL import Image

    drawing = scenes.render(scenes.Scene((255, 255, 255), shape, (0, 0, 0), radius=0.4), size=128)[..., 0]
    ys, xs = np.nonzero(drawing >= 128)
    return Image.fromarray(drawing[ys.min():ys.max() + 1, xs.min():xs.max() + 1])


def _largest_blob(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component (generated images may carry specks away from the object)."""
    labels = np.zeros(mask.shape, dtype=np.int32)
    best_label, best_size, label = 0, 0, 0
    for start in zip(*np.nonzero(mask)):
        if labels[start]:
            continue
        label += 1
        labels[start], size, queue = label, 0, deque([start])
        while queue:
            y, x = queue.popleft()
            size += 1
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = label
                    queue.append((ny, nx))
        if size > best_size:
            best_label, best_size = label, size
    return labels == best_label
