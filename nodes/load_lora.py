"""Load LoRA: an existing LoRA file as LORALAB_LORA, so training can continue from it."""
from __future__ import annotations

import os

import folder_paths
import torch

from ..trainer.errors import LoraFileError
from ..trainer.files.lora_import import import_lora
from ..trainer.files.lora_io import read_lora_file
from .types import CATEGORY, LORA


class LoadLoRA:
    DESCRIPTION = ("Reads a LoRA from the loras folder (LoRA Lab, kohya sd-scripts, LyCORIS or ComfyUI-trainer files) "
                   "to continue training it or save it again. Connect the model for files without kohya metadata.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (LORA,)
    RETURN_NAMES = ("lora",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"lora_name": (folder_paths.get_filename_list("loras"), {"tooltip": "A file in the loras folder."})},
            "optional": {"model": ("MODEL", {"tooltip": "The model the LoRA is for: needed for files without kohya "
                                                       "metadata and for ComfyUI-trainer files."})},
        }

    @classmethod
    def IS_CHANGED(cls, lora_name, model=None):
        """Re-read a file that was saved again under the same name (Save LoRA with overwrite)."""
        path = folder_paths.get_full_path("loras", lora_name)
        if path is None or not os.path.isfile(path):
            return lora_name
        status = os.stat(path)
        return f"{lora_name}:{status.st_mtime_ns}:{status.st_size}"

    def load(self, lora_name, model=None):
        path = folder_paths.get_full_path("loras", lora_name)
        if path is None or not os.path.isfile(path):
            raise LoraFileError(f"LoRA file {lora_name} is not in the loras folder any more; refresh the list and pick another.")
        # ComfyUI runs nodes under inference_mode; tensors made there could never be trained further.
        with torch.inference_mode(False):
            tensors, metadata = read_lora_file(path)
            return (import_lora(tensors, metadata, lora_name, model),)
