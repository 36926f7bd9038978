"""BLIP image captioning (Salesforce/blip-image-captioning-base) through transformers: one sentence."""
from __future__ import annotations

import pathlib

import torch
from PIL import Image

from .device import captioner_device

MAX_NEW_TOKENS = 40  # unless the model folder's generation_config.json sets max_new_tokens
NUM_BEAMS = 3


class BlipCaptioner:
    def __init__(self, folder: pathlib.Path) -> None:
        from transformers import BlipForConditionalGeneration, BlipProcessor

        self.device, self.dtype = captioner_device()
        self.processor = BlipProcessor.from_pretrained(folder, local_files_only=True)
        model = BlipForConditionalGeneration.from_pretrained(folder, local_files_only=True)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.max_new_tokens = model.generation_config.max_new_tokens or MAX_NEW_TOKENS

    def caption(self, image: Image.Image) -> list[str]:
        pixels = self.processor(images=image, return_tensors="pt")["pixel_values"].to(self.device, self.dtype)
        with torch.inference_mode():
            generated = self.model.generate(pixel_values=pixels, max_new_tokens=self.max_new_tokens,
                                            num_beams=NUM_BEAMS)
        text = self.processor.decode(generated[0], skip_special_tokens=True).strip()
        return [text] if text else []

    def close(self) -> None:
        del self.model, self.processor
