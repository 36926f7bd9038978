"""Counting a caption's CLIP tokens as ComfyUI's tokenizer splits them (the report's long-caption check)."""
from __future__ import annotations

import functools
from typing import Any, Callable


def clip_token_counter(clip: Any = None) -> Callable[[str], int]:
    """Counts a caption's tokens as ComfyUI's CLIP tokenizer splits them (weights and escapes parsed).

    Uses the connected CLIP's tokenizer when given, else ComfyUI's bundled SD1 CLIP-L tokenizer,
    which SD1, SDXL and SD3 share for this purpose (the 75-token window is the same).
    """
    tokenizer = _clip_tokenizer_of(clip) if clip is not None else None
    tokenizer = tokenizer or _bundled_clip_tokenizer()

    @functools.lru_cache(maxsize=4096)
    def count(text: str) -> int:
        batches = tokenizer.tokenize_with_weights(text, return_word_ids=True)
        return sum(1 for batch in batches for token in batch if token[2] != 0)  # word id 0: start/end/padding

    return count


@functools.cache
def _bundled_clip_tokenizer():
    import comfy.sd1_clip

    return comfy.sd1_clip.SDTokenizer()


def _clip_tokenizer_of(clip: Any):
    """The CLIP-L/H/G SDTokenizer inside a ComfyUI CLIP object, if it has one."""
    for name in ("clip_l", "clip_h", "clip_g"):
        tokenizer = getattr(clip.tokenizer, name, None)
        if tokenizer is not None and hasattr(tokenizer, "tokenize_with_weights"):
            return tokenizer
    return None
