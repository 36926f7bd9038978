"""The built-in toy-world model: a tiny text-to-image model of coloured shapes, for the demo and for tests."""
from __future__ import annotations

from .types import CATEGORY


class LoadDemoModel:
    DESCRIPTION = ("Loads one of LoRA Lab's built-in toy-world models: 32x32 images of red, yellow, green or blue "
                   "circles, squares and triangles on white, gray or black backgrounds (\"a red circle on a white "
                   "background\"). toy_world has SD1.5's architecture, flow_toy_world Flux.1's (sample it with cfg 4). "
                   "Small enough to train a LoRA on a CPU in a minute. Use Empty Latent (LoRA Lab) for their latents.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        from ..trainer.toy_world.demo_models import DEMO_MODELS

        choices = list(DEMO_MODELS)
        return {"required": {}, "optional": {"model_name": (choices, {
            "default": choices[0], "tooltip": "toy_world: SD1.5 architecture (eps prediction). flow_toy_world: Flux.1 "
                                              "architecture (flow matching, T5 + CLIP-L)."})}}

    def load(self, model_name="toy_world"):
        import folder_paths

        from ..trainer.toy_world.demo_models import demo_kind, load_demo_model

        models = load_demo_model(demo_kind(model_name).weights_path,
                                 embedding_directory=folder_paths.get_folder_paths("embeddings"))
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
