"""Files appear whole or not at all: written beside their final name, flushed to disk, then moved into place.

One implementation for every file LoRA Lab writes (LoRA files, training states, output PNGs, captions,
generated datasets), so each gets the same guarantees: a crash or a full disk never leaves a truncated file
under the real name (the partial file is hidden, has a suffix ComfyUI does not list, and is removed on
error), the rename itself is flushed to disk with the folder, `overwrite=False` never replaces a file, even
one that appears during the write, and the file gets the permissions the user's umask gives a plain
`open()` (temporary-file helpers would make it owner-only). A full disk (or quota) is a DiskFull error that
names the folder and the space the file needs.
"""
from __future__ import annotations

import errno
import os
import pathlib
import secrets

from ..errors import DiskFull

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def write_atomically(path: str | os.PathLike, data: bytes, *, overwrite: bool = True) -> None:
    """Write `data` to a hidden partial file beside `path`, flush it to disk, then publish it as `path`.

    Raises FileExistsError (naming `path`) when `overwrite` is false and `path` exists, DiskFull when the
    disk has no room; nothing is left behind on any error.
    """
    path = pathlib.Path(path)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    try:
        stream = open(partial, "xb")  # "x": a fresh file with the umask's permissions; nothing to clean if it fails
    except OSError as error:
        raise_if_disk_full(error, path.parent, len(data))
        raise
    try:
        with stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        _publish(partial, path, overwrite)
        fsync_directory(path.parent)
    except OSError as error:
        raise_if_disk_full(error, path.parent, len(data))
        raise
    finally:
        partial.unlink(missing_ok=True)


def fsync_directory(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename, a new file) to disk, as a crash-safe save needs on POSIX.

    Windows cannot open folders for flushing, and NTFS journals renames itself. Some file systems (a few
    network shares) refuse to flush a folder: their renames are as durable as they can be made.
    """
    if os.name == "nt":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(descriptor)


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS


def raise_if_disk_full(error: OSError, folder: str | os.PathLike, needed: int) -> None:
    """Raise `error` as a DiskFull naming `folder` and the bytes `needed` when the disk (or quota) is full."""
    if is_disk_full(error):
        raise DiskFull(f"No space left on the disk of {folder}: it needs {describe_size(needed)} free for what was being "
                    "written. Free some space there; nothing partial was left behind.", str(folder), needed) from error


def describe_size(size: int) -> str:
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def _publish(partial: pathlib.Path, path: pathlib.Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(partial, path)
        return
    try:
        os.link(partial, path)  # fails if `path` exists, even if it appeared a moment ago
    except FileExistsError:
        raise
    except OSError as error:  # file systems without hard links (FAT, some network shares): check, then rename
        if is_disk_full(error):
            raise
        if path.exists():
            raise FileExistsError(errno.EEXIST, "File exists", str(path)) from None
        os.replace(partial, path)
