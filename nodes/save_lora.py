"""Save LoRA: kohya-format safetensors under ComfyUI's loras folder, never overwriting by accident."""
from __future__ import annotations

from .types import CATEGORY, LORA


class SaveLoRA:
    DESCRIPTION = "Writes kohya-format LoRA files (LoraLoader, A1111/Forge and diffusers load them) with full metadata."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("paths",)
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "lora": (LORA,),
                "filename_prefix": ("STRING", {"default": "loralab/my_lora"}),
                "epochs": ("STRING", {"default": "final", "tooltip": "final, all, or a list such as 4, 8, 10"}),
                "dtype": (["fp16", "bf16", "fp32"], {"default": "fp16"}),
                "overwrite": ("BOOLEAN", {"default": False}),
            }
        }

    def save(self, lora, filename_prefix, epochs, dtype, overwrite):
        raise NotImplementedError("LoraLabSaveLoRA is not implemented yet")
