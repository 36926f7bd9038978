"""What BLIP and Florence-2 share: a transformers processor and generating model, loaded from the captioner's
folder onto ComfyUI's device, with the folder's own generation length."""
from __future__ import annotations

import pathlib

from .device import captioner_device


class SentenceModel:
    def __init__(self, folder: pathlib.Path, processor_class: type, model_class: type, max_new_tokens: int) -> None:
        """`max_new_tokens` applies unless the folder's generation_config.json sets its own."""
        self.device, self.dtype = captioner_device()
        self.processor = processor_class.from_pretrained(folder, local_files_only=True)
        model = model_class.from_pretrained(folder, local_files_only=True)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.max_new_tokens = model.generation_config.max_new_tokens or max_new_tokens

    def close(self) -> None:
        del self.model, self.processor
