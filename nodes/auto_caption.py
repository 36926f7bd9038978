"""Auto Caption: tag or describe every image with WD14, BLIP or Florence-2, without losing existing text."""
from __future__ import annotations

from .types import CATEGORY, DATASET


class AutoCaption:
    DESCRIPTION = "Captions the dataset's images; the trigger word goes first; existing captions are kept or backed up."
    CATEGORY = CATEGORY
    RETURN_TYPES = (DATASET, "STRING")
    RETURN_NAMES = ("dataset", "captions")
    FUNCTION = "caption"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "dataset": (DATASET,),
                "captioner": (["wd-v1-4-moat-tagger-v2", "wd-eva02-large-tagger-v3", "wd-vit-tagger-v3",
                               "blip-image-captioning-base", "Florence-2-base"],),
                "trigger_word": ("STRING", {"default": ""}),
                "mode": (["fill_missing", "overwrite", "memory_only"], {"default": "fill_missing"}),
                "exclude_tags": ("STRING", {"default": ""}),
                "general_threshold": ("FLOAT", {"default": 0.35, "min": 0.0, "max": 1.0, "step": 0.01}),
                "character_threshold": ("FLOAT", {"default": 0.85, "min": 0.0, "max": 1.0, "step": 0.01}),
                "replace_underscores": ("BOOLEAN", {"default": True}),
                "max_tags": ("INT", {"default": 40, "min": 1, "max": 500}),
            }
        }

    def caption(self, dataset, captioner, trigger_word, mode, exclude_tags, general_threshold, character_threshold,
                replace_underscores, max_tags):
        raise NotImplementedError("LoraLabAutoCaption is not implemented yet")
