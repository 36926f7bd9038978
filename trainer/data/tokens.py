"""Counting a caption's tokens as ComfyUI's tokenizer splits them (the report's long-caption check): CLIP's, or that
of the encoder that carries the caption (T5 for Flux and Chroma, the LLM for Qwen-Image, Z-Image...)."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

CLIP_TOKEN_LIMIT = 75  # CLIP's 77 positions minus start and end: the rest of a caption is cut off


@dataclass(frozen=True)
class TokenCounter:
    """Counts a caption's tokens with the tokenizer that carries it; longer than `limit` is worth a warning."""

    count: Callable[[str], int]
    limit: int = CLIP_TOKEN_LIMIT
    tokenizer: str = "CLIP"
    beyond_limit: str = "get cut off"

    def __call__(self, text: str) -> int:
        return self.count(text)


def caption_token_counter(clip: Any = None, family: Any = None) -> TokenCounter:
    """The counter of the tokenizer that carries a family's captions (T5 for Flux, the LLM for Qwen-Image...) with
    the length its trainer reads, CLIP's otherwise. The LLM's own tokenizer, inside ComfyUI's, counts the caption
    without the prompt template ComfyUI wraps around it."""
    tokens = getattr(family, "caption_tokens", None)
    holder = getattr(clip, "tokenizer", None)
    tokenizer = next((getattr(holder, name) for name in tokens.tokenizers if hasattr(holder, name)), None) if tokens else None
    if tokenizer is not None:
        return TokenCounter(_counter(tokenizer), tokens.limit, tokens.name,
                            f"are longer than {family.name} is trained with ({tokens.source})")
    return clip_token_counter(clip)


def clip_token_counter(clip: Any = None) -> TokenCounter:
    """Counts a caption's tokens as ComfyUI's CLIP tokenizer splits them (weights and escapes parsed).

    Uses the connected CLIP's tokenizer when given, else ComfyUI's bundled SD1 CLIP-L tokenizer,
    which SD1, SDXL and SD3 share for this purpose (the 75-token window is the same).
    """
    tokenizer = _clip_tokenizer_of(clip) if clip is not None else None
    return TokenCounter(_counter(tokenizer or _bundled_clip_tokenizer()))


def _counter(tokenizer: Any) -> Callable[[str], int]:
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
