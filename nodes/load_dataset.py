"""Load Dataset: a folder of captioned images (flat, or kohya `N_name` subfolders) plus its report."""
from __future__ import annotations

import dataclasses

import folder_paths

from ..trainer.data.images import IMAGE_EXTENSIONS
from ..trainer.data.loading import CAPTION_EXTENSIONS, folder_fingerprint, load_dataset
from ..trainer.data.report import build_report
from ..trainer.data.roots import comfy_dataset_roots, resolve_dataset_path, restrict_comfy_listing
from ..trainer.data.tokens import caption_token_counter
from ..trainer.errors import LoraLabError, SettingsError
from ..trainer.models.families import Family, detect_family
from .types import DatasetTextNode

restrict_comfy_listing(set(IMAGE_EXTENSIONS) | set(CAPTION_EXTENSIONS))  # /models/loralab_datasets: images and captions only

DEFAULT_RESOLUTION = 512
DEFAULT_BUCKET_STEP = 64


class LoadDataset(DatasetTextNode):
    DESCRIPTION = "Reads a training folder, checks every image and caption, and reports what would hurt the LoRA."
    RETURN_NAMES = ("dataset", "report")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "path": ("STRING", {"default": "lora_dataset", "tooltip": "A folder in ComfyUI's input folder (its name), or an absolute path inside a declared dataset root (loralab_datasets in extra_model_paths.yaml, or LORALAB_DATASET_ROOTS)."}),
                "repeats": ("INT", {"default": 10, "min": 1, "max": 1000, "tooltip": "Repeats per epoch for a flat folder (kohya N_name folders carry their own)."}),
                "caption_extension": ([".txt", ".caption"], {"default": ".txt"}),
                "class_tokens": ("STRING", {"default": "", "tooltip": "Caption for images that have no caption file."}),
            },
            "optional": {
                "regularization_path": ("STRING", {"default": "", "tooltip": "Optional folder of regularization images, same layout."}),
                "base_resolution": ("INT", {"default": 0, "min": 0, "max": 4096, "step": 8, "tooltip": "0 = from the connected model, else 512."}),
                "model": ("MODEL", {"tooltip": "Optional: sets the native resolution the report checks against."}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "For the steps-per-epoch figure in the report."}),
                "trigger_word": ("STRING", {"default": "", "tooltip": "Report captions that lack this word."}),
                "epochs": ("INT", {"default": 10, "min": 1, "max": 10000, "tooltip": "For the total-steps advice in the report: set it as on Train LoRA."}),
                "clip": ("CLIP", {"tooltip": "Optional: count caption tokens with this CLIP's tokenizer (else ComfyUI's SD CLIP tokenizer)."}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, path="", regularization_path="", **_):
        """Re-run when files in the folders change (captions edited, images added), not only when inputs do.

        A path that cannot be resolved (empty, refused, or linked from another node) means "always re-run";
        the run itself then reports the problem.
        """
        texts = [text for text in (path, regularization_path) if isinstance(text, str) and text.strip()]
        if not texts:
            return float("nan")
        input_directory, roots = folder_paths.get_input_directory(), comfy_dataset_roots()
        try:
            folders = [resolve_dataset_path(text, input_directory, roots) for text in texts]
        except LoraLabError:
            return float("nan")
        return folder_fingerprint(*folders)

    def run(self, path, repeats, caption_extension, class_tokens, regularization_path="", base_resolution=0,
             model=None, batch_size=1, trigger_word="", epochs=10, clip=None):
        input_directory, roots = folder_paths.get_input_directory(), comfy_dataset_roots()
        family, problem = _connected_family(model)
        resolution, bucket_step, resolution_source = _base_resolution(base_resolution, family, problem)
        loaded = load_dataset(
            resolve_dataset_path(path, input_directory, roots),
            repeats=repeats,
            caption_extension=caption_extension,
            class_tokens=class_tokens,
            regularization_root=resolve_dataset_path(regularization_path, input_directory, roots, "regularization_path")
            if regularization_path.strip() else None,
            base_resolution=resolution,
            bucket_step=bucket_step,
            roots=roots,
        )
        report = build_report(loaded, batch_size=batch_size, epochs=epochs, trigger_word=trigger_word,
                              count_tokens=caption_token_counter(clip, family), resolution_source=resolution_source)
        text = report.text()
        dataset = dataclasses.replace(loaded.dataset, report=text)
        return self.shown(dataset, text)


def _connected_family(model) -> tuple[Family | None, str]:
    """The connected model's family, or None and why not (for the report's resolution line)."""
    if model is None:
        return None, "; connect a MODEL or set base_resolution"
    try:
        return detect_family(model), ""
    except SettingsError as error:
        return None, f": {error}"


def _base_resolution(requested: int, family: Family | None, problem: str) -> tuple[int, int, str]:
    """(resolution, bucket step, where the resolution came from): a connected model's family decides both."""
    step = family.bucket_step if family else DEFAULT_BUCKET_STEP
    if requested:
        return requested, step, "set on the node"
    if family is None:
        return DEFAULT_RESOLUTION, step, f"default{problem}"
    return family.native_resolution, step, f"native size of the connected {family.name} model"
