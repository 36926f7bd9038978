"""The example workflows: listed by ComfyUI's template browser, each with a thumbnail and an API twin that describes
the same graph, and every node type and input name still declared by the server (so renaming an input fails here).
"""
from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest
from harness.runtime import REPO_ROOT
from harness.server import PACK_LINK_NAME, ComfyServer
from PIL import Image

EXAMPLES = REPO_ROOT / "example_workflows"
UI_FILES = sorted(EXAMPLES.glob("*.json"))
NAMES = [path.stem for path in UI_FILES]
EXPECTED = {"loralab_sd15_pipeline", "loralab_sdxl_pipeline", "loralab_resume_training", "loralab_toy_world_demo",
            "loralab_flow_toy_world_demo", "loralab_flux_pipeline", "loralab_qwen_image_pipeline"}
FRONTEND_ONLY = {"Note", "MarkdownNote"}  # drawn by the frontend, never sent to the server
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
ACTIVE = 0  # LiteGraph node mode; 2 = muted, 4 = bypassed


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ComfyServer(tmp_path_factory.mktemp("templates")) as running:
        yield running


@pytest.fixture(scope="module")
def object_info(server) -> dict[str, Any]:
    return server.get_json("/object_info")


def load(path: pathlib.Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def api_twin(name: str) -> dict[str, Any]:
    return load(EXAMPLES / "api" / f"{name}.json")


def declared_inputs(info: dict[str, Any]) -> list[tuple[str, list[Any]]]:
    """(name, spec) in the order the frontend builds widgets: /object_info's input_order, required then optional."""
    order = info.get("input_order", {})
    return [(name, info["input"][section][name]) for section in ("required", "optional") for name in order.get(section, [])]


def is_widget(spec: list[Any]) -> bool:
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return (isinstance(spec[0], list) or spec[0] in WIDGET_TYPES) and not options.get("forceInput")


def has_control_widget(name: str, spec: list[Any]) -> bool:
    """Frontend 1.32.9 adds a 'control after generate' value after seed-like INT widgets (useIntWidget)."""
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return spec[0] == "INT" and options.get("control_after_generate", name in ("seed", "noise_seed"))


def widget_values(node: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """A UI node's widgets_values by input name; a seed's control value comes as '<name>.control'."""
    values = iter(node.get("widgets_values", []))
    named: dict[str, Any] = {}
    for name, spec in declared_inputs(info):
        if is_widget(spec):
            named[name] = next(values)
            if has_control_widget(name, spec):
                named[f"{name}.control"] = next(values)
    assert next(values, None) is None, f"node {node['id']} ({node['type']}) has more widget values than inputs"
    return named


def choices(spec: list[Any]) -> list[Any] | None:
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO":  # newer servers: ["COMBO", {"options": [...]}]
        return spec[1].get("options", [])
    return None


def ui_to_api(ui: dict[str, Any], object_info: dict[str, Any]) -> dict[str, Any]:
    """What the frontend queues for a plain UI graph (no subgraphs, primitives or reroutes; those fail loudly here)."""
    links = {link[0]: link for link in ui["links"]}
    api: dict[str, Any] = {}
    for node in ui["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        assert node.get("mode", ACTIVE) == ACTIVE, f"node {node['id']} is muted or bypassed in the example"
        info = object_info[node["type"]]
        inputs = {name: value for name, value in widget_values(node, info).items() if not name.endswith(".control")}
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                link = links[slot["link"]]
                inputs[slot["name"]] = [str(link[1]), link[2]]
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs,
                                "_meta": {"title": node.get("title") or info["display_name"]}}
    return api


def test_the_examples_are_ui_workflows_with_thumbnails_and_api_twins():
    assert set(NAMES) == EXPECTED
    for path in UI_FILES:
        ui = load(path)
        assert isinstance(ui.get("nodes"), list) and "links" in ui, f"{path.name} must be UI format for the template browser"
        with Image.open(path.with_suffix(".jpg")) as thumbnail:
            assert thumbnail.format == "JPEG" and min(thumbnail.size) >= 256
        assert all("class_type" in node for node in api_twin(path.stem).values())
    assert {path.stem for path in (EXAMPLES / "api").glob("*.json")} == EXPECTED


@pytest.mark.server
def test_template_browser_lists_the_ui_files_only(server):
    listed = server.get_json("/workflow_templates")
    assert sorted(listed[PACK_LINK_NAME]) == sorted(EXPECTED)
    served = server.get_json(f"/api/workflow_templates/{PACK_LINK_NAME}/loralab_sd15_pipeline.json")
    assert served == load(EXAMPLES / "loralab_sd15_pipeline.json")


@pytest.mark.server
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_ui_file_and_api_twin_describe_the_same_graph(name, object_info):
    assert ui_to_api(load(EXAMPLES / f"{name}.json"), object_info) == api_twin(name)


@pytest.mark.server
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_api_twin_matches_the_servers_node_definitions(name, object_info):
    """Node types exist, every input is declared, required ones are set, links join matching types, choices are valid."""
    api = api_twin(name)
    for node_id, node in api.items():
        where = f"{name} node {node_id} ({node['class_type']})"
        assert node["class_type"] in object_info, f"{where}: the server has no such node type"
        info = object_info[node["class_type"]]
        declared = dict(declared_inputs(info))
        assert set(node["inputs"]) <= set(declared), f"{where}: undeclared inputs {set(node['inputs']) - set(declared)}"
        missing = set(info["input"]["required"]) - set(node["inputs"])
        assert not missing, f"{where}: required inputs not set: {missing}"
        for input_name, value in node["inputs"].items():
            spec = declared[input_name]
            if isinstance(value, list):
                source = api[value[0]]
                produced = object_info[source["class_type"]]["output"][value[1]]
                assert produced == spec[0], f"{where}.{input_name}: linked to a {produced} output, expects {spec[0]}"
            elif choices(spec) is not None:
                if node["class_type"].startswith("LoraLab"):  # model file names are the user's to pick
                    assert value in choices(spec), f"{where}.{input_name}: {value!r} is not one of {choices(spec)}"
            elif spec[0] in ("INT", "FLOAT"):
                assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}.{input_name}"
                options = spec[1] if len(spec) > 1 else {}
                assert options.get("min", value) <= value <= options.get("max", value), f"{where}.{input_name}: out of range"
            elif spec[0] == "BOOLEAN":
                assert isinstance(value, bool), f"{where}.{input_name}"
            elif spec[0] == "STRING":
                assert isinstance(value, str), f"{where}.{input_name}"


@pytest.mark.server
def test_examples_train_with_a_fixed_seed(object_info):
    """The frontend adds 'randomize' after a seed widget unless told not to; training must stay reproducible."""
    assert object_info["LoraLabTrainLoRA"]["input"]["required"]["seed"][1]["control_after_generate"] is False
    for path in UI_FILES:
        train = next(node for node in load(path)["nodes"] if node["type"] == "LoraLabTrainLoRA")
        assert "seed.control" not in widget_values(train, object_info["LoraLabTrainLoRA"]), path.name
