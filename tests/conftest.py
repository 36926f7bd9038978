"""Every test runs against the real ComfyUI runtime (COMFYUI_PATH, set by scripts/test.sh)."""
from __future__ import annotations

import os
import pathlib

import pytest
import torch

from harness import runtime

# Tests compare runs bit for bit, which needs one thread count throughout: pin torch's own (LoRA Lab fits the count
# to the machine's load only when the user has not set one; tests/test_cpu_threads.py lifts the pin to test that).
os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
runtime.boot()


@pytest.fixture
def comfy_dirs(tmp_path: pathlib.Path):
    """Point ComfyUI's input, output, temp and loras folders at a fresh temporary base directory."""
    import folder_paths

    saved = (folder_paths.get_input_directory(), folder_paths.get_output_directory(), folder_paths.get_temp_directory(),
             folder_paths.folder_names_and_paths["loras"])
    dirs = {name: tmp_path / "comfy" / name for name in ("input", "output", "temp", "loras")}
    for path in dirs.values():
        path.mkdir(parents=True)
    folder_paths.set_input_directory(str(dirs["input"]))
    folder_paths.set_output_directory(str(dirs["output"]))
    folder_paths.set_temp_directory(str(dirs["temp"]))
    folder_paths.folder_names_and_paths["loras"] = ([str(dirs["loras"])], saved[3][1])
    yield dirs
    folder_paths.set_input_directory(saved[0])
    folder_paths.set_output_directory(saved[1])
    folder_paths.set_temp_directory(saved[2])
    folder_paths.folder_names_and_paths["loras"] = saved[3]


@pytest.fixture(scope="session")
def artifacts_dir() -> pathlib.Path:
    """Files a person may want to look at after a run (screenshots, grids) land in test-artifacts/."""
    path = runtime.REPO_ROOT / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path



@pytest.fixture(autouse=True, scope="session")
def dataset_roots(tmp_path_factory):
    """Tests keep datasets in pytest's temporary folder, declared as a dataset root as a user declares theirs.

    Load Dataset reads only ComfyUI's input folder and declared roots; servers started by a test inherit this
    (a test of the roots themselves changes it for its own server).
    """
    saved = os.environ.get("LORALAB_DATASET_ROOTS")
    os.environ["LORALAB_DATASET_ROOTS"] = str(tmp_path_factory.getbasetemp())
    yield
    if saved is None:
        del os.environ["LORALAB_DATASET_ROOTS"]
    else:
        os.environ["LORALAB_DATASET_ROOTS"] = saved
