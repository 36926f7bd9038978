"""Strength Sweep: a labelled grid of LoRA strength x epoch x seed, sampled as LoraLoader would."""
from __future__ import annotations

import comfy.model_management as mm
import folder_paths

from ..trainer.cpu_threads import fits_threads_to_load
from ..trainer.files.filename_prefix import prefix_parts
from ..trainer.files.image_files import png_info, save_output_png, to_pil
from ..trainer.sweep.grid import grid_metadata, render_grid
from ..trainer.sweep.plan import plan_sweep
from ..trainer.sweep.rendering import MAX_CFG, MAX_SIZE, MAX_STEPS, MIN_SIZE, SIZE_STEP, SamplingSettings, sweep_images
from .comfy_progress import SweepProgress
from .finite_inputs import refuse_non_finite_floats
from .types import CATEGORY, LORA

FILENAME_PREFIX = "loralab/sweeps/sweep"


class StrengthSweep:
    DESCRIPTION = ("Renders the trained LoRA at several strengths, epochs and seeds so the best one is visible at once. "
                   "Each cell is what LoraLoader at that strength + KSampler gives (strength 0 = the model without the "
                   "LoRA). Outputs the labelled grid (also saved to the output folder) and the cells as a batch, "
                   "left to right, top to bottom.")
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
                "prompts": ("STRING", {"multiline": True, "default": "a photo of sks",
                                       "tooltip": "One prompt per line; each line is a block of rows in the grid"}),
                "negative": ("STRING", {"multiline": True, "default": ""}),
                "strengths": ("STRING", {"default": "0, 0.25, 0.5, 0.75, 1.0",
                                         "tooltip": "LoRA strengths across the grid: a list, or a range start:stop:step "
                                                    "such as 0:1:0.1 (0 = the model without the LoRA)"}),
                "seeds": ("STRING", {"default": "1, 2", "tooltip": "One block of columns per seed: a list, or a range such as 1:4"}),
                "epochs": ("STRING", {"default": "final", "tooltip": "Rows: final, all, best (the recommended epoch) or "
                                                                 "epoch numbers such as 4, 8, 10"}),
                "clip_strength_ratio": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0, "step": 0.05,
                                                   "tooltip": "LoraLoader's strength_clip as a fraction of the strength"}),
                "width": ("INT", {"default": 512, "min": MIN_SIZE, "max": MAX_SIZE, "step": SIZE_STEP}),
                "height": ("INT", {"default": 512, "min": MIN_SIZE, "max": MAX_SIZE, "step": SIZE_STEP}),
                "steps": ("INT", {"default": 20, "min": 1, "max": MAX_STEPS}),
                "cfg": ("FLOAT", {"default": 7.0, "min": 0.0, "max": MAX_CFG, "step": 0.1}),
                "sampler_name": (comfy.samplers.KSampler.SAMPLERS,),
                "scheduler": (comfy.samplers.KSampler.SCHEDULERS,),
            },
            "optional": {
                "filename_prefix": ("STRING", {"default": FILENAME_PREFIX,
                                               "tooltip": "Where the grid PNG is saved, inside ComfyUI's output folder "
                                                          "(the workflow is embedded in it, as Save Image does)"}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO", "unique_id": "UNIQUE_ID"},
        }

    @refuse_non_finite_floats
    @fits_threads_to_load(mm.get_torch_device)
    def sweep(self, model, clip, vae, lora, prompts: str, negative: str, strengths: str, seeds: str, epochs: str,
              clip_strength_ratio: float, width: int, height: int, steps: int, cfg: float, sampler_name: str,
              scheduler: str, filename_prefix: str = FILENAME_PREFIX, prompt: dict | None = None, extra_pnginfo: dict | None = None, unique_id: str | None = None):
        prefix_parts(filename_prefix, "output", folder_paths.get_output_directory(), FILENAME_PREFIX)  # before sampling
        plan = plan_sweep(prompts, seeds, epochs, strengths, lora.epochs, lora.recommended_epoch)
        settings = SamplingSettings(width, height, steps, cfg, sampler_name, scheduler)
        progress = SweepProgress(unique_id, steps)
        images = sweep_images(model, clip, vae, lora, plan, negative, clip_strength_ratio, settings, progress.update)
        grid, layout = render_grid(plan, images)
        details = {**grid_metadata(plan, layout), "negative": negative, "clip_strength_ratio": clip_strength_ratio,
                   "sampler": vars(settings)}
        entry = save_output_png(to_pil(grid[0]), filename_prefix, png_info(prompt, extra_pnginfo, {"loralab_sweep": details}))
        text = plan.describe()
        if lora.recommended_epoch is not None:
            text += f"; recommended epoch: {lora.recommended_epoch} ({lora.recommendation})"
        return {"ui": {"images": [entry], "text": [text]}, "result": (grid, images)}
