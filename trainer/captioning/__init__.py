"""Auto-captioning: WD14 taggers (onnxruntime), BLIP and Florence-2 (transformers), one module each,
with shared tag post-processing, model placement/download and loss-free caption writing."""
from .models import captioner_names, register_model_folder
from .pipeline import CaptionOutcome, CaptionRun, CaptionSettings, caption_dataset

__all__ = ["CaptionOutcome", "CaptionRun", "CaptionSettings", "caption_dataset", "captioner_names",
           "register_model_folder"]
