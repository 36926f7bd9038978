"""Small generated training sets: coloured shapes with captions, as a LORALAB_DATASET value."""
from __future__ import annotations

import pathlib

from PIL import Image, ImageDraw

from . import runtime

COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 180, 60), "yellow": (230, 210, 40)}


def draw_shape(colour: tuple[int, int, int], shape: str, size: int = 64, background=(255, 255, 255)) -> Image.Image:
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    box = (size // 5, size // 5, size * 4 // 5, size * 4 // 5)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    else:
        draw.rectangle(box, fill=colour)
    return image


def captioned_shapes(folder: pathlib.Path, count: int = 4, size: int = 64, repeats: int = 1):
    """`count` images with distinct captions, written to disk, returned as a LoraDataset."""
    dataset_module = runtime.pack("trainer.dataset")
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    names = list(COLOURS)
    for index in range(count):
        colour = names[index % len(names)]
        shape = "circle" if index % 2 == 0 else "square"
        path = folder / f"{index:03d}.png"
        draw_shape(COLOURS[colour], shape, size).save(path)
        caption = f"sks, a {colour} {shape}"
        caption_path = path.with_suffix(".txt")
        caption_path.write_text(caption)
        images.append(dataset_module.DatasetImage(path, caption, caption_path, True, "", repeats, size, size))
    return dataset_module.LoraDataset(folder, tuple(images), base_resolution=size)
