"""The toy world: coloured shapes on plain backgrounds, drawn with PIL, and the captions that name them.

Pretraining, the "new concept" dataset and the image checks in the tests all draw from these
definitions, so a colour or shape means the same thing everywhere. Shapes are drawn at four times the
final size and reduced, so edges are anti-aliased as in a photograph rather than jagged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 32
SUPERSAMPLE = 4

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 35, 35),
    "orange": (245, 135, 20),
    "yellow": (240, 210, 25),
    "green": (35, 170, 55),
    "cyan": (30, 200, 210),
    "blue": (35, 70, 225),
    "purple": (150, 45, 215),
    "pink": (245, 120, 190),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {"white": (245, 245, 245), "gray": (128, 128, 128), "black": (18, 18, 18)}
SHAPES = ("circle", "square", "triangle", "star", "diamond", "hexagon", "ring", "cross")

# What the base model is pretrained on. Everything else (purple, stars, ...) only ever reaches the VAE.
BASE_COLOURS = ("red", "yellow", "green", "blue")
BASE_SHAPES = ("circle", "square", "triangle")
BASE_BACKGROUNDS = ("white", "gray", "black")


@dataclass(frozen=True)
class Scene:
    """One object on a plain background; sizes and positions are fractions of the image side."""

    colour: tuple[int, int, int]
    shape: str
    background: tuple[int, int, int]
    radius: float = 0.3
    centre: tuple[float, float] = (0.5, 0.5)
    rotation: float = 0.0  # degrees, counter-clockwise


def caption(colour: str, shape: str, background: str) -> str:
    return f"a {colour} {shape} on a {background} background"


def render(scenes: Scene | list[Scene], size: int = IMAGE_SIZE) -> np.ndarray:
    """An RGB uint8 array (size, size, 3) of one scene, or several objects drawn in order over the first background."""
    scenes = [scenes] if isinstance(scenes, Scene) else scenes
    canvas = Image.new("RGB", (size * SUPERSAMPLE,) * 2, scenes[0].background)
    draw = ImageDraw.Draw(canvas)
    for scene in scenes:
        _draw_shape(draw, scene, size * SUPERSAMPLE)
    return np.asarray(canvas.resize((size, size), Image.Resampling.BOX))


def _draw_shape(draw: ImageDraw.ImageDraw, scene: Scene, side: int) -> None:
    cx, cy, r = scene.centre[0] * side, scene.centre[1] * side, scene.radius * side
    if scene.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=scene.colour)
    elif scene.shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=scene.colour)
        inner = r * 0.55
        draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=scene.background)
    elif scene.shape == "cross":
        arm = r * 0.33
        draw.polygon(_rotated([(-arm, -r), (arm, -r), (arm, r), (-arm, r)], cx, cy, scene.rotation), fill=scene.colour)
        draw.polygon(_rotated([(-r, -arm), (r, -arm), (r, arm), (-r, arm)], cx, cy, scene.rotation), fill=scene.colour)
    else:
        draw.polygon(_rotated(_outline(scene.shape, r), cx, cy, scene.rotation), fill=scene.colour)


def _outline(shape: str, r: float) -> list[tuple[float, float]]:
    """Polygon vertices around the origin, y pointing down, with the same visual size for every shape."""
    if shape == "square":
        s = r * 0.88
        return [(-s, -s), (s, -s), (s, s), (-s, s)]
    if shape == "triangle":
        return _regular(3, r * 1.1, offset_y=r * 0.2)
    if shape == "diamond":
        return _regular(4, r * 1.1)
    if shape == "hexagon":
        return _regular(6, r, start=0.0)
    if shape == "star":
        outer, inner = r * 1.1, r * 1.1 * 0.42
        points = []
        for i in range(10):
            angle = -math.pi / 2 + i * math.pi / 5
            radius = outer if i % 2 == 0 else inner
            points.append((radius * math.cos(angle), radius * math.sin(angle) + r * 0.08))
        return points
    raise ValueError(f"{shape!r} is not a toy-world polygon; shapes are {', '.join(SHAPES)}")


def _regular(n: int, r: float, start: float = -math.pi / 2, offset_y: float = 0.0) -> list[tuple[float, float]]:
    return [(r * math.cos(start + 2 * math.pi * i / n), r * math.sin(start + 2 * math.pi * i / n) + offset_y) for i in range(n)]


def _rotated(points: list[tuple[float, float]], cx: float, cy: float, degrees: float) -> list[tuple[float, float]]:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return [(cx + x * c + y * s, cy - x * s + y * c) for x, y in points]


def jittered(rgb: tuple[int, int, int], rng: np.random.Generator, amount: int) -> tuple[int, int, int]:
    values = np.clip(np.asarray(rgb) + rng.integers(-amount, amount + 1, size=3), 0, 255)
    return tuple(int(v) for v in values)


def placed(rng: np.random.Generator, radius_range: tuple[float, float], max_shift: float = 0.5) -> tuple[float, tuple[float, float]]:
    """A radius and a centre (at most `max_shift` off the middle) that keep the object inside the frame."""
    radius = float(rng.uniform(*radius_range))
    slack = min(max_shift, max(0.0, 0.5 - radius * 1.15 - 0.02))
    return radius, (0.5 + float(rng.uniform(-slack, slack)), 0.5 + float(rng.uniform(-slack, slack)))


def named_scene(colour: str, shape: str, background: str, rng: np.random.Generator) -> Scene:
    """A scene that matches its caption: named colour and background with a little jitter, one large object near
    the middle (a toy model learns crisp shapes much sooner when they do not roam the frame)."""
    radius, centre = placed(rng, (0.27, 0.34), max_shift=0.06)
    return Scene(jittered(COLOURS[colour], rng, 12), shape, jittered(BACKGROUNDS[background], rng, 6), radius, centre)


def random_scene_image(rng: np.random.Generator, size: int = IMAGE_SIZE) -> np.ndarray:
    """Any colour, any shape, any background, one to three objects: what the VAE must be able to reproduce."""
    background = _random_colour(rng) if rng.random() < 0.4 else jittered(BACKGROUNDS[rng.choice(list(BACKGROUNDS))], rng, 10)
    objects = []
    for _ in range(int(rng.choice([1, 1, 1, 2, 3]))):
        radius, centre = placed(rng, (0.12, 0.38))
        colour = _random_colour(rng) if rng.random() < 0.6 else jittered(COLOURS[rng.choice(list(COLOURS))], rng, 20)
        rotation = float(rng.uniform(-30, 30)) if rng.random() < 0.3 else 0.0
        objects.append(Scene(colour, str(rng.choice(SHAPES)), background, radius, centre, rotation))
    return render(objects, size)


def _random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """Uniform over hue, saturation and value, so every colour a test might ask for is seen by the VAE."""
    hue, saturation, value = rng.random(), rng.uniform(0.0, 1.0), rng.uniform(0.05, 1.0)
    image = Image.new("HSV", (1, 1), (int(hue * 255), int(saturation * 255), int(value * 255))).convert("RGB")
    return image.getpixel((0, 0))
