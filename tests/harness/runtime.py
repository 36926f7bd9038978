"""Boot the real ComfyUI runtime in this process, with LoRA Lab loaded through ComfyUI's own loader.

The boot itself is the headless command's (loralab_cli.comfy_runtime); this adds the tree the tests use
(COMFYUI_PATH, set by scripts/test.sh) and the pack's modules and nodes as ComfyUI imported them.
"""
from __future__ import annotations

from typing import Any

from comfy_server import NODE_IDS, REPO_ROOT, comfyui_path, comfyui_version  # noqa: F401  (tests use them from here)

from loralab_cli import comfy_runtime


def boot(cpu: bool = True) -> Any:
    """Import ComfyUI and load this pack as a custom node (as the headless command does); returns `nodes`.

    Tests run in CPU mode; benchmarks and the GPU check kit pass `cpu=False`. The first call decides.
    """
    nodes = comfy_runtime.boot(comfyui_path(), cpu=cpu, pack_root=REPO_ROOT)
    missing = [node_id for node_id in NODE_IDS if node_id not in nodes.NODE_CLASS_MAPPINGS]
    if missing:
        raise RuntimeError(f"The pack loaded but did not register {missing}.")
    return nodes


def __getattr__(name: str) -> Any:
    if name == "dynamic_vram_failure":  # set by the boot, read by the GPU kit's environment report
        return comfy_runtime.dynamic_vram_failure
    raise AttributeError(name)


def pack(submodule: str = "") -> Any:
    """A module of this pack as ComfyUI imported it (e.g. `pack("trainer.models.families")`).

    ComfyUI imports the pack under a name derived from its path; importing `trainer` directly would
    create second copies of our classes, and isinstance checks between the two would fail.
    """
    import importlib

    boot()
    name = str(REPO_ROOT).replace(".", "_x_")
    return importlib.import_module(f"{name}.{submodule}" if submodule else name)


def run_node(node_id: str, **inputs: Any) -> Any:
    """Run one node as ComfyUI's executor does: a fresh instance, inside `torch.inference_mode()`.

    Returns the node's outputs tuple; the `ui` part, when there is one, is on `.ui` of the result.
    """
    import torch

    nodes = boot()
    node_class = nodes.NODE_CLASS_MAPPINGS[node_id]
    node = node_class()
    with torch.inference_mode():
        output = getattr(node, node_class.FUNCTION)(**inputs)
    if isinstance(output, dict):
        result = NodeResult(output.get("result", ()))
        result.ui = output.get("ui", {})
        return result
    return NodeResult(output)


class NodeResult(tuple):
    """A node's outputs, plus the `ui` dict ComfyUI would send to the frontend and keep in /history."""

    ui: dict[str, Any] = {}
