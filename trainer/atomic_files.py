"""Files appear whole or not at all: written beside their final name, flushed to disk, then moved into place.

One implementation for every file LoRA Lab writes (LoRA files, output PNGs, captions, generated datasets),
so each gets the same guarantees: a crash or a full disk never leaves a truncated file under the real name
(the partial file is hidden and has a suffix ComfyUI does not list), `overwrite=False` never replaces a file,
even one that appears during the write, and the file gets the permissions the user's umask gives a plain
`open()` (temporary-file helpers would make it owner-only).
"""
from __future__ import annotations

import errno
import os
import pathlib
import secrets
from typing import BinaryIO, Callable


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], object], *, overwrite: bool = True) -> None:
    """Call `write` on a hidden partial file beside `path`, flush it to disk, then publish it as `path`.

    Raises FileExistsError (naming `path`) when `overwrite` is false and `path` exists; nothing is left behind
    on any error.
    """
    path = pathlib.Path(path)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    try:
        with open(partial, "xb") as stream:  # "x": a fresh file with the umask's permissions
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        _publish(partial, path, overwrite)
    finally:
        partial.unlink(missing_ok=True)


def _publish(partial: pathlib.Path, path: pathlib.Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(partial, path)
        return
    try:
        os.link(partial, path)  # fails if `path` exists, even if it appeared a moment ago
    except FileExistsError:
        raise
    except OSError:  # file systems without hard links (FAT, some network shares): check, then rename
        if path.exists():
            raise FileExistsError(errno.EEXIST, "File exists", str(path))
        os.replace(partial, path)
