"""LoRA files on disk: names under the loras folder, kohya's hashes, atomic writes, and reading files back.

Files are written whole to a hidden temporary file in the destination folder and only then renamed into
place, so a crash or a full disk never leaves a truncated `.safetensors` that LoraLoader would list.
Without `overwrite`, an existing file is never replaced: the run gets the next free name instead.
"""
from __future__ import annotations

import hashlib
import logging
import os
import pathlib
import pickle
import re
import time
from dataclasses import dataclass
from typing import Callable

import safetensors
import safetensors.torch
import torch

from ..errors import DiskFull, LoraFileError, SettingsError
from ..training.trained_lora import TrainedLora
from . import atomic_files
from .filename_prefix import prefix_parts
from .metadata import build_metadata

logger = logging.getLogger(__name__)

LORA_SUFFIX = ".safetensors"
SAVE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".bin"}
_LEGACY_HASH_OFFSET = 0x100000  # kohya's addnet_hash_legacy: 64 KiB at 1 MiB
_LEGACY_HASH_LENGTH = 0x10000


@dataclass(frozen=True)
class OutputName:
    """Where the files of one run go: `{root}/{subfolder}/{name}[-{epoch:06d}].safetensors`."""

    root: pathlib.Path
    subfolder: str  # relative to root, "/"-separated, "" for the root itself
    name: str

    @property
    def folder(self) -> pathlib.Path:
        return self.root.joinpath(*self.subfolder.split("/")) if self.subfolder else self.root

    def file_name(self, epoch: int | None) -> str:
        """kohya's names: `{name}-{epoch:06d}.safetensors` for an epoch, `{name}.safetensors` for the final one."""
        return f"{self.name}{LORA_SUFFIX}" if epoch is None else f"{self.name}-{epoch:06d}{LORA_SUFFIX}"

    def path(self, epoch: int | None) -> pathlib.Path:
        return self.folder / self.file_name(epoch)


@dataclass(frozen=True)
class SavedLora:
    """One written file: its absolute path and the name LoraLoader lists it under."""

    path: pathlib.Path
    lora_name: str  # relative to the loras folder, as folder_paths.get_filename_list("loras") lists it
    subfolder: str
    filename: str
    epoch: int


def resolve_output_name(loras_root: str | os.PathLike, prefix: str) -> OutputName:
    """Turn a `filename_prefix` such as `loralab/my_lora` into a place inside the loras folder, or refuse it."""
    root = pathlib.Path(os.path.abspath(loras_root))
    cleaned = prefix.strip()
    if cleaned.lower().endswith(LORA_SUFFIX):
        cleaned = cleaned[: -len(LORA_SUFFIX)]
    parts = prefix_parts(cleaned, "loras", root, "loralab/my_lora")
    return OutputName(root, "/".join(parts[:-1]), parts[-1])


def select_epochs(spec: str, lora: TrainedLora) -> list[int]:
    """The epochs a Save LoRA `epochs` value asks for: `final`, `all`, or a list such as `4, 8, 10`."""
    if not lora.epochs:
        raise SettingsError("This LoRA kept no epoch (training stopped before the first one finished), so there is "
                            "nothing to save; train for at least one epoch.")
    available = sorted(lora.epochs)
    text = spec.strip().lower()
    if text in ("", "final"):
        return [lora.final_epoch]
    if text == "all":
        return available
    tokens = [token for token in re.split(r"[\s,;]+", text) if token]
    if not all(token.isdigit() for token in tokens):
        raise SettingsError(f"epochs {spec!r} is not 'final', 'all' or a list of epoch numbers such as '4, 8, 10'.")
    wanted = sorted({int(token) for token in tokens})
    missing = [epoch for epoch in wanted if epoch not in lora.epochs]
    if missing:
        raise SettingsError(
            f"epochs {spec!r} asks for epoch {', '.join(map(str, missing))}, but this LoRA kept only epochs "
            f"{', '.join(map(str, available))}; pick from those (raise save_every_n_epochs' frequency to keep more)."
        )
    return wanted


def free_output_name(output: OutputName, file_epochs: list[int | None]) -> OutputName:
    """`output`, or `{name}_2`, `{name}_3`... : the first name none of whose files to write exists yet."""
    candidate, counter = output, 1
    while any(candidate.path(epoch).exists() for epoch in file_epochs):
        counter += 1
        candidate = OutputName(output.root, output.subfolder, f"{output.name}_{counter}")
    return candidate


def cast_weights(weights: dict[str, torch.Tensor], dtype: str) -> dict[str, torch.Tensor]:
    """Every tensor, alpha included, in the save dtype (as kohya's `--save_precision`), contiguous on the CPU."""
    if dtype not in SAVE_DTYPES:
        raise SettingsError(f"dtype {dtype!r} is not one of {', '.join(SAVE_DTYPES)}.")
    return {key: value.detach().to("cpu", SAVE_DTYPES[dtype]).contiguous() for key, value in weights.items()}


def model_hash(serialized: bytes) -> str:
    """kohya's `sshs_model_hash`: SHA-256 of everything after the safetensors header, so metadata edits keep it."""
    header_length = int.from_bytes(serialized[:8], "little")
    return hashlib.sha256(memoryview(serialized)[8 + header_length:]).hexdigest()


def legacy_hash(serialized: bytes) -> str:
    """kohya's `sshs_legacy_hash`: the first 8 hex digits of SHA-256 over the 64 KiB at offset 1 MiB."""
    window = memoryview(serialized)[_LEGACY_HASH_OFFSET:_LEGACY_HASH_OFFSET + _LEGACY_HASH_LENGTH]
    return hashlib.sha256(window).hexdigest()[:8]


def serialize_lora(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """The file's bytes, with `sshs_model_hash`/`sshs_legacy_hash` computed as kohya's `precalculate_safetensors_hashes`.

    kohya hashes a serialisation that carries only the `ss_*` metadata, so later `modelspec.*` or user
    edits of the header do not change the hashes; the legacy hash therefore refers to that serialisation.
    """
    training_only = safetensors.torch.save(tensors, {key: value for key, value in metadata.items() if key.startswith("ss_")})
    hashes = {"sshs_model_hash": model_hash(training_only), "sshs_legacy_hash": legacy_hash(training_only)}
    del training_only
    return safetensors.torch.save(tensors, {**metadata, **hashes})


def write_atomically(path: pathlib.Path, data: bytes, overwrite: bool) -> None:
    """Write a LoRA file whole or not at all (see atomic_files), with errors that say what to do."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_files.write_atomically(path, data, overwrite=overwrite)
    except FileExistsError as error:
        raise LoraFileError(
            f"{error.filename2 or error.filename or path} already exists and was left untouched; save again to pick a free name "
            "or enable overwrite."
        ) from error
    except OSError as error:
        raise LoraFileError(
            f"Could not write {path}: {error.strerror or error}. Check the free space and permissions of {path.parent}; "
            "no partial file was left behind."
        ) from error


def save_lora_files(lora: TrainedLora, loras_root: str | os.PathLike, prefix: str, epochs: str, dtype: str,
                    overwrite: bool, should_stop: Callable[[], bool] = lambda: False) -> list[SavedLora]:
    """Write the chosen epochs of `lora` as kohya-format files; returns what was written, final epoch last.

    `should_stop` is asked before each file (ComfyUI's cancel): the files written until then are whole, and
    only they are returned. A full disk is a DiskFull naming the file that was not saved and those that were.
    """
    output = resolve_output_name(loras_root, prefix)
    chosen = select_epochs(epochs, lora)
    file_epochs = [None if epoch == lora.final_epoch else epoch for epoch in chosen]
    if not overwrite:
        output = free_output_name(output, file_epochs)
    saved_at = time.time()
    saved = []
    for epoch, file_epoch in zip(chosen, file_epochs):
        if should_stop():
            break
        path = output.path(file_epoch)
        metadata = build_metadata(lora, epoch, output.name, saved_at)
        try:
            write_atomically(path, serialize_lora(cast_weights(lora.weights(epoch), dtype), metadata), overwrite)
        except DiskFull as error:
            before = f" Saved before it: {', '.join(item.lora_name for item in saved)}." if saved else ""
            raise DiskFull(f"{path.name} was not saved. {error}{before}", error.folder, error.needed) from error
        lora_name = os.path.relpath(path, output.root)
        saved.append(SavedLora(path, lora_name, output.subfolder, path.name, epoch))
        logger.info("Saved epoch %d of the LoRA to %s", epoch, path)
    return saved


def read_lora_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a LoRA file (.safetensors, or a tensor dict in .pt/.ckpt), as a LoraFileError if unreadable."""
    path = pathlib.Path(path)
    try:
        if path.suffix.lower() in PICKLE_SUFFIXES:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
            tensors = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
            metadata: dict[str, str] = {}
        else:
            with safetensors.safe_open(str(path), framework="pt", device="cpu") as handle:
                metadata = handle.metadata() or {}
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError, safetensors.SafetensorError) as error:
        raise LoraFileError(f"Cannot read the LoRA file {path.name}: {error}. The file may be incomplete or not a LoRA; "
                            "download or save it again.") from error
    if not isinstance(tensors, dict) or not tensors or not all(isinstance(value, torch.Tensor) for value in tensors.values()):
        raise LoraFileError(f"{path.name} holds no LoRA tensors; choose a LoRA .safetensors file.")
    return tensors, metadata
