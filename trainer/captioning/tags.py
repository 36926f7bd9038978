"""Turning a captioner's raw tags or sentence into a training caption: the same rules for every backend.

Trigger first, excluded tags and duplicates out, rating tags out, underscores to spaces (but not in
kaomoji such as `^_^`), and parentheses escaped so ComfyUI's prompt parser reads them as text, not
as weights.
"""
from __future__ import annotations

import re
from typing import Iterable, Sequence

# Tags whose underscores are part of the face, from SmilingWolf's WD14 tagger demo.
KAOMOJI = frozenset({
    "0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<", "3_3", "6_9", ">_o", "@_@", "^_^",
    "o_o", "u_u", "x_x", "|_|", "||_||",
})
RATING_PREFIXES = ("rating:", "rating_")


def split_tags(text: str) -> list[str]:
    """Comma-separated parts, stripped, empty ones dropped."""
    return [part.strip() for part in text.split(",") if part.strip()]


def tag_key(tag: str) -> str:
    """What makes two tags the same: case, underscores vs spaces and escaping do not matter."""
    unescaped = tag.replace("\\(", "(").replace("\\)", ")").strip().lower()
    return unescaped if unescaped in KAOMOJI else re.sub(r"[\s_]+", " ", unescaped)


def escape_parentheses(text: str) -> str:
    """`(` -> `\\(` unless already escaped: ComfyUI reads bare parentheses as prompt weights."""
    return re.sub(r"(?<!\\)([()])", r"\\\1", text)


def is_rating_tag(tag: str) -> bool:
    return tag.strip().lower().startswith(RATING_PREFIXES)


def finalize_caption(parts: Sequence[str], *, prefix: str = "", exclude: Iterable[str] = (),
                     replace_underscores: bool = True, max_tags: int | None = None) -> str:
    """The training caption: `prefix` (trigger word) first, then the captioner's parts in order.

    Parts are tags (WD14) or a single sentence (BLIP, Florence-2); `max_tags` counts parts after the
    prefix, once excluded tags and duplicates are gone.
    """
    excluded = {tag_key(tag) for tag in exclude if tag.strip()}
    leading = [escape_parentheses(part) for part in split_tags(prefix)]
    seen = {tag_key(part) for part in leading}
    body: list[str] = []
    for part in parts:
        part = part.strip()
        if not part or is_rating_tag(part):
            continue
        key = tag_key(part)
        if key in excluded or key in seen:
            continue
        seen.add(key)
        shown = part.replace("_", " ") if replace_underscores and part.lower() not in KAOMOJI else part
        body.append(escape_parentheses(shown))
        if max_tags is not None and len(body) >= max_tags:
            break
    return ", ".join(leading + body)
