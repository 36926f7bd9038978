"""A node's `filename_prefix`: a relative name inside one of ComfyUI's folders, checked before any work is done."""
from __future__ import annotations

import os
import pathlib
import re

from ..errors import SettingsError
from .path_limits import check_length

# Bytes kept free in the file name for what saving appends: an epoch or counter suffix, the extension, a
# "_2" when the name is taken, and the hidden partial name a crash-safe write uses (".<name>.<8 hex>.partial").
NAME_RESERVE = 48
_RESERVED_CHARACTERS = re.compile(r'[<>:"|?*\x00-\x1f]')  # not allowed in Windows file names


def prefix_parts(prefix: str, folder: str, root: str | os.PathLike, example: str) -> list[str]:
    """The path parts of `prefix` (subfolders, then the file name), or a SettingsError saying what to change.

    Refuses what would leave `root` (ComfyUI's `folder` folder), an empty file name, characters file
    systems reject and names or paths too long to save under; `example` is a good value to show in the message.
    """
    cleaned = prefix.strip().replace("\\", "/")
    parts = [part for part in cleaned.split("/") if part not in ("", ".")]
    if cleaned.startswith("/") or pathlib.PureWindowsPath(cleaned).drive or ".." in parts:
        raise SettingsError(
            f"filename_prefix {prefix!r} points outside the {folder} folder {os.path.abspath(root)}. "
            f"Use a relative name such as '{example}' (subfolders are fine, '..' and absolute paths are not)."
        )
    if not parts or cleaned.endswith("/"):
        raise SettingsError(f"filename_prefix {prefix!r} has no file name; end it with a name such as '{example}'.")
    bad = sorted({character for part in parts for character in _RESERVED_CHARACTERS.findall(part)})
    if bad:
        raise SettingsError(
            f"filename_prefix {prefix!r} contains {' '.join(repr(c) for c in bad)}, which file systems reject; "
            "remove those characters (spaces, Japanese and full-width characters are fine)."
        )
    check_length("filename_prefix", os.path.join(os.path.abspath(root), *parts), root, reserve=NAME_RESERVE)
    return parts
