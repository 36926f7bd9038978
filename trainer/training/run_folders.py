"""Training-state folders: where a run keeps its resumable state, how `resume_from` names one, and who owns it.

Each run's state lives in one folder inside ComfyUI's output folder, `loralab/training_state/<run>/`:

    run.json           {"format": "loralab-training-state", "version": 2, "run_id": ..., "snapshot": "snapshot-000003"}
    snapshot-000003/   the state run.json names, the only one that counts (its files: SNAPSHOT_FILES)

A save writes and flushes a whole new snapshot beside the current one, then replaces run.json (one atomic
rename: the switch), then removes the old snapshot. So from the first save on, `<run>` (the folder printed
to the user) exists at every moment and run.json names a complete snapshot; a crash leaves at most an
unnamed snapshot, which the next load or save removes, saying so.

Ownership: a run draws a random id when it begins and run.json holds it. A save writes only into a folder
it creates or whose run.json has its id, and removing a run deletes only the files LoRA Lab writes there
(any other file keeps its folder, with a warning). `resume_from` must name a folder directly inside
`training_state/` after symlinks are followed: its name, or the full path printed when the run was
cancelled. Anything else is refused before a byte of it is read.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import re
import secrets
import time
from dataclasses import dataclass

from ..errors import DiskFull, SettingsError, TrainingStateError
from ..files.atomic_files import describe_size, fsync_directory, is_disk_full, write_atomically
from ..files.path_limits import check_length

log = logging.getLogger(__name__)

FORMAT = "loralab-training-state"
VERSION = 2
RUN_FILE = "run.json"
SNAPSHOT_FILES = frozenset({"state.json", "adapters.safetensors", "epochs.safetensors", "optimizer.safetensors"})
SNAPSHOT_NAME = re.compile(r"^snapshot-(\d{6})$")
PARTIAL_NAME = re.compile(r"^\.(.+)\.[0-9a-f]{8}\.partial$")  # what atomic_files leaves if killed mid-write
MAX_RUN_FILE_BYTES = 64 * 1024
STATE_FOLDER = "output/loralab/training_state"  # how messages name the root, without the server's absolute path


@dataclass(frozen=True)
class RunRecord:
    """What run.json says: whose folder this is and which snapshot is current (None before the first save)."""

    run_id: str
    snapshot: str | None


def state_root(output_directory: str | os.PathLike) -> pathlib.Path:
    return pathlib.Path(output_directory) / "loralab" / "training_state"


def new_run_id() -> str:
    return secrets.token_hex(16)


def new_run_folder(output_directory: str | os.PathLike, seed: int) -> pathlib.Path:
    """A fresh `<date>-<time>-seed<seed>` folder name for a new run (created at its first save)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    root = state_root(output_directory)
    candidate = root / f"{stamp}-seed{seed}"
    counter = 1
    while candidate.exists():
        counter += 1
        candidate = root / f"{stamp}-seed{seed}-{counter}"
    return candidate


def resolve_resume_from(text: str, output_directory: str | os.PathLike) -> pathlib.Path:
    """The run folder `resume_from` names, or a SettingsError saying what to pass instead.

    Accepted: the folder's name, the full path printed when the run was cancelled, or (as older workflows
    have it) `loralab/training_state/<name>` relative to the output folder, provided the path, with every
    symlink followed, is a folder directly inside `training_state/`.
    """
    cleaned = text.strip().strip('"').strip("'").strip()
    root = state_root(output_directory)
    check_length("resume_from", cleaned)
    parts = pathlib.PurePath(cleaned.replace("\\", "/")).parts
    candidate = pathlib.Path(cleaned)
    if not candidate.is_absolute():
        candidate = (root if len(parts) == 1 else pathlib.Path(output_directory)) / cleaned
    real_root = pathlib.Path(os.path.realpath(root))
    real = pathlib.Path(os.path.realpath(candidate))
    if ".." in parts or real.parent != real_root:
        raise SettingsError(
            f"resume_from {_shown(cleaned)} is not a run in {STATE_FOLDER}/. Give the run's folder name (such as "
            "20250131-120000-seed42) or the full path printed when the run was cancelled; other folders, '..' and "
            "links leading out are refused, so a workflow cannot make training read or replace files elsewhere.")
    if not real.is_dir():
        raise SettingsError(f"resume_from: there is no run named {real.name!r} in {STATE_FOLDER}/. Use the folder "
                            "printed when the run was cancelled (a finished run's state is removed unless "
                            "keep_training_state was on).")
    return real


def read_run_record(folder: pathlib.Path) -> RunRecord:
    """run.json of `folder`; TrainingStateError saying what is wrong when it is missing or not ours."""
    path = folder / RUN_FILE
    if not path.is_file():
        if (folder / "state.json").is_file() and (folder / "optimizer.pt").exists():
            raise TrainingStateError("was written by an older LoRA Lab whose state format used pickle, which is no "
                                     "longer read because loading it can run code; start the run again")
        raise TrainingStateError(f"has no {RUN_FILE}, so it is not a LoRA Lab training state")
    try:
        if path.stat().st_size > MAX_RUN_FILE_BYTES:
            raise ValueError("too large")
        record = json.loads(path.read_bytes())
    except (OSError, ValueError) as error:
        raise TrainingStateError(f"has a {RUN_FILE} that cannot be read ({error})") from error
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise TrainingStateError(f"has a {RUN_FILE} that is not a LoRA Lab training state")
    if record.get("version") != VERSION:
        raise TrainingStateError(f"has a {RUN_FILE} of layout version {record.get('version')!r}, which this LoRA Lab "
                                 f"(layout {VERSION}) does not read; start the run again")
    run_id, snapshot = record.get("run_id"), record.get("snapshot")
    if not isinstance(run_id, str) or not run_id or not (snapshot is None or isinstance(snapshot, str) and SNAPSHOT_NAME.match(snapshot)):
        raise TrainingStateError(f"has a {RUN_FILE} with an invalid run id or snapshot name")
    return RunRecord(run_id, snapshot)


def open_saved_run(folder: pathlib.Path) -> tuple[RunRecord, pathlib.Path]:
    """(record, current snapshot folder) of a run to resume, after clearing what an interrupted save left.

    Any problem is a SettingsError naming `resume_from` and the file.
    """
    try:
        record = read_run_record(folder)
    except TrainingStateError as error:
        raise SettingsError(f"resume_from: {folder} {error}.") from error
    if record.snapshot is None:
        raise SettingsError(f"resume_from: {folder} holds no saved state yet (the run stopped before its first save); "
                            "start the run again without resume_from.")
    remove_leftovers(folder, record)
    return record, folder / record.snapshot


def has_saved_state(folder: pathlib.Path) -> bool:
    """Whether `folder` holds a resumable state (what the cancel message may point the user to)."""
    try:
        return read_run_record(folder).snapshot is not None
    except TrainingStateError:
        return False


def save_snapshot(folder: pathlib.Path, run_id: str, files: dict[str, bytes]) -> None:
    """Make `files` the run's current state: written and flushed whole, then switched to in one rename.

    Raises TrainingStateError when `folder` is not this run's, DiskFull (naming the folder and the space the
    state needs) when the disk is full; in both cases the previous state is untouched and nothing partial is left.
    """
    unknown = set(files) - SNAPSHOT_FILES
    if unknown:
        raise ValueError(f"not snapshot files: {sorted(unknown)}")
    needed = sum(len(data) for data in files.values())
    try:
        record = _claim(folder, run_id)
        remove_leftovers(folder, record)
        number = int(SNAPSHOT_NAME.match(record.snapshot).group(1)) + 1 if record.snapshot else 1
        snapshot = folder / f"snapshot-{number:06d}"
        snapshot.mkdir()
        try:
            for name, data in files.items():
                write_atomically(snapshot / name, data)
            _write_record(folder, RunRecord(run_id, snapshot.name))
        except BaseException:
            if read_run_record(folder).snapshot != snapshot.name:  # not switched to: it is incomplete or unneeded
                _remove_snapshot(snapshot)
            raise
        if record.snapshot and (folder / record.snapshot).is_dir():
            _remove_snapshot(folder / record.snapshot)
    except (DiskFull, OSError) as error:
        if isinstance(error, OSError) and not is_disk_full(error):
            raise
        if not has_saved_state(folder):  # the first save failed: leave no run folder without a state
            remove_run(folder, run_id)
        raise DiskFull(f"No space left on the disk of {folder} to save the training state: it needs about "
                       f"{describe_size(needed)} free. Nothing partial was left.", str(folder), needed) from error


def remove_run(folder: pathlib.Path, run_id: str) -> bool:
    """Delete a finished run's state if it is this run's; returns whether the folder is gone."""
    if not folder.exists():
        return True
    try:
        record = read_run_record(folder)
    except TrainingStateError as error:
        log.warning("LoRA Lab kept the training state %s: it %s.", folder, error)
        return False
    if record.run_id != run_id:
        log.warning("LoRA Lab kept the training state %s: it belongs to another run.", folder)
        return False
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink() and SNAPSHOT_NAME.match(entry.name):
            _remove_snapshot(entry)
    _remove_known_files(folder, {RUN_FILE})
    return _remove_folder(folder)


def remove_leftovers(folder: pathlib.Path, record: RunRecord) -> None:
    """Remove snapshots run.json does not name and half-written run files: what a killed save leaves."""
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink() and SNAPSHOT_NAME.match(entry.name) and entry.name != record.snapshot:
            log.warning("LoRA Lab: removing %s, an incomplete state left by an interrupted save; the run continues "
                        "from %s.", entry, record.snapshot)
            _remove_snapshot(entry)
    _remove_known_files(folder, set(), partials_of={RUN_FILE})


def _claim(folder: pathlib.Path, run_id: str) -> RunRecord:
    """The record of `folder`, created for this run at its first save; refuses a folder of another run."""
    if not folder.exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        folder.mkdir()  # fails if it appeared since: never adopt a folder someone else made
        record = RunRecord(run_id, None)
        try:
            fsync_directory(folder.parent)
            _write_record(folder, record)
        except BaseException:
            folder.rmdir()  # still empty: a failed write leaves nothing behind
            raise
        return record
    try:
        record = read_run_record(folder)
    except TrainingStateError as error:
        raise TrainingStateError(f"The training state folder {folder} {error}, so LoRA Lab left it untouched and "
                                 "could not save this run's state; move that folder away or start a new run.") from error
    if record.run_id != run_id:
        raise TrainingStateError(f"The training state folder {folder} belongs to another run, so LoRA Lab left it "
                                 "untouched and could not save this run's state; start a new run (clear resume_from).")
    return record


def _write_record(folder: pathlib.Path, record: RunRecord) -> None:
    text = json.dumps({"format": FORMAT, "version": VERSION, "run_id": record.run_id, "snapshot": record.snapshot})
    write_atomically(folder / RUN_FILE, text.encode("utf-8"))


def _remove_snapshot(snapshot: pathlib.Path) -> None:
    _remove_known_files(snapshot, SNAPSHOT_FILES, partials_of=SNAPSHOT_FILES)
    _remove_folder(snapshot)


def _remove_known_files(folder: pathlib.Path, names: set[str] | frozenset[str],
                        partials_of: set[str] | frozenset[str] = frozenset()) -> None:
    """Delete the files LoRA Lab writes in `folder` (`names`, and half-written copies of `partials_of`), nothing else."""
    for entry in folder.iterdir():
        partial = PARTIAL_NAME.match(entry.name)
        if entry.name in names or (partial and partial.group(1) in partials_of):
            entry.unlink()


def _remove_folder(folder: pathlib.Path) -> bool:
    try:
        folder.rmdir()
    except OSError:
        if any(folder.iterdir()):
            log.warning("LoRA Lab kept %s: it holds files LoRA Lab did not write.", folder)
            return False
        raise
    fsync_directory(folder.parent)
    return True


def _shown(text: str) -> str:
    return repr(text if len(text) <= 120 else text[:117] + "...")
