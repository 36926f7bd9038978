"""WD14 taggers (SmilingWolf's ONNX models): booru tags with a score each, through onnxruntime.

Input is one NHWC float32 image in BGR order, 0-255, padded to a white square and resized to the
model's side (448 for the released models); output is one sigmoid score per row of selected_tags.csv.
"""
from __future__ import annotations

import csv
import logging
import pathlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import CaptionerError

logger = logging.getLogger(__name__)

RATING_CATEGORY = 9
CHARACTER_CATEGORY = 4


@dataclass(frozen=True)
class Tag:
    name: str
    category: int


def read_tags(path: pathlib.Path) -> list[Tag]:
    """The rows of selected_tags.csv (tag_id,name,category,count), in model output order."""
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"name", "category"} <= set(reader.fieldnames):
            raise CaptionerError(f"{path} is not a WD14 tags file: it needs 'name' and 'category' columns "
                                 f"(found {reader.fieldnames}). Download selected_tags.csv again.")
        try:
            return [Tag(row["name"], int(row["category"])) for row in reader]
        except ValueError as error:
            raise CaptionerError(f"{path} has a non-numeric category ({error}); "
                                 "download selected_tags.csv again.") from error


class Wd14Tagger:
    """Tags an image; characters first, then general tags, each by descending score. Ratings dropped."""

    def __init__(self, folder: pathlib.Path, *, general_threshold: float, character_threshold: float,
                 use_gpu: bool) -> None:
        import onnxruntime

        providers = ["CPUExecutionProvider"]
        if use_gpu and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        model_path = folder / "model.onnx"
        try:
            self.session = onnxruntime.InferenceSession(str(model_path), providers=providers)
        except Exception as error:  # onnxruntime raises its own (non-OSError) types for bad files
            raise CaptionerError(f"{model_path} could not be loaded by onnxruntime ({error}); "
                                 "download it again.") from error
        model_input = self.session.get_inputs()[0]
        shape = model_input.shape
        if len(shape) != 4 or shape[3] != 3 or not isinstance(shape[1], int):
            raise CaptionerError(f"{model_path} expects input {shape}; a WD14 tagger takes [batch, side, side, 3].")
        self.input_name = model_input.name
        self.side = shape[1]
        self.tags = read_tags(folder / "selected_tags.csv")
        self.general_threshold = general_threshold
        self.character_threshold = character_threshold

    def caption(self, image: Image.Image) -> list[str]:
        scores = self.session.run(None, {self.input_name: prepare(image, self.side)})[0][0]
        if len(scores) != len(self.tags):
            raise CaptionerError(f"The tagger model gives {len(scores)} scores but selected_tags.csv lists "
                                 f"{len(self.tags)} tags: the two files are from different models.")
        characters, general = [], []
        for tag, score in zip(self.tags, scores, strict=True):
            if tag.category == RATING_CATEGORY:
                continue
            if tag.category == CHARACTER_CATEGORY:
                if score >= self.character_threshold:
                    characters.append((float(score), tag.name))
            elif score >= self.general_threshold:
                general.append((float(score), tag.name))
        ranked = sorted(characters, reverse=True) + sorted(general, reverse=True)
        return [name for _, name in ranked]

    def close(self) -> None:
        del self.session


def prepare(image: Image.Image, side: int) -> np.ndarray:
    """Pad to a white square (keeping the aspect ratio), resize, RGB -> BGR, add the batch axis."""
    longest = max(image.size)
    square = Image.new("RGB", (longest, longest), (255, 255, 255))
    square.paste(image.convert("RGB"), ((longest - image.width) // 2, (longest - image.height) // 2))
    resized = square.resize((side, side), Image.Resampling.BICUBIC)
    return np.ascontiguousarray(np.asarray(resized, dtype=np.float32)[:, :, ::-1][None])
