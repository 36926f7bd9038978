"""BLIP image captioning (Salesforce/blip-image-captioning-base) through transformers: one sentence."""
from __future__ import annotations

import pathlib

import torch
from PIL import Image

from .sentence_model import SentenceModel

MAX_NEW_TOKENS = 40  # unless the model folder's generation_config.json sets max_new_tokens
NUM_BEAMS = 3


class BlipCaptioner(SentenceModel):
    def __init__(self, folder: pathlib.Path) -> None:
        from transformers import BlipForConditionalGeneration, BlipProcessor

        super().__init__(folder, BlipProcessor, BlipForConditionalGeneration, MAX_NEW_TOKENS)

    def caption(self, image: Image.Image) -> list[str]:
        pixels = self.processor(images=image, return_tensors="pt")["pixel_values"].to(self.device, self.dtype)
        with torch.inference_mode():
            generated = self.model.generate(pixel_values=pixels, max_new_tokens=self.max_new_tokens,
                                            num_beams=NUM_BEAMS)
        text = self.processor.decode(generated[0], skip_special_tokens=True).strip()
        return [text] if text else []
