"""The file system's limits on path and name length, checked before any work so the error names the setting.

Without this a 100,000-character path or a 300-character file name fails deep inside a save with a raw
"File name too long", after the work was done. Lengths count UTF-8 bytes, as Linux does; on Windows (UTF-16
units) that is stricter, never looser.
"""
from __future__ import annotations

import os

from ..errors import SettingsError

FALLBACK_PATH_MAX = 4096  # Linux's PATH_MAX; Windows with long paths enabled allows more, macOS 1024
FALLBACK_NAME_MAX = 255  # ext4, NTFS, APFS


def limits(folder: str | os.PathLike | None = None) -> tuple[int, int]:
    """(longest path, longest file name) on the file system of `folder` (an existing folder), in bytes."""
    if not hasattr(os, "pathconf"):
        return FALLBACK_PATH_MAX, FALLBACK_NAME_MAX
    probe = folder if folder is not None and os.path.isdir(folder) else os.path.abspath(os.sep)
    return _pathconf(probe, "PC_PATH_MAX", FALLBACK_PATH_MAX), _pathconf(probe, "PC_NAME_MAX", FALLBACK_NAME_MAX)


def check_length(setting: str, path: str | os.PathLike, folder: str | os.PathLike | None = None,
                 reserve: int = 0) -> None:
    """Refuse `path` (the value of `setting`) when it or one of its names is longer than the file system allows.

    `reserve` bytes are kept free for what gets appended to the last name (an epoch suffix, a counter).
    """
    path_max, name_max = limits(folder)
    text = os.fspath(path)
    size = len(text.encode("utf-8", "surrogateescape"))
    if size + reserve > path_max:
        raise SettingsError(f"{setting} gives a path of {size} bytes; paths can be at most {path_max - reserve} bytes "
                            "here. Use a shorter path or name.")
    names = [name for name in text.replace("\\", "/").split("/") if name]
    for index, name in enumerate(names):
        room = name_max - (reserve if index == len(names) - 1 else 0)
        length = len(name.encode("utf-8", "surrogateescape"))
        if length > room:
            shown = name if len(name) <= 40 else name[:37] + "..."
            raise SettingsError(f"{setting} has a name of {length} bytes ('{shown}'); names can be at most {room} bytes "
                                "here. Use a shorter name.")


def _pathconf(path: str | os.PathLike, name: str, fallback: int) -> int:
    try:
        value = os.pathconf(path, name)
    except (OSError, ValueError):  # not defined for this file system
        return fallback
    return value if value and value > 0 else fallback
