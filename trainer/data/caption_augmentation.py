"""Per-step caption processing as kohya does it: shuffle tags after the first `keep_tokens`, and dropout."""
from __future__ import annotations

import random


def process_caption(caption: str, rng: random.Random, shuffle: bool, keep_tokens: int, dropout: float) -> str:
    """The caption one training step sees; `rng` decides, so a step is reproducible from its seed."""
    if dropout > 0 and rng.random() < dropout:
        return ""
    if not shuffle:
        return caption
    tags = [tag.strip() for tag in caption.split(",") if tag.strip()]
    fixed, rest = tags[:keep_tokens], tags[keep_tokens:]
    rng.shuffle(rest)
    return ", ".join(fixed + rest)
