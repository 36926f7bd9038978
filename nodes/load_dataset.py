"""Load Dataset: a folder of captioned images (flat, or kohya `N_name` subfolders) plus its report."""
from __future__ import annotations

from .types import CATEGORY, DATASET


class LoadDataset:
    DESCRIPTION = "Reads a training folder, checks every image and caption, and reports what would hurt the LoRA."
    CATEGORY = CATEGORY
    RETURN_TYPES = (DATASET, "STRING")
    RETURN_NAMES = ("dataset", "report")
    FUNCTION = "load"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "path": ("STRING", {"default": "lora_dataset", "tooltip": "Absolute path, or relative to ComfyUI's input folder."}),
                "repeats": ("INT", {"default": 10, "min": 1, "max": 1000, "tooltip": "Repeats per epoch for a flat folder (kohya N_name folders carry their own)."}),
                "caption_extension": ([".txt", ".caption"], {"default": ".txt"}),
                "class_tokens": ("STRING", {"default": "", "tooltip": "Caption for images that have no caption file."}),
            },
            "optional": {
                "regularization_path": ("STRING", {"default": "", "tooltip": "Optional folder of regularization images, same layout."}),
                "base_resolution": ("INT", {"default": 0, "min": 0, "max": 4096, "step": 64, "tooltip": "0 = from the connected model, else 512."}),
                "model": ("MODEL", {"tooltip": "Optional: sets the native resolution the report checks against."}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "For the steps-per-epoch figure in the report."}),
                "trigger_word": ("STRING", {"default": "", "tooltip": "Report captions that lack this word."}),
            },
        }

    def load(self, path, repeats, caption_extension, class_tokens, regularization_path="", base_resolution=0,
             model=None, batch_size=1, trigger_word=""):
        raise NotImplementedError("LoraLabLoadDataset is not implemented yet")
