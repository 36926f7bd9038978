"""Small training sets for trainer tests: shapes with one distinct caption each, read by the real loader."""
from __future__ import annotations

import pathlib

from . import runtime
from .datasets import draw_shape

COLOURS = ("red", "blue", "green", "yellow")


def captioned_shapes(folder: pathlib.Path, count: int = 4, size: int = 64, repeats: int = 1, twins: bool = False):
    """A flat folder of `count` images captioned "sks, a <colour> <shape>", loaded as Load Dataset loads it.

    With `twins`, every image also has an identical copy (same caption), so held-out validation images
    have exact counterparts in training and their loss must fall as the LoRA learns.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        colour, shape = COLOURS[index % len(COLOURS)], ("circle", "square")[index % 2]
        image = draw_shape((size, size), shape, colour, "white", index)
        for stem in [f"{index:03d}"] + ([f"{index:03d}_twin"] if twins else []):
            image.save(folder / f"{stem}.png")
            (folder / f"{stem}.txt").write_text(f"sks, a {colour} {shape}", encoding="utf-8")
    loader = runtime.pack("trainer.data.loading")
    return loader.load_dataset(folder, repeats=repeats, base_resolution=size).dataset


# Small, fast, deterministic training settings for tests.
FAST = dict(rank=4, resolution=64, mixed_precision="fp32", batch_size=1, save_every_n_epochs=1, seed=7)


def node_inputs(bundle, dataset, **overrides):
    """Every Train LoRA input at its widget default, with test overrides."""
    required = runtime.boot().NODE_CLASS_MAPPINGS["LoraLabTrainLoRA"].INPUT_TYPES()["required"]
    inputs = {name: spec[1]["default"] for name, spec in required.items() if len(spec) > 1 and "default" in spec[1]}
    inputs.update(model=bundle.model, clip=bundle.clip, vae=bundle.vae, dataset=dataset, **FAST)
    inputs.update(overrides)
    return inputs
