"""A node's widget inputs, built from a settings dataclass's field metadata (trainer/setting_fields.py)."""
from __future__ import annotations

import dataclasses
from typing import Any

from ..trainer.setting_fields import choices_of

WIDGETS = {"int": "INT", "float": "FLOAT", "bool": "BOOLEAN", "str": "STRING"}  # by the field's annotation
RANGE = ("min", "max", "step", "round")


def setting_input(item: dataclasses.Field) -> tuple[Any, dict[str, Any]]:
    """ComfyUI's (type, options) for one setting, options in the order ComfyUI's own nodes write them."""
    metadata = item.metadata
    options: dict[str, Any] = {}
    if metadata["widget"].get("multiline"):
        options["multiline"] = True
    if item.default is not dataclasses.MISSING:
        options["default"] = item.default
    options.update((key, metadata[key]) for key in RANGE if metadata[key] is not None)
    options.update((key, value) for key, value in metadata["widget"].items() if key != "multiline")
    if metadata["help"]:
        options["tooltip"] = metadata["help"]
    choices = choices_of(item)
    return (list(choices) if choices is not None else WIDGETS[item.type]), options


def setting_inputs(settings_class: type, *, optional: bool = False) -> dict[str, tuple[Any, dict[str, Any]]]:
    """The required (or optional) node inputs of a settings dataclass, in field order."""
    return {item.name: setting_input(item) for item in dataclasses.fields(settings_class)
            if item.metadata.get("node_input") and item.metadata["optional"] == optional}


def settings_from(settings_class: type, inputs: dict[str, Any]) -> Any:
    """The settings value from a node's inputs, ignoring inputs that are not its fields (model, dataset...)."""
    names = {item.name for item in dataclasses.fields(settings_class)}
    return settings_class(**{name: value for name, value in inputs.items() if name in names})
