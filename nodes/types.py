"""Custom socket types, the category every LoRA Lab node shares, and the dataset nodes' common outputs."""
from __future__ import annotations

from typing import Any

DATASET = "LORALAB_DATASET"
LORA = "LORALAB_LORA"
CATEGORY = "LoRA Lab"


class DatasetTextNode:
    """A node that outputs a dataset and the text it also shows under itself (Load Dataset's report,
    Auto Caption's captions): the user reads what happened to the data without wiring a text node."""

    CATEGORY = CATEGORY
    RETURN_TYPES = (DATASET, "STRING")
    OUTPUT_NODE = True
    FUNCTION = "run"

    @staticmethod
    def shown(dataset: Any, text: str) -> dict[str, Any]:
        return {"ui": {"text": [text]}, "result": (dataset, text)}
