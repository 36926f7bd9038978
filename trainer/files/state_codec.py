"""Nested training state (optimizer, scheduler and grad-scaler state_dicts) as tensors plus JSON, never pickle.

`flatten` splits a value made of dicts, lists, tuples, ints, floats (nan and inf included), bools, None,
strings and tensors into the tensors (for a safetensors file) and a JSON skeleton that says where each one
goes; `unflatten` puts them back together exactly. Anything else is refused, naming where it sits, so an
optimizer with unusual state fails at its first save rather than at resume.

Skeleton: None, bools, ints, strings and finite floats stand for themselves (Python's JSON keeps ints and
floats apart and round-trips floats exactly); everything else is a one-key object: {"float": "nan"},
{"tensor": "<name>"}, {"list": [...]}, {"tuple": [...]}, {"dict": [[key, value], ...]} (keys may be ints,
as optimizer state keys are).
"""
from __future__ import annotations

import math
from typing import Any

import torch

from ..errors import TrainingStateError

NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
SCALARS = (type(None), bool, int, str)


def flatten(value: Any, where: str = "state") -> tuple[dict[str, torch.Tensor], Any]:
    """(tensors by name, JSON-safe skeleton) of `value`; `where` names it in errors."""
    tensors: dict[str, torch.Tensor] = {}
    names: dict[int, str] = {}  # the same tensor object twice is stored once and comes back shared

    def encode(item: Any, path: str) -> Any:
        if isinstance(item, SCALARS):
            return item
        if isinstance(item, float):
            return item if math.isfinite(item) else {"float": repr(item)}
        if isinstance(item, torch.Tensor):
            if id(item) not in names:
                names[id(item)] = str(len(tensors))
                tensors[names[id(item)]] = item.detach().cpu().contiguous()
            return {"tensor": names[id(item)]}
        if isinstance(item, (list, tuple)):
            kind = "list" if isinstance(item, list) else "tuple"
            return {kind: [encode(element, f"{path}/{index}") for index, element in enumerate(item)]}
        if isinstance(item, dict):
            pairs = []
            for key, element in item.items():
                if not isinstance(key, (*SCALARS, float)):
                    raise TrainingStateError(f"{path} has a key of type {type(key).__name__}; a training state can "
                                             "only have numbers, strings, booleans or None as keys.")
                pairs.append([encode(key, path), encode(element, f"{path}/{key}")])
            return {"dict": pairs}
        raise TrainingStateError(
            f"{path} is a {type(item).__module__}.{type(item).__qualname__}, which a training state cannot hold "
            "(only tensors, numbers, strings, booleans, None, lists, tuples and dicts are stored, without pickle).")

    skeleton = encode(value, where)
    return tensors, skeleton


def unflatten(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The value `flatten` was given; raises TrainingStateError on anything `flatten` cannot have written."""

    def decode(node: Any) -> Any:
        if isinstance(node, SCALARS) or (isinstance(node, float) and math.isfinite(node)):
            return node
        if not isinstance(node, dict) or len(node) != 1:
            raise TrainingStateError(f"unexpected entry {_excerpt(node)}")
        (kind, content), = node.items()
        if kind == "float" and content in NON_FINITE:
            return NON_FINITE[content]
        if kind == "tensor" and isinstance(content, str):
            if content not in tensors:
                raise TrainingStateError(f"the tensor {content!r} it refers to is missing")
            return tensors[content]
        if kind in ("list", "tuple") and isinstance(content, list):
            items = [decode(element) for element in content]
            return items if kind == "list" else tuple(items)
        if kind == "dict" and isinstance(content, list):
            if not all(isinstance(pair, list) and len(pair) == 2 for pair in content):
                raise TrainingStateError(f"a malformed dict entry {_excerpt(content)}")
            keys = [decode(key) for key, _ in content]
            if not all(isinstance(key, (*SCALARS, float)) for key in keys):
                raise TrainingStateError(f"a dict key that is not a number, string, boolean or None {_excerpt(content)}")
            return {key: decode(value) for key, (_, value) in zip(keys, content)}
        raise TrainingStateError(f"unexpected entry {_excerpt(node)}")

    return decode(skeleton)


def _excerpt(node: Any) -> str:
    text = repr(node)
    return text if len(text) <= 80 else text[:77] + "..."
