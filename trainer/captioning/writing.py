"""Writing caption files without ever losing the user's text.

`fill_missing` writes only where no caption text exists (checked again at write time, not trusted
from when the folder was loaded); `overwrite` first copies any existing caption to a `.bak` that is
never itself overwritten; `memory_only` writes nothing. Files are written to a temporary name in
the same folder and renamed into place, so an interrupted run leaves old or new text, never half.
"""
from __future__ import annotations

import pathlib
from dataclasses import dataclass

from ..data.loading import read_caption
from ..files.atomic_files import write_atomically

MODES = ("fill_missing", "overwrite", "memory_only")


@dataclass(frozen=True)
class WriteResult:
    action: str  # "written", "replaced", "unchanged", "kept" (existing text left alone) or "memory"
    caption: str  # the caption the image now trains with
    backup: pathlib.Path | None = None


def store_caption(caption_path: pathlib.Path, caption: str, mode: str) -> WriteResult:
    """Apply `mode` to one image's caption file; returns what happened."""
    if mode == "memory_only":
        return WriteResult("memory", caption)
    sidecar = read_caption(caption_path) if caption_path.is_file() else None
    existing = sidecar.text if sidecar is not None else ""
    if mode == "fill_missing":
        if existing or (sidecar is not None and not sidecar.is_text):  # never replace a file without a backup
            return WriteResult("kept", existing)
        write_text_atomically(caption_path, caption + "\n")
        return WriteResult("written", caption)
    if mode == "overwrite":
        if existing == caption:
            return WriteResult("unchanged", caption)
        backup = back_up(caption_path) if existing else None
        write_text_atomically(caption_path, caption + "\n")
        return WriteResult("replaced" if existing else "written", caption, backup)
    raise ValueError(f"unknown caption mode {mode!r}; one of {MODES}")


def back_up(path: pathlib.Path) -> pathlib.Path:
    """Copy `path` byte for byte to the first free `<name>.bak`, `<name>.bak2`, ... (never replacing one).

    The copy is written like every other file (whole or not at all), so a full disk leaves no empty `.bak`.
    """
    data = path.read_bytes()
    number = 1
    while True:
        backup = path.with_name(f"{path.name}.bak{number if number > 1 else ''}")
        try:
            write_atomically(backup, data, overwrite=False)
            return backup
        except FileExistsError:
            number += 1


def write_text_atomically(path: pathlib.Path, text: str) -> None:
    """UTF-8 (no BOM, newlines as given), whole or not at all."""
    write_atomically(path, text.encode("utf-8"))
