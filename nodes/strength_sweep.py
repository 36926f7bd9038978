"""Strength Sweep: a labelled grid of LoRA strength x epoch x seed, sampled as LoraLoader would."""
from __future__ import annotations

from .types import CATEGORY, LORA


class StrengthSweep:
    DESCRIPTION = "Renders the trained LoRA at several strengths, epochs and seeds so the best one is visible at once."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "IMAGE")
    RETURN_NAMES = ("grid", "images")
    FUNCTION = "sweep"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        import comfy.samplers

        return {
            "required": {
                "model": ("MODEL",),
                "clip": ("CLIP",),
                "vae": ("VAE",),
                "lora": (LORA,),
                "prompts": ("STRING", {"multiline": True, "default": "a photo of sks"}),
                "negative": ("STRING", {"multiline": True, "default": ""}),
                "strengths": ("STRING", {"default": "0, 0.25, 0.5, 0.75, 1.0"}),
                "seeds": ("STRING", {"default": "1, 2"}),
                "epochs": ("STRING", {"default": "final"}),
                "clip_strength_ratio": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0, "step": 0.05}),
                "width": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 8}),
                "height": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 8}),
                "steps": ("INT", {"default": 20, "min": 1, "max": 200}),
                "cfg": ("FLOAT", {"default": 7.0, "min": 0.0, "max": 30.0, "step": 0.1}),
                "sampler_name": (comfy.samplers.KSampler.SAMPLERS,),
                "scheduler": (comfy.samplers.KSampler.SCHEDULERS,),
            }
        }

    def sweep(self, **inputs):
        raise NotImplementedError("LoraLabStrengthSweep is not implemented yet")
