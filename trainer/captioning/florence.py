"""Florence-2 detailed captions through transformers' native Florence2 classes (transformers >= 4.56)."""
from __future__ import annotations

import pathlib

import torch
from PIL import Image

from ..errors import CaptionerError
from .sentence_model import SentenceModel

TASK = "<DETAILED_CAPTION>"
MAX_NEW_TOKENS = 256  # unless the model folder's generation_config.json sets max_new_tokens
NUM_BEAMS = 3


class FlorenceCaptioner(SentenceModel):
    def __init__(self, folder: pathlib.Path) -> None:
        try:
            from transformers import AutoProcessor, Florence2ForConditionalGeneration
        except ImportError as error:
            raise CaptionerError("Florence-2 needs transformers 4.56 or newer (it has native Florence-2 support); "
                                 "update it with `pip install -U transformers`, or choose a WD14 or BLIP "
                                 "captioner.") from error
        super().__init__(folder, AutoProcessor, Florence2ForConditionalGeneration, MAX_NEW_TOKENS)

    def caption(self, image: Image.Image) -> list[str]:
        inputs = self.processor(text=TASK, images=image, return_tensors="pt")
        with torch.inference_mode():
            generated = self.model.generate(
                input_ids=inputs["input_ids"].to(self.device),
                pixel_values=inputs["pixel_values"].to(self.device, self.dtype),
                max_new_tokens=self.max_new_tokens,
                num_beams=NUM_BEAMS,
            )
        text = self.processor.batch_decode(generated, skip_special_tokens=True)[0].strip()
        return [text] if text else []
