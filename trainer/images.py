"""Decoding training images into plain RGB, whatever the file holds."""
from __future__ import annotations

import pathlib

from PIL import Image, ImageOps


def open_training_image(path: pathlib.Path) -> Image.Image:
    """RGB image with EXIF orientation applied and transparency composited on white."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return image.convert("RGB")
