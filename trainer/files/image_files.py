"""PNG files in ComfyUI's output folder, written as SaveImage writes them (workflow embedded), but atomically."""
from __future__ import annotations

import io
import json
import os
from typing import Any

import folder_paths
import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from .atomic_files import write_atomically


def to_pil(image: torch.Tensor) -> Image.Image:
    """One ComfyUI image [H, W, 3] (0..1) as 8-bit RGB, quantised exactly as SaveImage does."""
    return Image.fromarray(np.clip(255.0 * image.cpu().float().numpy(), 0, 255).astype(np.uint8))


def png_info(prompt: dict | None, extra_pnginfo: dict | None, extra_text: dict[str, Any] | None = None) -> PngInfo | None:
    """SaveImage's metadata (the API prompt and the UI workflow) plus our own entries; None with --disable-metadata."""
    from comfy.cli_args import args

    if args.disable_metadata:
        return None
    info = PngInfo()
    if prompt is not None:
        info.add_text("prompt", json.dumps(prompt))
    for key, value in (extra_pnginfo or {}).items():
        info.add_text(key, json.dumps(value))
    for key, value in (extra_text or {}).items():
        info.add_text(key, json.dumps(value))
    return info


def save_output_png(image: Image.Image, filename_prefix: str, info: PngInfo | None) -> dict[str, str]:
    """Save under the output folder with ComfyUI's numbering; returns the `ui` entry (filename, subfolder, type).

    The file is written to a temporary name in the same folder and renamed, so a crash never leaves a
    truncated PNG under a name the next counter would skip over.
    """
    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
        filename_prefix, folder_paths.get_output_directory(), image.width, image.height)
    os.makedirs(folder, exist_ok=True)
    filename = f"{name}_{counter:05}_.png"
    encoded = io.BytesIO()
    image.save(encoded, format="PNG", pnginfo=info, compress_level=4)
    write_atomically(os.path.join(folder, filename), encoded.getvalue())
    return {"filename": filename, "subfolder": subfolder, "type": "output"}


def output_path(entry: dict[str, str]) -> str:
    """The absolute path of a file described by a `ui` entry of type output."""
    return os.path.join(folder_paths.get_output_directory(), entry["subfolder"], entry["filename"])
