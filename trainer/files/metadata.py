"""The safetensors metadata kohya sd-scripts writes (`ss_*`, `modelspec.*`), built from a TrainedLora and read back.

A1111/Forge, ComfyUI LoRA managers and Civitai read these keys to show the base model, rank, tags and
training settings, so the names and value formats follow kohya's `train_network.py` and
`library/sai_model_spec.py`. Every value is a string, as safetensors metadata requires.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import time
from typing import Any

from ..models.families import BY_NAME, Family, family_named
from ..training.trained_lora import TrainedLora

MODELSPEC_VERSION = "1.0.1"
PREDICTION_TYPES = {"eps": "epsilon", "v": "v"}  # modelspec has no value for flow matching

# TrainedLora.settings key (the Train LoRA input names) -> kohya metadata key.
SETTINGS_KEYS = {
    "unet_lr": "ss_unet_lr",
    "text_encoder_lr": "ss_text_encoder_lr",
    "lr_scheduler": "ss_lr_scheduler",
    "warmup_steps": "ss_lr_warmup_steps",
    "epochs": "ss_num_epochs",
    "max_train_steps": "ss_max_train_steps",
    "batch_size": "ss_batch_size_per_device",
    "gradient_accumulation": "ss_gradient_accumulation_steps",
    "mixed_precision": "ss_mixed_precision",
    "gradient_checkpointing": "ss_gradient_checkpointing",
    "seed": "ss_seed",
    "noise_offset": "ss_noise_offset",
    "min_snr_gamma": "ss_min_snr_gamma",
    "caption_shuffle": "ss_shuffle_caption",
    "keep_tokens": "ss_keep_tokens",
    "caption_dropout": "ss_caption_dropout_rate",
    "flip_augment": "ss_flip_aug",
    "validation_split": "ss_validation_split",
    "clip_skip": "ss_clip_skip",
    "max_grad_norm": "ss_max_grad_norm",
    "base_model_name": "ss_sd_model_name",
    "base_model_hash": "ss_new_sd_model_hash",
    "training_comment": "ss_training_comment",
}

# TrainedLora.dataset_summary key -> kohya metadata key; dicts are stored as JSON.
DATASET_KEYS = {
    "tag_frequency": "ss_tag_frequency",
    "dataset_dirs": "ss_dataset_dirs",
    "reg_dataset_dirs": "ss_reg_dataset_dirs",
    "num_train_images": "ss_num_train_images",
    "num_reg_images": "ss_num_reg_images",
    "num_validation_images": "ss_num_validation_images",
    "num_batches_per_epoch": "ss_num_batches_per_epoch",
    "resolution": "ss_resolution",
    "enable_bucket": "ss_enable_bucket",
    "min_bucket_reso": "ss_min_bucket_reso",
    "max_bucket_reso": "ss_max_bucket_reso",
    "bucket_info": "ss_bucket_info",
}


def network_args(lora: TrainedLora) -> dict[str, str]:
    """`ss_network_args` as kohya records `--network_args` for LyCORIS (`algo=locon conv_dim=8 ...`)."""
    args = lora.network_type.network_args()
    if lora.conv_rank is not None:
        args["conv_dim"] = str(lora.conv_rank)
        args["conv_alpha"] = str(lora.conv_alpha if lora.conv_alpha is not None else lora.conv_rank)
    args.update({key: str(value) for key, value in lora.settings.get("network_args", {}).items()})
    return args


def build_metadata(lora: TrainedLora, epoch: int, output_name: str, saved_at: float | None = None) -> dict[str, str]:
    """kohya's `ss_*` and modelspec keys for the file holding `epoch` of `lora` (hashes are added when serialising)."""
    family = family_named(lora.family)
    saved_at = saved_at if saved_at is not None else time.time()
    finished_at = lora.finished_at or saved_at
    settings = lora.settings
    summary = lora.dataset_summary
    metadata: dict[str, Any] = {
        "ss_session_id": session_id(lora),
        "ss_training_started_at": lora.started_at or finished_at,
        "ss_training_finished_at": finished_at,
        "ss_output_name": output_name,
        "ss_v2": family.is_v2,
        "ss_base_model_version": family.base_model_version,
        "ss_network_module": lora.network_type.network_module,
        "ss_network_dim": lora.rank,
        "ss_network_alpha": float(lora.alpha),
        "ss_network_args": json.dumps(network_args(lora)),
        "ss_epoch": epoch,
        "ss_steps": lora.epochs[epoch].step,
    }
    if "unet_lr" in settings:
        metadata["ss_learning_rate"] = settings["unet_lr"]
    if "optimizer" in settings:
        metadata["ss_optimizer"] = optimizer_description(settings["optimizer"], settings.get("optimizer_args", {}))
    if "batch_size" in settings:
        metadata["ss_total_batch_size"] = settings["batch_size"] * lora.processes * settings.get("gradient_accumulation", 1)
    metadata.update({ss_key: settings[key] for key, ss_key in SETTINGS_KEYS.items() if key in settings})
    metadata.update({ss_key: _dataset_value(summary[key]) for key, ss_key in DATASET_KEYS.items() if key in summary})
    if "buckets" in summary and "bucket_info" not in summary:  # kohya's bucket_info layout, without per-bucket counts
        metadata["ss_bucket_info"] = json.dumps({"buckets": {str(index): {"resolution": list(bucket)}
                                                             for index, bucket in enumerate(summary["buckets"])}})
    if "steps_per_epoch" in summary and "epochs" in settings and "max_train_steps" not in settings:
        metadata["ss_max_train_steps"] = summary["steps_per_epoch"] * settings["epochs"]
    metadata.setdefault("ss_tag_frequency", "{}")
    metadata.setdefault("ss_dataset_dirs", "{}")
    metadata.setdefault("ss_num_train_images", 0)
    resolution = _resolution_pair(summary, settings, family)
    metadata["ss_resolution"] = resolution  # kohya writes "(512, 512)"
    strings = {key: str(value) for key, value in metadata.items()}
    strings.update(modelspec(family, title=output_name, resolution=resolution, created_at=finished_at,
                             clip_skip=settings.get("clip_skip")))
    return strings


def modelspec(family: Family, title: str, resolution: tuple[int, int], created_at: float, clip_skip: int | None) -> dict[str, str]:
    """Stability AI ModelSpec 1.0.1 keys, valued as kohya's `sai_model_spec.build_metadata` does for a LoRA."""
    spec = {
        "modelspec.sai_model_spec": MODELSPEC_VERSION,
        "modelspec.architecture": family.architecture,
        "modelspec.implementation": family.implementation,
        "modelspec.title": title,
        "modelspec.resolution": f"{resolution[0]}x{resolution[1]}",
        "modelspec.date": datetime.datetime.fromtimestamp(int(created_at)).isoformat(),
        "modelspec.implementation_version": "comfyui-lora-lab",
    }
    if family.prediction_type in PREDICTION_TYPES:
        spec["modelspec.prediction_type"] = PREDICTION_TYPES[family.prediction_type]
    if clip_skip:
        spec["modelspec.encoder_layer"] = str(clip_skip)
    return spec


def session_id(lora: TrainedLora) -> int:
    """One id for every epoch file of a run, as kohya's random per-run `ss_session_id`, but reproducible."""
    digest = hashlib.sha256(f"{lora.started_at!r}/{lora.family}/{lora.network}/{lora.rank}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def optimizer_description(name: str, args: dict[str, Any]) -> str:
    """kohya's `ss_optimizer` form: the optimizer, then its arguments in parentheses."""
    if not args:
        return name
    return f"{name}({','.join(f'{key}={value}' for key, value in args.items())})"


def _dataset_value(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return value


def _resolution_pair(summary: dict[str, Any], settings: dict[str, Any], family: Family) -> tuple[int, int]:
    value = summary.get("resolution") or settings.get("resolution") or family.native_resolution
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[-1])
    return int(value), int(value)


# ---------------------------------------------------------------- reading back


def family_from_metadata(metadata: dict[str, str]) -> Family | None:
    """The family a file declares through `ss_base_model_version` or `modelspec.architecture`, if any."""
    version = metadata.get("ss_base_model_version")
    for family in BY_NAME.values():
        if version == family.base_model_version:
            return family
    architecture = metadata.get("modelspec.architecture")
    for family in BY_NAME.values():
        if architecture == family.architecture:
            return family
    if version is None and architecture is None and "ss_v2" in metadata:
        return BY_NAME["sd2"] if metadata["ss_v2"] == "True" else BY_NAME["sd15"]
    return None


def settings_from_metadata(metadata: dict[str, str]) -> dict[str, Any]:
    """Training settings recorded in a file, under TrainedLora.settings names (inverse of SETTINGS_KEYS)."""
    settings = {key: parse_value(metadata[ss_key]) for key, ss_key in SETTINGS_KEYS.items() if ss_key in metadata}
    if "ss_optimizer" in metadata:
        settings["optimizer"] = metadata["ss_optimizer"]
    return settings


def dataset_summary_from_metadata(metadata: dict[str, str]) -> dict[str, Any]:
    """Dataset facts recorded in a file, under TrainedLora.dataset_summary names (inverse of DATASET_KEYS)."""
    return {key: parse_value(metadata[ss_key]) for key, ss_key in DATASET_KEYS.items() if ss_key in metadata}


def parse_value(text: str) -> Any:
    """A metadata string back to the value kohya wrote with `str()`: bool, int, float, JSON, tuple or text."""
    if text in ("True", "False"):
        return text == "True"
    if text == "None":
        return None
    for convert in (int, float, json.loads):
        try:
            return convert(text)
        except ValueError:
            continue
    if text.startswith("(") and text.endswith(")"):
        parts = [part.strip() for part in text[1:-1].split(",") if part.strip()]
        if parts and all(part.lstrip("-").isdigit() for part in parts):
            return tuple(int(part) for part in parts)
    return text
