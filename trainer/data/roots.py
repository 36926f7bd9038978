"""Where Load Dataset and Auto Caption may read and write: ComfyUI's input folder and the roots the user declared.

ComfyUI's HTTP API has no authentication, so a workflow's `path` is untrusted. The roots are:
- ComfyUI's input folder (a relative `path` is looked up there);
- every `loralab_datasets` folder in extra_model_paths.yaml (ComfyUI registers each key there as a folder);
- the folders in the environment variable LORALAB_DATASET_ROOTS (separated by os.pathsep: ':' on Linux and
  macOS, ';' on Windows).
A path is inside a root when its real path (every symlink followed) is; links inside a root that lead out
are skipped by the loader. Messages name files by their root's folder name and the path inside it
("input/my_set/10_ohwx/001.png"), never by the server's absolute path. A local user's own process (the
headless command) passes no roots at all: then any path is read, as the user's own shell could.
"""
from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass

from ..errors import DatasetError
from ..files.path_limits import check_length

ENVIRONMENT_VARIABLE = "LORALAB_DATASET_ROOTS"
FOLDER_KEY = "loralab_datasets"
HOW_TO_DECLARE = (f"put the dataset in ComfyUI's input folder and give its name, or declare the folder that holds your "
                  f"datasets as a dataset root: a '{FOLDER_KEY}: /path/to/datasets' entry in extra_model_paths.yaml, or "
                  f"the environment variable {ENVIRONMENT_VARIABLE}, then restart ComfyUI")


@dataclass(frozen=True)
class DatasetRoot:
    path: pathlib.Path  # its real path
    source: str  # how the user declared it, for messages


class DatasetRoots:
    """The folders datasets may come from; `contains` and `shown` are the containment and naming rules."""

    def __init__(self, roots: list[DatasetRoot]) -> None:
        self.roots = roots

    @classmethod
    def declared(cls, input_directory: str | os.PathLike, extra_folders: list[str],
                 environment: str | None) -> "DatasetRoots":
        """The input folder, then `extra_folders` (extra_model_paths.yaml), then `environment`'s folders."""
        sources = [(input_directory, "ComfyUI's input folder")]
        sources += [(folder, f"{FOLDER_KEY} in extra_model_paths.yaml") for folder in extra_folders]
        sources += [(folder, ENVIRONMENT_VARIABLE) for folder in (environment or "").split(os.pathsep) if folder.strip()]
        return cls([DatasetRoot(pathlib.Path(os.path.realpath(os.path.expanduser(str(folder).strip()))), source)
                    for folder, source in sources])

    def root_of(self, path: str | os.PathLike) -> DatasetRoot | None:
        """The first root that holds `path` once every symlink in it is followed, or None."""
        real = os.path.normcase(os.path.realpath(path))
        for root in self.roots:
            folder = os.path.normcase(str(root.path))
            if real == folder or real.startswith(folder.rstrip(os.sep) + os.sep):
                return root
        return None

    def contains(self, path: str | os.PathLike) -> bool:
        return self.root_of(path) is not None

    def shown(self, path: str | os.PathLike) -> str:
        """`path` as messages name it: its root's folder name, then the path inside that root."""
        root = self.root_of(path)
        if root is None:
            return pathlib.Path(path).name
        inside = os.path.relpath(os.path.realpath(path), root.path)
        return root.path.name if inside == "." else f"{root.path.name}/{pathlib.Path(inside).as_posix()}"

    def describe(self) -> str:
        """The roots for an error message: the input folder by role, declared roots by path and where declared."""
        declared = [f"{root.path} ({root.source})" for root in self.roots[1:]]
        return "ComfyUI's input folder" + (", " + ", ".join(declared) if declared else " (no other dataset root is declared)")


def resolve_dataset_path(text: str, input_directory: str | os.PathLike, roots: DatasetRoots | None,
                         setting: str = "path") -> pathlib.Path:
    """The folder a Load Dataset `path` names: absolute, or relative to ComfyUI's input folder.

    Surrounding quotes (Windows' "Copy as path") and whitespace are dropped and `~` is expanded. With `roots`,
    '..' and anything whose real path is outside them are refused before the folder is looked at, and the
    real path is returned; without (a local user's own process), any path is taken as given.
    """
    cleaned = text.strip().strip('"').strip("'").strip()
    if not cleaned:
        raise DatasetError(f"{setting} is empty; type the name of a dataset folder in ComfyUI's input folder.")
    check_length(setting, cleaned)
    path = pathlib.Path(os.path.expanduser(cleaned))
    path = path if path.is_absolute() else pathlib.Path(input_directory) / path
    if roots is None:
        return path
    shown = repr(cleaned if len(cleaned) <= 120 else cleaned[:117] + "...")
    if ".." in pathlib.PurePath(cleaned.replace("\\", "/")).parts or not roots.contains(path):
        raise DatasetError(f"{setting} {shown} is outside the folders datasets may be read from: {roots.describe()}. "
                           f"To use it, {HOW_TO_DECLARE}. ('..' and links leading out of these folders are refused.)")
    return pathlib.Path(os.path.realpath(path))


def restrict_comfy_listing(extensions: set[str]) -> None:
    """Let ComfyUI list only images and captions of the `loralab_datasets` folders.

    Every key of extra_model_paths.yaml becomes a model folder, and GET /models/<key> lists every file of one
    whose extension set is empty: all file names in the user's dataset roots. Call once the yaml is loaded
    (ComfyUI loads it before it imports custom nodes).
    """
    import folder_paths

    if FOLDER_KEY in folder_paths.folder_names_and_paths:
        paths, _ = folder_paths.folder_names_and_paths[FOLDER_KEY]
        folder_paths.folder_names_and_paths[FOLDER_KEY] = (paths, set(extensions))


def comfy_dataset_roots() -> DatasetRoots:
    """The roots of this ComfyUI: its input folder, `loralab_datasets` folders and LORALAB_DATASET_ROOTS."""
    import folder_paths

    extra = folder_paths.get_folder_paths(FOLDER_KEY) if FOLDER_KEY in folder_paths.folder_names_and_paths else []
    return DatasetRoots.declared(folder_paths.get_input_directory(), extra, os.environ.get(ENVIRONMENT_VARIABLE))
