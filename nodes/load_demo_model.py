"""The built-in toy-world model: a tiny text-to-image model of coloured shapes, for the demo and for tests."""
from __future__ import annotations

from .types import CATEGORY


class LoadDemoModel:
    DESCRIPTION = ("Loads LoRA Lab's built-in toy-world model: 32x32 images of red, yellow, green or blue circles, "
                   "squares and triangles on white, gray or black backgrounds (\"a red circle on a white background\"). "
                   "Small enough to train a LoRA on a CPU in a minute. Use Empty Latent (LoRA Lab) for its latents.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def load(self):
        import folder_paths

        from ..trainer.toy_world.model import load_toy_world

        models = load_toy_world(embedding_directory=folder_paths.get_folder_paths("embeddings"))
        return (models.model, models.clip, models.vae)


class EmptyLatent:
    DESCRIPTION = ("Empty latents for the toy-world model, whose VAE shrinks images 4x (ComfyUI's Empty Latent Image "
                   "assumes 8x and would give the wrong size).")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls):
        size = {"default": 32, "min": 8, "max": 1024, "step": 8, "tooltip": "In pixels; rounded down to a multiple of 8."}
        return {
            "required": {
                "width": ("INT", size),
                "height": ("INT", size),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
            }
        }

    def generate(self, width, height, batch_size):
        from ..trainer.toy_world.model import empty_latent

        return (empty_latent(width, height, batch_size),)
