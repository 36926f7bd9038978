"""Saved workflows address widgets by name and position: Train LoRA's, Auto Caption's and Load Dataset's inputs stay as released.

`node_inputs_contract.json` holds their INPUT_TYPES as they were when the inputs became generated from the
settings dataclasses; names, order, defaults, ranges, choices and tooltips must match it exactly.
"""
from __future__ import annotations

import json
import pathlib

import pytest

from harness import runtime

CONTRACT = pathlib.Path(__file__).with_name("node_inputs_contract.json")
NODES = ("LoraLabTrainLoRA", "LoraLabAutoCaption", "LoraLabLoadDataset")


def current_inputs(node_id: str) -> str:
    """The node's INPUT_TYPES as ordered JSON text (order matters: widgets are saved by position)."""
    return json.dumps(runtime.boot().NODE_CLASS_MAPPINGS[node_id].INPUT_TYPES(), indent=1)


@pytest.mark.parametrize("node_id", NODES)
def test_input_types_equal_the_released_ones(node_id):
    released = json.loads(CONTRACT.read_text())[node_id]
    assert current_inputs(node_id) == json.dumps(released, indent=1)


if __name__ == "__main__":  # writes the contract from the current code: only when inputs change on purpose
    CONTRACT.write_text(json.dumps({node_id: json.loads(current_inputs(node_id)) for node_id in NODES}, indent=1) + "\n")
