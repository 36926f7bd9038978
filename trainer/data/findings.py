"""What the dataset report warns about: missing and long captions, small, duplicate and mixed-style images, too
few images or too many steps, and what the loader converted.

Each finding has a stable `code` for tests and frontends. The thresholds are rules of thumb from LoRA training
practice, named below so they can be argued with.
"""
from __future__ import annotations

import collections
import pathlib
import re
from dataclasses import dataclass
from typing import Iterable

from .buckets import Bucket, make_buckets, nearest_bucket, upscale_factor
from .dataset import DatasetImage
from .images import ImageFacts, colour_distance
from .loading import LoadedDataset, display_name, names
from .tokens import CLIP_TOKEN_LIMIT, TokenCounter

TOKEN_LIMIT = CLIP_TOKEN_LIMIT
MIN_IMAGES = 15  # below this, LoRAs tend to copy their few shots instead of learning the subject
MAX_VIEWS_PER_IMAGE = 300  # repeats x epochs per image beyond which overfitting is the usual outcome
UPSCALE_TOLERANCE = 1.1  # enlarging an image more than this to fill its bucket blurs the training data
DUPLICATE_HASH_BITS = 4  # of 64 perceptual-hash bits that may differ between near-duplicates
DUPLICATE_COLOUR_DISTANCE = 16.0  # mean 0..255 difference of 4x4 colour grids allowed for near-duplicates
ILLUSTRATION_FLATNESS = 0.55  # images flatter than this look drawn or rendered
PHOTO_FLATNESS = 0.25  # images less flat than this look photographic
MIXED_STYLE_SHARE = 0.1  # warn when the minority style is at least this share of the images
LISTED = 8  # file names listed per finding before "and N more"

# Stored modes that training converts, and how the report names them.
CONVERTED_MODES = {"CMYK": "CMYK", "I;16": "16-bit", "I;16B": "16-bit", "I;16L": "16-bit", "I;16N": "16-bit",
                   "I": "16-bit", "P": "palette", "PA": "palette", "1": "1-bit"}


@dataclass(frozen=True)
class Finding:
    """One thing the report says about the dataset; `code` is stable for tests and frontends."""

    code: str
    message: str
    paths: tuple[pathlib.Path, ...] = ()
    severity: str = "warning"  # "warning": the user should act; "note": for information


def dataset_findings(loaded: LoadedDataset, trigger_word: str, count_tokens: TokenCounter,
                     epochs: int) -> list[Finding]:
    """Every finding about a freshly loaded dataset, in the order the report lists them."""
    dataset = loaded.dataset
    findings = [Finding(n.code, n.message, n.paths, n.severity) for n in loaded.notices]
    findings += _skipped_findings(loaded)
    findings += caption_findings(dataset.images, trigger_word, count_tokens)
    findings += _size_findings(dataset.images, make_buckets(dataset.base_resolution, dataset.bucket_step),
                               dataset.base_resolution)
    findings += _file_findings(dataset.images, loaded.facts)
    findings += duplicate_findings([(image.path, loaded.facts[image.path]) for image in dataset.images])
    findings += style_findings([(image.path, loaded.facts[image.path]) for image in dataset.training_images])
    findings += _quantity_findings(dataset.training_images, epochs)
    return findings


def caption_findings(images: Iterable[DatasetImage], trigger_word: str,
                     count_tokens: TokenCounter) -> list[Finding]:
    """Missing, over-long and trigger-less captions; also what Auto Caption reports after writing."""
    images = list(images)
    training = [image for image in images if not image.is_regularization]
    findings = []
    uncaptioned = [image for image in training if is_uncaptioned(image)]
    for tokens, group in _group_by(uncaptioned, lambda image: image.caption).items():
        paths = tuple(image.path for image in group)
        if tokens:
            findings.append(Finding("missing_caption", f"Images without a caption file train with the class tokens "
                                    f"'{tokens}' ({len(group)}): {_names(paths)}. Auto Caption can describe them.",
                                    paths))
        else:
            findings.append(Finding("missing_caption", f"Images with no caption and no class tokens train with an "
                                    f"empty caption ({len(group)}): {_names(paths)}. Add captions, set class_tokens, "
                                    "or run Auto Caption.", paths))
    token_counts = {caption: count_tokens(caption) for caption in {image.caption for image in images}}
    long = [image for image in images if token_counts[image.caption] > count_tokens.limit]
    if long:
        listed = ", ".join(f"{display_name(image.path)} ({token_counts[image.caption]})" for image in long[:LISTED])
        findings.append(Finding(
            "long_caption", f"Captions longer than {count_tokens.limit} {count_tokens.tokenizer} tokens "
            f"{count_tokens.beyond_limit} ({len(long)}): {listed}"
            f"{_more(long)}. Shorten them (fewer tags, or a lower max_tags in Auto Caption).",
            tuple(image.path for image in long)))
    findings += _trigger_findings(training, trigger_word)
    return findings


def is_uncaptioned(image: DatasetImage) -> bool:
    """No caption file and nothing better than the class tokens (a memory-only Auto Caption counts as a caption)."""
    return not image.has_caption_file and image.caption == image.class_tokens


def duplicate_findings(facts: list[tuple[pathlib.Path, ImageFacts]]) -> list[Finding]:
    """Groups of images whose perceptual hashes and colours are almost the same."""
    parent = list(range(len(facts)))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    for i, (_, first) in enumerate(facts):
        for j in range(i + 1, len(facts)):
            second = facts[j][1]
            if ((first.perceptual_hash ^ second.perceptual_hash).bit_count() <= DUPLICATE_HASH_BITS
                    and colour_distance(first.colour_signature, second.colour_signature) <= DUPLICATE_COLOUR_DISTANCE):
                parent[root(j)] = root(i)
    groups = _group_by(range(len(facts)), root)
    findings = []
    for members in groups.values():
        if len(members) > 1:
            paths = tuple(facts[index][0] for index in members)
            findings.append(Finding(
                "duplicate", f"Near-duplicate images: {' = '.join(display_name(p) for p in paths)}. Duplicates count "
                "double and push the LoRA to memorise them; keep one.", paths))
    return findings


def style_findings(facts: list[tuple[pathlib.Path, ImageFacts]]) -> list[Finding]:
    """Warn when photographs and illustrations are mixed (a LoRA then learns the blend)."""
    photos = [path for path, fact in facts if fact.flatness < PHOTO_FLATNESS]
    drawings = [path for path, fact in facts if fact.flatness > ILLUSTRATION_FLATNESS]
    minority = min(photos, drawings, key=len)
    if not photos or not drawings or len(minority) < MIXED_STYLE_SHARE * len(facts):
        return []
    kind = "photo-like" if minority is photos else "illustration-like"
    return [Finding(
        "mixed_styles", f"The styles look mixed: {len(photos)} photo-like and {len(drawings)} illustration-like "
        f"images ({kind}: {_names(minority)}). A LoRA learns the mixture; keep one style unless style is what should "
        "vary.", tuple(minority))]


def _trigger_findings(training: list[DatasetImage], trigger_word: str) -> list[Finding]:
    trigger = trigger_word.strip()
    if trigger:
        lacking = [image for image in training if not _contains_word(image.caption, trigger)]
        if not lacking:
            return []
        paths = tuple(image.path for image in lacking)
        return [Finding("trigger_missing", f"Captions lacking the trigger word '{trigger}' ({len(lacking)} of "
                        f"{len(training)}): {_names(paths)}. Auto Caption with trigger_word puts it first in each.",
                        paths)]
    firsts = collections.Counter(_first_tag(image.caption) for image in training if _first_tag(image.caption))
    if not firsts:
        return []
    common, count = firsts.most_common(1)[0]
    lacking = [image for image in training if _first_tag(image.caption) != common]
    if count < 2 or count < len(training) / 2 or not lacking:
        return []
    paths = tuple(image.path for image in lacking)
    return [Finding("trigger_missing", f"Captions not starting with '{common}' as {count} others do "
                    f"({len(lacking)}): {_names(paths)}. If '{common}' is your trigger word, put it first in these "
                    "too.", paths)]


def _skipped_findings(loaded: LoadedDataset) -> list[Finding]:
    findings = [Finding("unreadable_image", f"Skipped {display_name(item.path)}: {item.reason}.", (item.path,))
                for item in loaded.skipped[:LISTED * 2]]
    rest = loaded.skipped[LISTED * 2:]
    if rest:
        findings.append(Finding("unreadable_image", f"Skipped more unreadable files ({len(rest)}): {_names(rest)}.",
                                tuple(item.path for item in rest)))
    return findings


def _size_findings(images: list[DatasetImage], buckets: list[Bucket], resolution: int) -> list[Finding]:
    small = []
    for image in images:
        factor = upscale_factor(image.width, image.height, nearest_bucket(image.width, image.height, buckets))
        if factor > UPSCALE_TOLERANCE:
            small.append((image, factor))
    if not small:
        return []
    listed = ", ".join(f"{display_name(image.path)} {image.width}x{image.height} (x{factor:.1f})"
                       for image, factor in small[:LISTED])
    return [Finding("small_image", f"Images smaller than the {resolution} px training size get upscaled, which "
                    f"teaches blur ({len(small)}): {listed}{_more(small)}. Use larger originals or drop them.",
                    tuple(image.path for image, _ in small))]


def _file_findings(images: list[DatasetImage], facts: dict[pathlib.Path, ImageFacts]) -> list[Finding]:
    """Notes on conversions the loader applies, so nobody wonders why a file looks different in training."""
    findings = []
    transparent = [image.path for image in images if facts[image.path].has_alpha]
    if transparent:
        findings.append(Finding("transparency", f"Images with transparent areas, composited on white for training "
                                f"({len(transparent)}): {_names(transparent)}.", tuple(transparent), "note"))
    rotated = [image.path for image in images if facts[image.path].orientation != 1]
    if rotated:
        findings.append(Finding("exif_rotated", f"Images with an EXIF rotation, used upright as photo viewers show "
                                f"them ({len(rotated)}): {_names(rotated)}.", tuple(rotated), "note"))
    converted = [(image.path, CONVERTED_MODES[facts[image.path].mode]) for image in images
                 if facts[image.path].mode in CONVERTED_MODES]
    if converted:
        listed = ", ".join(f"{display_name(path)} ({kind})" for path, kind in converted[:LISTED])
        findings.append(Finding("converted", f"Images converted to 8-bit RGB ({len(converted)}): {listed}"
                                f"{_more(converted)}.", tuple(path for path, _ in converted), "note"))
    return findings


def _quantity_findings(training: tuple[DatasetImage, ...], epochs: int) -> list[Finding]:
    findings = []
    count = len(training)
    if count < MIN_IMAGES:
        findings.append(Finding(
            "few_images", f"Training images: only {count}. LoRAs generalise from about {MIN_IMAGES}-50 varied images "
            "(different poses, backgrounds, lighting, framing); with fewer, expect copies of the training shots."))
    if count:
        views = sum(image.repeats for image in training) * epochs / count
        if views > MAX_VIEWS_PER_IMAGE:
            findings.append(Finding(
                "too_many_steps", f"Each image is seen about {views:.0f} times (its repeats x {epochs} epochs). Past "
                f"~{MAX_VIEWS_PER_IMAGE} a LoRA tends to memorise its images; lower repeats or "
                "epochs (100-200 views per image is common practice) or add images."))
    return findings


def _contains_word(caption: str, word: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", caption, flags=re.IGNORECASE) is not None


def _first_tag(caption: str) -> str:
    return caption.split(",")[0].strip().lower()


def _group_by(items, key) -> dict:
    groups: dict = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups


def _names(items) -> str:
    return names([getattr(item, "path", item) for item in items], LISTED)


def _more(items) -> str:
    return f" and {len(items) - LISTED} more" if len(items) > LISTED else ""
