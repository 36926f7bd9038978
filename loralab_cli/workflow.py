"""API-format workflows: loading, input overrides, and one copy of a workflow per dataset folder.

Overrides are typed with the server's /object_info, so `--set 4.epochs=8` queues the number 8 and a
mistyped input name is caught here, with the node's real input names in the message.
"""
from __future__ import annotations

import copy
import json
import pathlib
import re
from dataclasses import dataclass
from typing import Any

Workflow = dict[str, dict[str, Any]]
NodeInfos = dict[str, dict[str, Any]]  # class_type -> its /object_info entry
LOAD_DATASET = "LoraLabLoadDataset"
TRUE_WORDS = {"true", "1", "yes", "on"}
FALSE_WORDS = {"false", "0", "no", "off"}
# Inputs whose choices are the files of one of ComfyUI's model folders, for the hint where a missing file goes.
MODEL_FOLDERS = {"ckpt_name": "checkpoints", "lora_name": "loras", "vae_name": "vae", "unet_name": "diffusion_models",
                 "clip_name": "text_encoders", "control_net_name": "controlnet", "upscale_model_name": "upscale_models"}


class CliError(Exception):
    """A problem the user can fix; the message says how. `exit_code` is what the command returns."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def load_workflow(path: pathlib.Path) -> Workflow:
    """An API-format workflow from a file; a UI-format file is refused with the way to export the API format."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise CliError(f"{path}: cannot read the workflow ({error.strerror}).") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CliError(f"{path}: not a JSON file ({error}).") from error
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict):
        data = data["prompt"]  # a saved POST /prompt body
    if is_ui_format(data):
        raise CliError(ui_format_message(path))
    if not isinstance(data, dict) or not data:
        raise CliError(f"{path}: expected an API-format workflow, an object of nodes keyed by id.")
    for node_id, node in data.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str) \
                or not isinstance(node.get("inputs", {}), dict):
            raise CliError(f"{path}: node {node_id} is not an API-format node (needs class_type and inputs). "
                           "Export the workflow with Workflow -> Export (API).")
        node.setdefault("inputs", {})
    return data


def is_ui_format(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data


def ui_format_message(path: pathlib.Path) -> str:
    twin = path.parent / "api" / path.name
    hint = f" This example's API twin is {twin}." if twin.is_file() else ""
    return (f"{path} is a UI-format workflow (what Save and the template browser use). The command line queues "
            f"the API format: in ComfyUI open it and choose Workflow -> Export (API), then pass that file.{hint}")


def node_title(workflow: Workflow, node_id: str) -> str:
    node = workflow[node_id]
    return node.get("_meta", {}).get("title") or node["class_type"]


def describe_node(workflow: Workflow, node_id: str) -> str:
    return f"node {node_id} ({node_title(workflow, node_id)})"


def find_nodes(workflow: Workflow, ref: str) -> list[str]:
    """Node ids that `ref` names: a node id, else an exact title, else a class_type."""
    if ref in workflow:
        return [ref]
    by_title = [node_id for node_id, node in workflow.items() if node.get("_meta", {}).get("title") == ref]
    return by_title or [node_id for node_id, node in workflow.items() if node["class_type"] == ref]


def resolve_node(workflow: Workflow, ref: str, context: str) -> str:
    matches = find_nodes(workflow, ref)
    if len(matches) == 1:
        return matches[0]
    if matches:
        listed = ", ".join(describe_node(workflow, node_id) for node_id in matches)
        raise CliError(f"{context}: {ref!r} names several nodes ({listed}); use the node id instead.")
    listed = ", ".join(describe_node(workflow, node_id) for node_id in workflow)
    raise CliError(f"{context}: no node has the id, title or type {ref!r}. The workflow's nodes: {listed}.")


@dataclass(frozen=True)
class Override:
    """`--set NODE.INPUT=VALUE`: NODE is a node id, title or class_type; VALUE is typed later from /object_info."""

    node: str
    input: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Override:
        key, equals, value = text.partition("=")
        node, dot, name = key.rpartition(".")  # titles may contain dots, input names never do
        if not equals or not dot or not node.strip() or not name.strip():
            raise CliError(f"--set {text!r}: expected NODE.INPUT=VALUE, e.g. --set 4.epochs=8 "
                           "or --set \"Train LoRA.rank=16\".")
        return cls(node.strip(), name.strip(), value)


def input_spec(info: dict[str, Any], name: str) -> list[Any] | None:
    for section in ("required", "optional"):
        spec = info.get("input", {}).get(section, {}).get(name)
        if spec is not None:
            return spec
    return None


def input_names(info: dict[str, Any]) -> list[str]:
    return [name for section in ("required", "optional") for name in info.get("input", {}).get(section, {})]


def is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


def combo_choices(spec: list[Any]) -> list[Any] | None:
    """The choices of a combo input (a list in V1 nodes, COMBO with options in V3 nodes); None for other kinds."""
    kind = spec[0]
    if isinstance(kind, list):
        return kind
    if kind == "COMBO":
        options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        return list(options.get("options", []))
    return None


def shown_choices(choices: list[Any]) -> str:
    return ", ".join(str(choice) for choice in choices[:30]) + (", ..." if len(choices) > 30 else "")


def convert_value(raw: str, spec: list[Any], label: str) -> Any:
    """The typed value for one widget input, checked the way ComfyUI's widget would accept it."""
    kind = spec[0]
    choices = combo_choices(spec)
    if choices is not None:
        if choices and raw not in [str(choice) for choice in choices]:
            raise CliError(f"{label}: {raw!r} is not one of the choices: {shown_choices(choices)}.")
        return next((choice for choice in choices if str(choice) == raw), raw)
    if kind == "INT":
        try:
            return int(raw)
        except ValueError:
            raise CliError(f"{label}: expects a whole number, got {raw!r}.") from None
    if kind == "FLOAT":
        try:
            return float(raw)
        except ValueError:
            raise CliError(f"{label}: expects a number, got {raw!r}.") from None
    if kind == "BOOLEAN":
        word = raw.strip().lower()
        if word not in TRUE_WORDS | FALSE_WORDS:
            raise CliError(f"{label}: expects true or false, got {raw!r}.")
        return word in TRUE_WORDS
    if kind == "STRING":
        return raw
    raise CliError(f"{label}: this is a {kind} input; it takes a link from another node, not a value.")


def apply_overrides(workflow: Workflow, overrides: list[Override], infos: NodeInfos) -> Workflow:
    """A copy of the workflow with each override applied, in order."""
    result = copy.deepcopy(workflow)
    for override in overrides:
        label = f"--set {override.node}.{override.input}"
        node_id = resolve_node(result, override.node, label)
        node = result[node_id]
        info = infos[node["class_type"]]
        spec = input_spec(info, override.input)
        if spec is None:
            raise CliError(f"{label}: {describe_node(result, node_id)} has no input {override.input!r}. "
                           f"Its inputs: {', '.join(input_names(info))}.")
        current = node["inputs"].get(override.input)
        if is_link(current):
            raise CliError(f"{label}: this input is connected to {describe_node(result, str(current[0]))}; "
                           "set a value on that node instead, or disconnect it in ComfyUI and export again.")
        node["inputs"][override.input] = convert_value(override.value, spec, label)
    return result


def check_choices(workflow: Workflow, infos: NodeInfos, server: str) -> None:
    """Refuse, before queueing, a choice the server does not offer (ComfyUI would say only "Value not in list").

    A missing model file is the usual case: the message names the file, the folder it belongs in, and the
    `--set` that picks one the server has.
    """
    for node_id, node in workflow.items():
        info = infos[node["class_type"]]
        for name, value in node["inputs"].items():
            spec = input_spec(info, name)
            choices = None if spec is None or is_link(value) else combo_choices(spec)
            if choices is None or value in choices:
                continue
            folder = MODEL_FOLDERS.get(name)
            where = f"{describe_node(workflow, node_id)}: {name} {value!r}"
            ref = _settable_ref(workflow, node_id)
            example = f'--set "{ref}.{name}={choices[0] if choices else "NAME"}"'
            if folder is None:
                raise CliError(f"{where} is not one of the server's choices: {shown_choices(choices)}. "
                               f"Choose one with {example}.")
            offered = f"it has {shown_choices(choices)}" if choices else f"its {folder} list is empty"
            raise CliError(f"{where} is not on the server at {server} ({offered}). Put the file in that ComfyUI's "
                           f"models/{folder} folder, or name a file it has with {example}.")


def _settable_ref(workflow: Workflow, node_id: str) -> str:
    """How --set can name this node: its title when no other node shares it, else its id."""
    title = node_title(workflow, node_id)
    return title if find_nodes(workflow, title) == [node_id] else node_id


@dataclass(frozen=True)
class Run:
    """One workflow to queue; `name` is the dataset folder's name when the run came from --dataset."""

    name: str
    workflow: Workflow


def runs_for_datasets(workflow: Workflow, datasets: list[str], dataset_node: str | None) -> list[Run]:
    """One run per dataset folder: the Load Dataset path set to it and every filename_prefix suffixed with its name.

    A folder that exists on this machine is sent as an absolute path; anything else is sent as typed
    (a path on the server, or a folder name inside ComfyUI's input folder).
    """
    if not datasets:
        return [Run("", workflow)]
    node_id = _dataset_node(workflow, dataset_node)
    runs: list[Run] = []
    used: set[str] = set()
    for folder in datasets:
        name = _unique(_folder_name(folder), used)
        copied = copy.deepcopy(workflow)
        copied[node_id]["inputs"]["path"] = _server_path(folder)
        for node in copied.values():
            prefix = node["inputs"].get("filename_prefix")
            if isinstance(prefix, str):
                node["inputs"]["filename_prefix"] = f"{prefix}_{name}"
        runs.append(Run(name, copied))
    return runs


def _dataset_node(workflow: Workflow, dataset_node: str | None) -> str:
    if dataset_node:
        node_id = resolve_node(workflow, dataset_node, "--dataset-node")
        if "path" not in workflow[node_id]["inputs"]:
            raise CliError(f"--dataset-node: {describe_node(workflow, node_id)} has no path input.")
        return node_id
    candidates = [node_id for node_id, node in workflow.items() if node["class_type"] == LOAD_DATASET]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise CliError("--dataset: the workflow has no Load Dataset (LoraLabLoadDataset) node whose path it could set.")
    listed = ", ".join(describe_node(workflow, node_id) for node_id in candidates)
    raise CliError(f"--dataset: the workflow has several Load Dataset nodes ({listed}); choose one with --dataset-node.")


def _server_path(folder: str) -> str:
    local = pathlib.Path(folder).expanduser()
    return str(local.resolve()) if local.exists() else folder


def _folder_name(folder: str) -> str:
    name = pathlib.PurePath(folder.rstrip("/\\")).name or "dataset"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "dataset"


def _unique(name: str, used: set[str]) -> str:
    candidate, counter = name, 1
    while candidate in used:
        counter += 1
        candidate = f"{name}_{counter}"
    used.add(candidate)
    return candidate
