"""Save LoRA: kohya-format safetensors under ComfyUI's loras folder, never overwriting by accident."""
from __future__ import annotations

import comfy.model_management as mm
import folder_paths

from ..trainer.files.lora_io import SAVE_DTYPES, save_lora_files
from .comfy_progress import log
from .types import CATEGORY, LORA


class SaveLoRA:
    DESCRIPTION = ("Writes kohya-format LoRA files (LoraLoader, A1111/Forge and diffusers load them) with full metadata "
                   "into ComfyUI's loras folder, where LoraLoader lists them without a restart.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("paths",)
    OUTPUT_TOOLTIPS = ("The saved files' full paths, one per line.",)
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "lora": (LORA,),
                "filename_prefix": ("STRING", {"default": "loralab/my_lora", "tooltip": "Name inside the loras folder; "
                                               "subfolders allowed. Epoch files get -000004 style suffixes."}),
                "epochs": ("STRING", {"default": "final", "tooltip": "final, all, or a list such as 4, 8, 10"}),
                "dtype": (list(SAVE_DTYPES), {"default": "fp16"}),
                "overwrite": ("BOOLEAN", {"default": False, "tooltip": "Replace existing files of the same name; "
                                          "off picks the next free name (my_lora_2) instead."}),
            }
        }

    def save(self, lora, filename_prefix, epochs, dtype, overwrite):
        loras_root = folder_paths.get_folder_paths("loras")[0]
        saved = save_lora_files(lora, loras_root, filename_prefix, epochs, dtype, overwrite,
                                should_stop=mm.processing_interrupted)
        if mm.processing_interrupted():  # stopped before a file: what exists is whole, say what that is
            log.warning("Save LoRA cancelled; %s", f"written: {', '.join(item.lora_name for item in saved)}"
                        if saved else "no file was written")
            mm.throw_exception_if_processing_interrupted()  # clears ComfyUI's stop flag as it raises
        paths = [str(item.path) for item in saved]
        ui = {
            "text": paths,
            "loras": [{"filename": item.filename, "subfolder": item.subfolder, "lora_name": item.lora_name,
                       "epoch": item.epoch, "path": str(item.path)} for item in saved],
        }
        return {"ui": ui, "result": ("\n".join(paths),)}
