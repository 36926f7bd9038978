"""The demo's memory of its finished runs, so a rerun with nothing changed shows the earlier files instead of
training again (and writing zqx_2.safetensors, zqx_sweep_00002_.png, ...).

A run is keyed by a digest of everything its result depends on: the workflow file and the demo's options, every
file of the dataset folder (names and bytes), the checkpoint file, LoRA Lab's own code and model, and the ComfyUI
and torch versions. The record lists the files the run wrote; it is used only while all of them still exist.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import pathlib
import time
from dataclasses import asdict, dataclass

PACK_PARTS = ("trainer", "nodes")  # what the server runs of this pack (code and the toy-world model)
RECORDS = pathlib.PurePath("output", "loralab", "demo_runs")  # inside the demo's ComfyUI base folder


@dataclass(frozen=True)
class DemoFile:
    label: str  # "LoRA", "loss chart", "sample", "sweep grid"
    path: str  # absolute


@dataclass(frozen=True)
class FinishedRun:
    finished: str  # local time, for the message
    seconds: float
    files: tuple[DemoFile, ...]

    def still_there(self) -> bool:
        return all(pathlib.Path(file.path).is_file() for file in self.files)


def run_key(repo: pathlib.Path, comfyui: pathlib.Path, workflow: pathlib.Path, options: list[str],
            dataset: pathlib.Path, checkpoint: pathlib.Path | None) -> str:
    """The digest of a demo run's inputs; equal digests train the same LoRA."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"options": options, "torch": importlib.metadata.version("torch"),
                              "comfyui": (comfyui / "comfyui_version.py").read_text()}).encode())
    digest.update(workflow.read_bytes())
    for root in (dataset, *(repo / part for part in PACK_PARTS)):
        _add_folder(digest, root)
    if checkpoint is not None:  # a checkpoint is gigabytes: its identity, not its bytes
        stat = checkpoint.stat()
        digest.update(f"{checkpoint.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _add_folder(digest, root: pathlib.Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and not path.name.startswith("."):
            digest.update(f"{path.relative_to(root).as_posix()}|{path.stat().st_size}\n".encode())
            digest.update(path.read_bytes())


def earlier_run(base: pathlib.Path, key: str) -> FinishedRun | None:
    """The finished run with this key, if its record exists and every file it lists is still there."""
    try:
        data = json.loads((base / RECORDS / f"{key}.json").read_text())
        run = FinishedRun(data["finished"], data["seconds"], tuple(DemoFile(**item) for item in data["files"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no record, or one this version cannot read: train again
    return run if run.still_there() else None


def remember_run(base: pathlib.Path, key: str, seconds: float, files: list[DemoFile]) -> None:
    folder = base / RECORDS
    folder.mkdir(parents=True, exist_ok=True)
    record = FinishedRun(time.strftime("%Y-%m-%d %H:%M"), seconds, tuple(files))
    (folder / f"{key}.json").write_text(json.dumps(asdict(record), indent=1))
