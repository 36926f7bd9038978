"""Train LoRA: trains an adapter on the graph's own MODEL/CLIP/VAE and returns them with it applied."""
from __future__ import annotations

import pathlib

import comfy.model_management as mm
import comfy.sd
import comfy.utils
import folder_paths

from ..trainer.cpu_threads import fits_threads_to_load
from ..trainer.errors import DiskFull
from ..trainer.files.image_files import png_info, save_output_png, to_pil
from ..trainer.models.families import detect_family
from ..trainer.sweep.epoch_samples import EpochSampler, parse_sample_prompts, sample_defaults
from ..trainer.sweep.loss_chart import render_loss_chart
from ..trainer.training import run_folders
from ..trainer.training.batches import to_pixels
from ..trainer.training.loop import TrainingCancelled, train_lora
from ..trainer.training.loss_summary import loss_summary
from ..trainer.training.settings import PRECISIONS, TrainingSettings
from .comfy_progress import ComfyObserver
from .finite_inputs import refuse_non_finite_floats
from .types import CATEGORY, DATASET, LORA

NETWORKS = ["LoRA", "LoCon", "LoHa", "LoKr"]
OPTIMIZERS = ["AdamW", "AdamW8bit", "Lion", "Prodigy", "Adafactor", "SGD"]
SAMPLE_PREVIEW_SIZE = 512
SCHEDULERS = ["constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"]


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
        return {
            "required": {
                "model": ("MODEL",),
                "clip": ("CLIP",),
                "vae": ("VAE",),
                "dataset": (DATASET,),
                "network": (NETWORKS, {"default": "LoRA"}),
                "rank": ("INT", {"default": 16, "min": 1, "max": 256}),
                "alpha": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 256.0, "step": 0.5, "tooltip": "0 = rank / 2"}),
                "conv_rank": ("INT", {"default": 8, "min": 1, "max": 256, "tooltip": "LoCon/LoHa/LoKr: rank of 3x3 convs"}),
                "conv_alpha": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 256.0, "step": 0.5, "tooltip": "0 = conv_rank / 2"}),
                "epochs": ("INT", {"default": 10, "min": 1, "max": 10000}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 64}),
                "gradient_accumulation": ("INT", {"default": 1, "min": 1, "max": 256}),
                "resolution": ("INT", {"default": 0, "min": 0, "max": 4096, "step": 8, "tooltip": "0 = the model family's native size (512 SD1.5, 768 SD2-v, 1024 SDXL, 32 toy world); a multiple of 64 for SD models"}),
                "unet_lr": ("FLOAT", {"default": 1e-4, "min": 0.0, "max": 10.0, "step": 1e-6, "round": False}),
                "text_encoder_lr": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10.0, "step": 1e-6, "round": False, "tooltip": "0 = text encoder frozen"}),
                "optimizer": (OPTIMIZERS, {"default": "AdamW"}),
                "lr_scheduler": (SCHEDULERS, {"default": "constant"}),
                "warmup_steps": ("INT", {"default": 0, "min": 0, "max": 100000}),
                "mixed_precision": (list(PRECISIONS), {"default": "auto", "tooltip": "auto: bf16 where the device computes it natively, fp16 with loss scaling on older NVIDIA GPUs, fp32 on CPU"}),
                "gradient_checkpointing": ("BOOLEAN", {"default": True}),
                "seed": ("INT", {"default": 42, "min": 0, "max": 0xFFFFFFFF, "control_after_generate": False}),
                "noise_offset": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01}),
                "min_snr_gamma": ("FLOAT", {"default": 5.0, "min": 0.0, "max": 20.0, "step": 0.5, "tooltip": "0 = off"}),
                "caption_shuffle": ("BOOLEAN", {"default": False}),
                "keep_tokens": ("INT", {"default": 1, "min": 0, "max": 32}),
                "caption_dropout": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01}),
                "flip_augment": ("BOOLEAN", {"default": False}),
                "save_every_n_epochs": ("INT", {"default": 1, "min": 0, "max": 10000, "tooltip": "Keep the adapter of every Nth epoch (0 = final only)"}),
                "validation_split": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 0.5, "step": 0.05}),
            },
            "optional": {
                "resume_from": ("STRING", {"default": "", "tooltip": "The run to continue: the folder name in output/loralab/training_state (or the path printed when it was cancelled)"}),
                "initial_lora": (LORA, {"tooltip": "Continue training an existing LoRA (from Load LoRA or an earlier run)"}),
                "sample_prompts": ("STRING", {"multiline": True, "default": "", "tooltip": (
                    "One prompt per line, rendered with the LoRA after every sample_every_n_epochs epochs (training "
                    "resolution and seed, 20 euler steps); kohya options --n --w --h --d --l --s override them")}),
                "sample_every_n_epochs": ("INT", {"default": 0, "min": 0, "max": 10000, "tooltip": "0 = no samples"}),
                "keep_training_state": ("BOOLEAN", {"default": False, "tooltip": (
                    "Keep the resumable state of a finished run in output/loralab/training_state (a cancelled run's "
                    "is always kept; a finished one's is deleted to save disk space)")}),
            },
            "hidden": {"unique_id": "UNIQUE_ID", "prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    @refuse_non_finite_floats
    @fits_threads_to_load(mm.get_torch_device)
    def train(self, model, clip, vae, dataset, resume_from: str = "", initial_lora=None, sample_prompts: str = "",
              sample_every_n_epochs: int = 0, keep_training_state: bool = False, unique_id: str | None = None,
              prompt: dict | None = None, extra_pnginfo: dict | None = None, **inputs):
        settings = TrainingSettings.from_inputs(inputs)
        output_directory = folder_paths.get_output_directory()
        resume = run_folders.resolve_resume_from(resume_from, output_directory) if resume_from.strip() else None
        state_dir = resume or run_folders.new_run_folder(output_directory, settings.seed)
        observer = ComfyObserver(unique_id)
        sampler = None
        if sample_prompts.strip() and sample_every_n_epochs > 0:
            sampler = epoch_sampler(model, clip, vae, settings, sample_prompts, sample_every_n_epochs, state_dir, observer,
                                    prompt, extra_pnginfo)
        observer.started(state_dir)
        try:
            outcome = train_lora(model, clip, vae, dataset, settings, observer, state_dir, resume, initial_lora,
                                 on_epoch_weights=sampler, keep_state=keep_training_state)
        except TrainingCancelled as cancelled:
            observer.cancelled(cancelled.state_dir)
            mm.throw_exception_if_processing_interrupted()  # clears ComfyUI's stop flag as it raises
            raise mm.InterruptProcessingException() from cancelled
        except mm.InterruptProcessingException:  # while encoding, or rendering samples: between saves
            observer.cancelled(state_dir if run_folders.has_saved_state(state_dir) else None)
            raise
        lora = outcome.lora
        if sampler is not None:
            lora.samples = dict(sampler.samples)
        # Apply the final adapter exactly as LoraLoader would, so a KSampler downstream sees what the file gives.
        model_out, clip_out = comfy.sd.load_lora_for_models(model, clip, lora.weights(), 1.0, 1.0)
        chart = render_loss_chart(lora)
        loss_graph = to_pixels(chart)
        warnings = [outcome.warning] if outcome.warning else []
        try:  # the chart is also a file, so headless runs (and /history) have it without a Save Image node
            charts = [save_output_png(chart, f"loralab/charts/{state_dir.name}_loss", png_info(prompt, extra_pnginfo))]
        except DiskFull as error:  # the trained LoRA matters more than its chart file
            charts = []
            warnings.append(f"The loss chart was not saved: {error}")
        summary = loss_summary(lora, " ".join(warnings))
        ui = {"text": [summary], "images": charts + (list(sampler.files) if sampler is not None else [])}
        return {"ui": ui, "result": (model_out, clip_out, lora, summary, loss_graph)}


def epoch_sampler(model, clip, vae, settings: TrainingSettings, sample_prompts: str, every_n_epochs: int,
                  state_dir: pathlib.Path, observer: ComfyObserver, prompt: dict | None, extra_pnginfo: dict | None) -> EpochSampler:
    """The training hook that renders `sample_prompts`, saves them under output/loralab/samples/<run> and previews them."""
    family = detect_family(model)
    prompts = parse_sample_prompts(sample_prompts, sample_defaults(settings.resolution or family.native_resolution,
                                                                   settings.seed, family.prediction_type))

    def show(epoch: int, index: int, image) -> None:
        observer.on_stage(f"epoch {epoch}: sample {index + 1}/{len(prompts)} rendered")
        bar = observer.progress_bar or comfy.utils.ProgressBar(1, node_id=observer.node_id)
        bar.update_absolute(bar.current, bar.total, ("PNG", to_pil(image), SAMPLE_PREVIEW_SIZE))

    return EpochSampler(model, clip, vae, prompts, every_n_epochs, f"loralab/samples/{state_dir.name}", show,
                        prompt, extra_pnginfo)

