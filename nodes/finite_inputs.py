"""The one check every node's FLOAT inputs go through: nan and inf are refused by name before any work.

ComfyUI's min/max validation compares, and every comparison with nan is false, so a `unet_lr` of nan sent
in a JSON workflow reaches the node; values from linked nodes are not validated at all. The check runs when
the node executes, before anything else, so both are covered.
"""
from __future__ import annotations

import functools
from typing import Callable

from ..trainer.finite import require_finite


def float_input_names(node_class: type) -> list[str]:
    """The node's FLOAT inputs, required and optional, read from its INPUT_TYPES."""
    declared = node_class.INPUT_TYPES()
    return [name for group in ("required", "optional") for name, spec in declared.get(group, {}).items()
            if spec and spec[0] == "FLOAT"]


def refuse_non_finite_floats(function: Callable) -> Callable:
    """Decorate a node's FUNCTION: a nan or infinite FLOAT input is a SettingsError naming it, before the node runs."""

    @functools.wraps(function)
    def checked(self, *args, **inputs):
        for name in float_input_names(type(self)):
            if inputs.get(name) is not None:
                require_finite(name, float(inputs[name]))
        return function(self, *args, **inputs)

    return checked
