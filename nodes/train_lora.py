"""Train LoRA: trains an adapter on the graph's own MODEL/CLIP/VAE and returns them with it applied."""
from __future__ import annotations

import comfy.model_management as mm
import comfy.sd
import folder_paths

from ..trainer.cpu_threads import fits_threads_to_load
from ..trainer.errors import DiskFull
from ..trainer.files.image_files import png_info, save_output_png
from ..trainer.sweep.loss_chart import render_loss_chart
from ..trainer.training.batches import to_pixels
from ..trainer.training.loop import TrainingCancelled
from ..trainer.training.loss_summary import loss_summary
from ..trainer.training.run import RunOptions, run_training
from ..trainer.training.settings import TrainingSettings
from .comfy_progress import ComfyObserver
from .finite_inputs import refuse_non_finite_floats
from .setting_inputs import setting_inputs, settings_from
from .types import CATEGORY, DATASET, LORA


class TrainLoRA:
    DESCRIPTION = ("Trains a LoRA on the connected model without loading it twice. Outputs the model and CLIP with the "
                   "LoRA applied (feed a KSampler directly) and the LoRA itself for Save LoRA and Strength Sweep.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL", "CLIP", LORA, "STRING", "IMAGE")
    RETURN_NAMES = ("model", "clip", "lora", "loss_summary", "loss_graph")
    FUNCTION = "train"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        options = setting_inputs(RunOptions, optional=True)
        return {
            "required": {"model": ("MODEL",), "clip": ("CLIP",), "vae": ("VAE",), "dataset": (DATASET,),
                         **setting_inputs(TrainingSettings)},
            "optional": {"resume_from": options.pop("resume_from"),
                         "initial_lora": (LORA, {"tooltip": "Continue training an existing LoRA (from Load LoRA or an "
                                                            "earlier run)"}),
                         **options, **setting_inputs(TrainingSettings, optional=True)},
            "hidden": {"unique_id": "UNIQUE_ID", "prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    @refuse_non_finite_floats
    @fits_threads_to_load(mm.get_torch_device)
    def train(self, model, clip, vae, dataset, initial_lora=None, unique_id: str | None = None,
              prompt: dict | None = None, extra_pnginfo: dict | None = None, **inputs):
        try:
            run = run_training(model, clip, vae, dataset, settings_from(TrainingSettings, inputs),
                               ComfyObserver(unique_id), output_directory=folder_paths.get_output_directory(),
                               options=settings_from(RunOptions, inputs), initial_lora=initial_lora, prompt=prompt,
                               extra_pnginfo=extra_pnginfo)
        except TrainingCancelled as cancelled:
            mm.throw_exception_if_processing_interrupted()  # clears ComfyUI's stop flag as it raises
            raise mm.InterruptProcessingException() from cancelled
        lora = run.lora
        # Apply the final adapter exactly as LoraLoader would, so a KSampler downstream sees what the file gives.
        model_out, clip_out = comfy.sd.load_lora_for_models(model, clip, lora.weights(), 1.0, 1.0)
        chart = render_loss_chart(lora)
        loss_graph = to_pixels(chart)
        warnings = [run.warning] if run.warning else []
        try:  # the chart is also a file, so headless runs (and /history) have it without a Save Image node
            charts = ([save_output_png(chart, f"loralab/charts/{run.state_dir.name}_loss", png_info(prompt, extra_pnginfo))]
                      if run.writes_files else [])
        except DiskFull as error:  # the trained LoRA matters more than its chart file
            charts = []
            warnings.append(f"The loss chart was not saved: {error}")
        summary = loss_summary(lora, " ".join(warnings))
        ui = {"text": [summary], "images": charts + run.sample_files}
        return {"ui": ui, "result": (model_out, clip_out, lora, summary, loss_graph)}
