"""What a person sees in a toy-world image: the object's colour, its shape and the background, measured.

The object is found as the pixels that differ clearly from the background (the median of the border),
keeping the largest connected blob. Colour is the hue of the object's inner pixels, named after the
nearest hue of the toy-world palette. Shape uses two scale-free measures that survive blurred and
rounded outlines: solidity (area / convex-hull area; a star's points leave gaps, so it is low) and extent
(area / bounding-box area: 1 for a square, pi/4 for a circle, 1/2 for an upright triangle). A square with
rounded corners keeps an extent well above a circle's, so it still counts as a square.
Only the shapes the tests ask for are told apart: circle, square, triangle and star.
"""
from __future__ import annotations

import colorsys
from collections import deque
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from harness.runtime import pack

scenes = pack("trainer.toy_world.scenes")

MIN_CONTRAST = 40.0  # RGB distance below which there is no object at all
MIN_SATURATION = 0.25  # below this the object is grey, not a colour
STAR_SOLIDITY = 0.80
SQUARE_EXTENT = 0.87
TRIANGLE_EXTENT = 0.66


@dataclass(frozen=True)
class Analysis:
    colour: str  # a toy-world colour name, "grey" or "none"
    shape: str  # circle, square, triangle, star or "none"
    background: str  # a toy-world background name or "other"
    solidity: float = 0.0
    extent: float = 0.0


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
    solidity, extent = shape_measures(mask)
    return Analysis(_colour_name(image, mask, distance, contrast), _shape_name(solidity, extent), background_name,
                    solidity, extent)


def shape_measures(mask: np.ndarray) -> tuple[float, float]:
    """(solidity, extent) of a boolean mask."""
    ys, xs = np.nonzero(mask)
    area = float(len(xs))
    extent = area / float((xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1))
    corners = np.concatenate([np.stack([xs + dx, ys + dy], axis=1) for dx in (0, 1) for dy in (0, 1)])
    return area / _polygon_area(_convex_hull(corners)), extent


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


def _shape_name(solidity: float, extent: float) -> str:
    if solidity < STAR_SOLIDITY:
        return "star"
    if extent >= SQUARE_EXTENT:
        return "square"
    if extent < TRIANGLE_EXTENT:
        return "triangle"
    return "circle"


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


def _convex_hull(points: np.ndarray) -> np.ndarray:
    """Andrew's monotone chain; returns the hull's vertices in order."""
    points = np.unique(points, axis=0)
    points = points[np.lexsort((points[:, 1], points[:, 0]))]

    def half(sequence: np.ndarray) -> list[np.ndarray]:
        hull: list[np.ndarray] = []
        for p in sequence:
            while len(hull) >= 2 and _cross(hull[-1] - hull[-2], p - hull[-2]) <= 0:
                hull.pop()
            hull.append(p)
        return hull

    lower, upper = half(points), half(points[::-1])
    return np.array(lower[:-1] + upper[:-1], dtype=np.float64)


def _cross(a: np.ndarray, b: np.ndarray) -> float:
    return float(a[0] * b[1] - a[1] * b[0])


def _polygon_area(vertices: np.ndarray) -> float:
    x, y = vertices[:, 0], vertices[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
