"""Where captioner weights live (`models/captioners/<name>/`) and how a missing one gets there.

The folder is registered with ComfyUI's folder_paths as "captioners", so extra_model_paths.yaml can
add more places. A missing model is fetched from the Hugging Face hub (HF_ENDPOINT honoured) into a
hidden `.<name>.download` folder next to its final place and renamed only when complete, so a broken
download never looks like an installed model (and a retry resumes it).
"""
from __future__ import annotations

import fnmatch
import json
import logging
import os
import pathlib
from dataclasses import dataclass

import folder_paths

from ..errors import CaptionerError

logger = logging.getLogger(__name__)

FOLDER_NAME = "captioners"
WD14_FILES = ("model.onnx", "selected_tags.csv")
# Config, safetensors weights, processor and tokenizer files of a transformers model folder.
TRANSFORMERS_PATTERNS = ("*.json", "*.safetensors", "*.txt", "*.model")
TRANSFORMERS_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
DEFAULT_ENDPOINT = "https://huggingface.co"


@dataclass(frozen=True)
class CaptionerSpec:
    """A captioner by its folder name: which backend runs it and where the hub has it."""

    name: str
    kind: str  # "wd14", "blip" or "florence2"
    repo_id: str = ""  # empty for a model the user placed that we cannot download

    @property
    def download_patterns(self) -> tuple[str, ...]:
        return WD14_FILES if self.kind == "wd14" else TRANSFORMERS_PATTERNS

    def describe_files(self) -> str:
        if self.kind == "wd14":
            return ", ".join(WD14_FILES)
        return "config.json, model.safetensors, and the processor and tokenizer files (*.json, *.txt)"

    def missing_files(self, folder: pathlib.Path) -> list[str]:
        """Files the backend needs that `folder` lacks (empty: complete)."""
        if self.kind == "wd14":
            return [name for name in WD14_FILES if not (folder / name).is_file()]
        missing = [] if (folder / "config.json").is_file() else ["config.json"]
        if not any((folder / name).is_file() for name in TRANSFORMERS_WEIGHTS):
            missing.append("model.safetensors")
        return missing


KNOWN_CAPTIONERS = {
    spec.name: spec for spec in (
        CaptionerSpec("wd-v1-4-moat-tagger-v2", "wd14", "SmilingWolf/wd-v1-4-moat-tagger-v2"),
        CaptionerSpec("wd-eva02-large-tagger-v3", "wd14", "SmilingWolf/wd-eva02-large-tagger-v3"),
        CaptionerSpec("wd-vit-tagger-v3", "wd14", "SmilingWolf/wd-vit-tagger-v3"),
        CaptionerSpec("blip-image-captioning-base", "blip", "Salesforce/blip-image-captioning-base"),
        # The transformers-native port; microsoft/Florence-2-base needs trust_remote_code and breaks often.
        CaptionerSpec("Florence-2-base", "florence2", "florence-community/Florence-2-base"),
    )
}
TRANSFORMERS_KINDS = {"blip": "blip", "florence2": "florence2"}  # config.json model_type -> backend


def register_model_folder() -> None:
    """Make `models/captioners` a ComfyUI model folder (kept after any extra_model_paths.yaml entries)."""
    folder_paths.add_model_folder_path(FOLDER_NAME, os.path.join(folder_paths.models_dir, FOLDER_NAME))


def model_folders() -> list[pathlib.Path]:
    if FOLDER_NAME not in folder_paths.folder_names_and_paths:
        register_model_folder()
    return [pathlib.Path(path) for path in folder_paths.get_folder_paths(FOLDER_NAME)]


def captioner_names() -> list[str]:
    """The known captioners, then any other complete model folder a user placed in a captioners folder."""
    names = list(KNOWN_CAPTIONERS)
    for folder in model_folders():
        if folder.is_dir():
            names += sorted(entry.name for entry in folder.iterdir()
                            if entry.name not in names and _local_spec(entry) is not None)
    return names


def spec_for(name: str) -> CaptionerSpec:
    if name in KNOWN_CAPTIONERS:
        return KNOWN_CAPTIONERS[name]
    for folder in model_folders():
        spec = _local_spec(folder / name)
        if spec is not None:
            return spec
    raise CaptionerError(f"Unknown captioner '{name}'. Choose one of {', '.join(KNOWN_CAPTIONERS)}, or put a WD14 "
                         f"(model.onnx + selected_tags.csv), BLIP or Florence-2 folder in {_folder_list()}.")


def find_model(spec: CaptionerSpec) -> pathlib.Path | None:
    """The first complete `<captioners folder>/<name>` folder, if any."""
    for folder in model_folders():
        candidate = folder / spec.name
        if candidate.is_dir() and not spec.missing_files(candidate):
            return candidate
    return None


def ensure_model(spec: CaptionerSpec) -> pathlib.Path:
    """The model folder, downloading it first if no captioners folder has it."""
    found = find_model(spec)
    if found is not None:
        return found
    target = model_folders()[0] / spec.name
    if target.exists():
        # A folder the user made by hand but did not finish: never replace it, say what is missing.
        raise CaptionerError(f"The captioner folder {target} is incomplete: it lacks "
                             f"{', '.join(spec.missing_files(target))}.\n{_manual_instructions(spec, target)}")
    if not spec.repo_id:
        raise CaptionerError(f"Captioner '{spec.name}' is not installed.\n{_manual_instructions(spec, target)}")
    return download_model(spec, target)


def download_model(spec: CaptionerSpec, target: pathlib.Path) -> pathlib.Path:
    """Fetch the model's files from the hub into a hidden folder beside `target`, then rename it.

    The file list comes from the hub first: the hub client would otherwise fall back to whatever a
    previous, interrupted attempt left in the hidden folder when the network is down.
    """
    import huggingface_hub

    partial = target.parent / f".{target.name}.download"
    endpoint = os.environ.get("HF_ENDPOINT") or None
    logger.info("Downloading captioner %s from %s into %s", spec.name, _repo_url(spec), target)
    partial.parent.mkdir(parents=True, exist_ok=True)
    try:
        # model_info fails at once when offline; list_repo_files would retry for ~20 s first.
        siblings = huggingface_hub.HfApi(endpoint=endpoint).model_info(spec.repo_id).siblings or []
        wanted = [name for name in (sibling.rfilename for sibling in siblings)
                  if "/" not in name and any(fnmatch.fnmatch(name, pattern) for pattern in spec.download_patterns)]
        if wanted:
            huggingface_hub.snapshot_download(spec.repo_id, local_dir=partial, allow_patterns=wanted, endpoint=endpoint)
    except Exception as error:  # the hub client raises many types (HTTP, offline, OS); all mean "not downloaded"
        raise CaptionerError(f"Captioner '{spec.name}' is not installed and could not be downloaded from "
                             f"{_repo_url(spec)} ({type(error).__name__}: {error}).\n"
                             f"{_manual_instructions(spec, target)}") from error
    missing = sorted({name for name in wanted if not (partial / name).is_file()} | set(spec.missing_files(partial)))
    if missing:
        raise CaptionerError(f"The download from {_repo_url(spec)} lacks {', '.join(missing)}.\n"
                             f"{_manual_instructions(spec, target)}")
    os.replace(partial, target)
    return target


def _local_spec(folder: pathlib.Path) -> CaptionerSpec | None:
    """What backend a user-placed folder is for, from its contents (None: not a captioner)."""
    if not folder.is_dir():
        return None
    if all((folder / name).is_file() for name in WD14_FILES):
        return CaptionerSpec(folder.name, "wd14")
    config = folder / "config.json"
    if config.is_file():
        try:
            model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type", "")
        except (OSError, ValueError) as error:
            logger.warning("Ignoring captioner folder %s: unreadable config.json (%s)", folder, error)
            return None
        kind = TRANSFORMERS_KINDS.get(model_type)
        return CaptionerSpec(folder.name, kind) if kind else None
    return None


def _repo_url(spec: CaptionerSpec) -> str:
    return f"{(os.environ.get('HF_ENDPOINT') or DEFAULT_ENDPOINT).rstrip('/')}/{spec.repo_id}"


def _manual_instructions(spec: CaptionerSpec, target: pathlib.Path) -> str:
    source = f" from {DEFAULT_ENDPOINT}/{spec.repo_id}/tree/main" if spec.repo_id else ""
    return (f"To install it by hand, download {spec.describe_files()}{source} and put them in:\n  {target}{os.sep}\n"
            "(Or set the HF_ENDPOINT environment variable to a Hugging Face mirror and run again.)")


def _folder_list() -> str:
    return " or ".join(str(folder) for folder in model_folders())
