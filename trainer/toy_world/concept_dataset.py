"""A "new concept" for LoRA training: a trigger word for a shape and colour the base model never drew.

The toy-world base model knows red, yellow, green and blue filled circles, squares and triangles. `zqx`
stands for a purple ring: neither purple nor rings were in its pretraining captions, but its VAE was
trained on every colour and shape, so it reproduces the images faithfully and a LoRA has something real
to learn. (A star, the first choice, has points too thin for a 32-pixel model: a small LoRA learned only
rough stars, while it learns the ring cleanly.)
"""
from __future__ import annotations

import io
import os
import pathlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import DatasetError
from ..files.atomic_files import write_atomically
from . import scenes


@dataclass(frozen=True)
class Concept:
    trigger: str
    colour: str
    shape: str

    def caption(self, background: str) -> str:
        return f"a {self.trigger} on a {background} background"


CONCEPT = Concept(trigger="zqx", colour="purple", shape="ring")
# White and black only: against mid-gray purple has little contrast, and the shipped VAE now and then fills
# the ring's hole (tests/test_toy_world.py checks every colour, shape and background a test relies on).
CONCEPT_BACKGROUNDS = ("white", "black")
REPEATS = 10


def write_concept_dataset(folder: str | os.PathLike, count: int = 20, seed: int = 0) -> pathlib.Path:
    """Write `count` captioned 32x32 images of the concept in kohya layout (`<folder>/10_zqx/0000.png` + `.txt`).

    Returns `folder`, the path Load Dataset takes. Backgrounds alternate between white and black (named in
    each caption) so the LoRA ties the trigger to the object, not to one background. Nothing is overwritten.
    """
    root = pathlib.Path(folder)
    target = root / f"{REPEATS}_{CONCEPT.trigger}"
    names = [f"{index:04d}" for index in range(count)]
    clashes = [target / f"{name}{ext}" for name in names for ext in (".png", ".txt") if (target / f"{name}{ext}").exists()]
    if clashes:
        raise DatasetError(f"{clashes[0]} already exists; write the concept dataset into an empty folder.")
    target.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index, name in enumerate(names):
        background = CONCEPT_BACKGROUNDS[index % len(CONCEPT_BACKGROUNDS)]
        image = scenes.render(scenes.named_scene(CONCEPT.colour, CONCEPT.shape, background, rng))
        caption = CONCEPT.caption(background) + "\n"
        encoded = io.BytesIO()
        Image.fromarray(image).save(encoded, format="PNG")
        write_atomically(target / f"{name}.png", encoded.getvalue(), overwrite=False)
        write_atomically(target / f"{name}.txt", caption.encode("utf-8"), overwrite=False)
    return root

