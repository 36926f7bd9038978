"""Settings dataclass fields that describe themselves: default, range, choices and help, in peft's style.

Each setting is declared once, as `name: type = setting(default, "help", min=..., max=...)`; the node that
exposes it builds its input from this metadata (nodes/setting_inputs.py), and the dataclass checks values
against the same choices. `help` is the input's tooltip, so it is empty where the name says enough.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable

from .errors import SettingsError

Choices = Iterable[str] | Callable[[], Iterable[str]]  # a callable when the list is found at run time (captioners)


def setting(default: Any = dataclasses.MISSING, help: str = "", *, choices: Choices | None = None,
            min: float | None = None, max: float | None = None, step: float | None = None, round: bool | None = None,
            optional: bool = False, node_input: bool = True, widget: dict[str, Any] | None = None) -> Any:
    """A dataclass field whose metadata is its node input: `widget` holds ComfyUI-only options
    (`multiline`, `control_after_generate`); `optional` puts it in the node's optional inputs;
    `node_input=False` keeps a setting out of the node (a fixed value the user does not choose)."""
    metadata = {"help": help, "choices": choices, "min": min, "max": max, "step": step, "round": round,
                "optional": optional, "node_input": node_input, "widget": widget or {}}
    return dataclasses.field(default=default, metadata=metadata)


def choices_of(item: dataclasses.Field) -> tuple[str, ...] | None:
    choices = item.metadata.get("choices")
    if choices is None:
        return None
    return tuple(choices() if callable(choices) else choices)


def check_choices(settings: Any) -> None:
    """SettingsError naming the setting whose value is not one of its choices."""
    for item in dataclasses.fields(settings):
        choices = choices_of(item)
        value = getattr(settings, item.name)
        if choices is not None and value not in choices:
            raise SettingsError(f"{item.name} '{value}' is not one of {', '.join(choices)}.")
