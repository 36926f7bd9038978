"""ComfyUI's runtime in this process, with this pack loaded through ComfyUI's own loader (no server).

The headless training command and the tests boot ComfyUI the same way. ComfyUI expects a few things before its
modules import: its root on sys.path, `--cpu` set before `comfy.model_management` is imported (a CUDA build of
torch without a GPU crashes otherwise), and `utils.extra_config` imported before `nodes` (or `nodes.py` shadows
the `utils` package).
"""
from __future__ import annotations

import asyncio
import os
import pathlib
import sys
from typing import Any

PACK_ROOT = pathlib.Path(__file__).resolve().parents[1]
_booted: dict[str, Any] = {}
dynamic_vram_failure: str | None = None  # why comfy-aimdo did not start, where main.py would have started it


class ComfyNotFound(RuntimeError):
    """No ComfyUI tree where the pack expects one."""


def find_comfyui(pack_root: pathlib.Path = PACK_ROOT) -> pathlib.Path:
    """COMFYUI_PATH, else the ComfyUI whose custom_nodes folder holds this pack."""
    value = os.environ.get("COMFYUI_PATH")
    candidates = [pathlib.Path(value).expanduser()] if value else []
    if pack_root.parent.name == "custom_nodes":
        candidates.append(pack_root.parent.parent)
    for candidate in candidates:
        if (candidate / "comfyui_version.py").is_file() or (candidate / "comfy").is_dir():
            return candidate.resolve()
    where = f"COMFYUI_PATH={value} is not a ComfyUI folder" if value else "COMFYUI_PATH is not set"
    raise ComfyNotFound(f"cannot find ComfyUI: {where}, and this pack ({pack_root}) is not in a ComfyUI custom_nodes "
                        "folder. Install the pack in ComfyUI/custom_nodes, or set COMFYUI_PATH to ComfyUI's folder.")


def boot(comfy_root: pathlib.Path, cpu: bool = True, pack_root: pathlib.Path = PACK_ROOT, gpu: int | None = None) -> Any:
    """Import ComfyUI and load this pack as a custom node; returns ComfyUI's `nodes` module.

    `cpu=False` starts ComfyUI as its main.py does on a GPU machine (allocator choice, dynamic VRAM where the
    tree has it); `gpu` makes that CUDA device the one ComfyUI uses (a data-parallel process's own). The first
    call decides.
    """
    if "nodes" in _booted:
        return _booted["nodes"]
    root = str(comfy_root)
    if root not in sys.path:
        sys.path.insert(0, root)
    import comfy.options

    comfy.options.enable_args_parsing(False)
    from comfy.cli_args import args

    args.cpu = cpu
    if not cpu:
        _start_gpu_like_main(args)
        if gpu is not None:
            _use_gpu(gpu)
    import utils.extra_config  # noqa: F401  (must precede `nodes`)
    import nodes

    if not cpu:
        _enable_dynamic_vram_like_main(args)

    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    if not asyncio.run(nodes.load_custom_node(str(pack_root))):
        raise RuntimeError(f"ComfyUI failed to import the pack at {pack_root}; see the log above.")
    _booted["nodes"] = nodes
    return nodes


def _start_gpu_like_main(args: Any) -> None:
    """What ComfyUI's main.py does before torch is imported: pick the CUDA allocator (cudaMallocAsync with
    CUDA 13 torch builds) and, on trees with dynamic VRAM (0.12+), start comfy-aimdo.

    Unlike main.py, a comfy-aimdo that fails to start leaves ComfyUI on its legacy memory management (the
    reason in `dynamic_vram_failure`), so a GPU check still runs everything else.
    """
    global dynamic_vram_failure
    import cuda_malloc  # noqa: F401  (sets PYTORCH_CUDA_ALLOC_CONF as main.py does)
    import comfy.cli_args

    enables_dynamic_vram = getattr(comfy.cli_args, "enables_dynamic_vram", None)
    if enables_dynamic_vram is not None and enables_dynamic_vram():
        try:
            import comfy_aimdo.control

            headroom = None if args.reserve_vram is None else int(args.reserve_vram * 1024**3)
            comfy_aimdo.control.init(simple_vram_headroom=headroom, nvml_pressure=not args.disable_nvml_pressure)
        except Exception as error:  # noqa: BLE001  (recorded; the tree runs without dynamic VRAM)
            dynamic_vram_failure = f"comfy_aimdo.control.init: {type(error).__name__}: {error}"


def _use_gpu(index: int) -> None:
    """ComfyUI trains on torch's current CUDA device: set it (after the allocator choice) before ComfyUI reads it."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.set_device(index)


def _enable_dynamic_vram_like_main(args: Any) -> None:
    """main.py's switch to ModelPatcherDynamic after model management is imported (NVIDIA, torch 2.8+)."""
    global dynamic_vram_failure
    import comfy.cli_args
    import comfy.model_management as mm

    enables_dynamic_vram = getattr(comfy.cli_args, "enables_dynamic_vram", None)
    if (dynamic_vram_failure or enables_dynamic_vram is None or not (enables_dynamic_vram() and mm.is_nvidia())
            or mm.torch_version_numeric < (2, 8)):
        return
    import comfy.memory_management
    import comfy.model_patcher
    import comfy_aimdo.control

    devices = ((device.index, int(args.vram_headroom * 1024**3)) for device in mm.get_all_torch_devices())
    try:
        started = comfy_aimdo.control.init_devices(devices)
    except Exception as error:  # noqa: BLE001  (recorded; the tree runs without dynamic VRAM)
        dynamic_vram_failure = f"comfy_aimdo.control.init_devices: {type(error).__name__}: {error}"
        return
    if not started:
        dynamic_vram_failure = "comfy_aimdo.control.init_devices returned False (no working comfy-aimdo, as main.py warns)"
        return
    comfy.model_patcher.CoreModelPatcher = comfy.model_patcher.ModelPatcherDynamic
    comfy.memory_management.aimdo_enabled = True
