"""Turn a folder on disk into a LoraDataset, noting every file it had to skip or guess about.

Two layouts are read, as kohya reads them: a flat folder of images, or a parent folder whose
`N_name` subfolders carry N repeats and `name` as class tokens (the caption of uncaptioned images).
Captions are `<image stem><caption_extension>` sidecars; their first non-blank line is the caption.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import os
import pathlib
import re
import unicodedata
from dataclasses import dataclass, field

from ..errors import DatasetError
from .dataset import DatasetImage, LoraDataset
from .images import IMAGE_EXTENSIONS, ImageFacts, UnreadableImage, inspect_image, is_image_file, strict_decoding
from .roots import DatasetRoots

logger = logging.getLogger(__name__)

KOHYA_FOLDER = re.compile(r"^(\d+)_(.*)$", re.DOTALL)
CAPTION_EXTENSIONS = (".txt", ".caption")
CAPTION_BACKUP = re.compile(r"\.(txt|caption)\.bak\d*$")  # what Auto Caption's overwrite mode leaves
# Image formats users drop in a dataset that we do not read: named in the report rather than ignored.
UNSUPPORTED_IMAGE_EXTENSIONS = frozenset({".gif", ".tif", ".tiff", ".avif", ".heic", ".heif", ".jxl", ".psd"})
# Encodings tried, in order, for captions that are not UTF-8 (Japanese Windows editors save Shift-JIS).
FALLBACK_ENCODINGS = ("cp932", "cp1252", "latin-1")
ENCODING_NAMES = {"cp932": "Shift-JIS (cp932)", "cp1252": "Windows-1252", "latin-1": "Latin-1", "utf-16": "UTF-16"}
INSPECT_THREADS = max(1, min(4, os.cpu_count() or 1))

EXPECTED_LAYOUT = """\
Expected one of two layouts:
  a flat folder of images, each with an optional caption file of the same name
    my_dataset/
      001.png
      001.txt        (the caption: its first line is used)
      002.jpg
  or kohya's layout: a parent folder of N_name subfolders (N = repeats, name = caption for images without one)
    my_dataset/
      10_ohwx woman/
        001.png
        001.txt
      1_woman/       (more folders with their own repeats)
Images: png, jpg, jpeg, webp, bmp. A relative path is looked up in ComfyUI's input folder."""


@dataclass(frozen=True)
class DatasetFolder:
    """One folder of images and the repeats/class tokens that apply to all of them."""

    path: pathlib.Path
    name: str  # as on disk ("10_ohwx woman"); "" for a flat folder
    repeats: int
    class_tokens: str
    is_regularization: bool = False


@dataclass(frozen=True)
class SkippedFile:
    path: pathlib.Path
    reason: str


@dataclass(frozen=True)
class LoadNotice:
    """Something the loader had to decide about; `code` is stable, `message` is for people."""

    code: str
    message: str
    paths: tuple[pathlib.Path, ...] = ()
    severity: str = "warning"  # "warning" (the user should act) or "note" (for information)


@dataclass(frozen=True)
class SidecarCaption:
    text: str  # first non-blank line, stripped ("" for a blank file)
    encoding: str  # codec that decoded it
    line_count: int  # non-blank lines in the file
    is_text: bool = True  # False: control characters, i.e. binary data, which is never shown or trained on


@dataclass
class LoadedDataset:
    """A LoraDataset plus what the report needs to know about how it was read."""

    dataset: LoraDataset
    layout: str  # "flat" or "kohya"
    folders: list[DatasetFolder]
    image_counts: dict[pathlib.Path, int]  # usable images per folder path
    facts: dict[pathlib.Path, ImageFacts]
    skipped: list[SkippedFile] = field(default_factory=list)
    notices: list[LoadNotice] = field(default_factory=list)


def read_caption(path: pathlib.Path) -> SidecarCaption:
    """Decode a caption file whatever its encoding: UTF-8 (with or without BOM), UTF-16 with BOM,
    else Shift-JIS, Windows-1252 or Latin-1 (the last decodes anything, so this never fails on bytes)."""
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        text, encoding = data[3:].decode("utf-8", errors="replace"), "utf-8-sig"
    elif data.startswith((b"\xff\xfe", b"\xfe\xff")):
        text, encoding = data.decode("utf-16", errors="replace"), "utf-16"
    else:
        text, encoding = _decode_guessing(data)
    if any(unicodedata.category(character) == "Cc" and character not in "\t\n\r\f\v" for character in text):
        return SidecarCaption(text="", encoding=encoding, line_count=0, is_text=False)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return SidecarCaption(text=unicodedata.normalize("NFC", lines[0]) if lines else "", encoding=encoding,
                          line_count=len(lines))


def discover_folders(root: pathlib.Path, *, repeats: int, class_tokens: str, is_regularization: bool = False,
                     roots: DatasetRoots | None = None) -> tuple[str, list[DatasetFolder], list[LoadNotice]]:
    """Decide the layout of `root` and list its image folders; raise DatasetError if it has none.

    With `roots`, subfolders that are links leading out of them are skipped (and counted in a notice).
    """
    role = "regularization folder" if is_regularization else "dataset folder"
    if not root.exists():
        raise DatasetError(f"The {role} {shown_path(root, roots)} does not exist.\n{EXPECTED_LAYOUT}")
    if not root.is_dir():
        raise DatasetError(f"The {role} {shown_path(root, roots)} is a file, not a folder; give the folder that holds "
                           f"the images.\n{EXPECTED_LAYOUT}")
    entries, outside = _entries(root, roots)
    subfolders = [entry for entry in entries if entry.is_dir()]
    root_images = [entry for entry in entries if entry.is_file() and is_image_file(entry)]
    kohya = [(folder, KOHYA_FOLDER.match(folder.name)) for folder in subfolders]
    kohya = [(folder, match) for folder, match in kohya if match]
    notices: list[LoadNotice] = _outside_links_notice(outside)
    if not kohya:
        if root_images:
            notices += _ignored_subfolders_notice(root, subfolders, "a flat folder reads only its own images", roots)
            return "flat", [DatasetFolder(root, "", repeats, class_tokens.strip(), is_regularization)], notices
        with_images = [folder.name for folder in subfolders if any(is_image_file(p) for p in folder.iterdir())]
        hint = (f" Its subfolders {', '.join(with_images)} hold images but are not named N_name "
                f"(e.g. '10_{with_images[0]}'); rename them to use them." if with_images else "")
        raise DatasetError(f"The {role} {shown_path(root, roots)} has no images.{hint}\n{EXPECTED_LAYOUT}")
    folders = []
    for folder, match in kohya:
        folder_repeats = int(match.group(1))
        if folder_repeats < 1:
            notices.append(LoadNotice("zero_repeats_folder", f"Folder '{folder.name}' has 0 repeats, so it is not "
                                      "used; rename it with N >= 1.", (folder,)))
            continue
        tokens = unicodedata.normalize("NFC", match.group(2)).strip() or class_tokens.strip()
        folders.append(DatasetFolder(folder, folder.name, folder_repeats, tokens, is_regularization))
    others = [folder for folder in subfolders if not KOHYA_FOLDER.match(folder.name)]
    notices += _ignored_subfolders_notice(root, others, "only N_name subfolders are read", roots)
    if root_images:
        notices.append(LoadNotice(
            "ignored_root_images",
            f"Images lying directly in {shown_path(root, roots)} next to N_name subfolders are ignored, as in kohya's "
            f"layout ({len(root_images)}: {names(root_images)}); move them into an N_name subfolder to train on them.",
            tuple(root_images)))
    return "kohya", folders, notices


def load_dataset(root: pathlib.Path, *, repeats: int, caption_extension: str = ".txt", class_tokens: str = "",
                 regularization_root: pathlib.Path | None = None, base_resolution: int = 512,
                 bucket_step: int = 64, roots: DatasetRoots | None = None) -> LoadedDataset:
    """Read a dataset folder (and optionally a regularization folder of the same layout).

    Unreadable images are skipped and listed; raises DatasetError only when nothing usable remains
    or a folder is missing/empty, with the path and the expected layout in the message. With `roots`
    (what ComfyUI's nodes pass), links leading out of them are skipped and messages name folders
    relative to their root; None (a local user's own process) reads any path and names it in full.
    """
    if caption_extension not in CAPTION_EXTENSIONS:
        raise DatasetError(f"caption_extension {caption_extension!r} is not supported; "
                           f"use one of {CAPTION_EXTENSIONS}.")
    if repeats < 1:
        raise DatasetError(f"repeats is {repeats}; it must be at least 1.")
    if base_resolution % bucket_step or base_resolution < bucket_step:
        raise DatasetError(f"base_resolution {base_resolution} must be a multiple of {bucket_step} for this model "
                           "(e.g. 512, 768, 1024); 0 takes the connected model's native size.")
    layout, folders, notices = discover_folders(root, repeats=repeats, class_tokens=class_tokens, roots=roots)
    if regularization_root is not None:
        _, regularization_folders, regularization_notices = discover_folders(
            regularization_root, repeats=1, class_tokens=class_tokens, is_regularization=True, roots=roots)
        folders += regularization_folders
        notices += regularization_notices

    listings = {folder.path: _list_folder(folder.path, caption_extension, roots) for folder in folders}
    for folder in folders:
        notices += listings[folder.path].notices
    all_images = [path for folder in folders for path in listings[folder.path].images]
    facts, skipped = _inspect_all(all_images)

    images: list[DatasetImage] = []
    image_counts: dict[pathlib.Path, int] = {}
    for folder in folders:
        listing = listings[folder.path]
        image_counts[folder.path] = 0
        for path in (path for path in listing.images if path in facts):
            caption_path = path.with_suffix(caption_extension)
            sidecar = read_caption(caption_path) if caption_path in listing.files else None
            if sidecar is not None and not sidecar.is_text:
                skipped.append(SkippedFile(path, f"its caption file {caption_path.name} is not text (binary data?); "
                                                 "save the caption as plain UTF-8 text"))
                continue
            image, caption_notices = _dataset_image(path, folder, facts[path], caption_path, sidecar)
            images.append(image)
            image_counts[folder.path] += 1
            notices += caption_notices
    files = set().union(*(listing.files for listing in listings.values()))
    notices += _shared_caption_notices(images)
    notices += _other_extension_notices(images, caption_extension, files)

    if not any(not image.is_regularization for image in images):
        listed = "".join(f"\n  {item.path.name}: {item.reason}" for item in skipped[:20])
        raise DatasetError(f"The dataset folder {shown_path(root, roots)} has no usable images."
                           + (f" Every image failed to load:{listed}" if skipped else f"\n{EXPECTED_LAYOUT}"))
    dataset = LoraDataset(root=root, images=tuple(images), caption_extension=caption_extension,
                          base_resolution=base_resolution, bucket_step=bucket_step, shown_root=shown_path(root, roots))
    return LoadedDataset(dataset=dataset, layout=layout, folders=folders, image_counts=image_counts, facts=facts,
                         skipped=skipped, notices=notices)


def shown_path(path: pathlib.Path, roots: DatasetRoots | None) -> str:
    """How messages name a folder: relative to its dataset root, or in full for a local user's own process."""
    return roots.shown(path) if roots is not None else str(path)


def folder_fingerprint(*roots: pathlib.Path | None) -> str:
    """A digest of file names, sizes and modification times in the folders (one level deep).

    ComfyUI re-runs Load Dataset when this changes, so edited captions or added images are picked up.
    """
    digest = hashlib.sha256()
    for root in roots:
        if root is None:
            continue
        digest.update(str(root).encode("utf-8", "surrogateescape"))
        if not root.is_dir():
            digest.update(b"<missing>")
            continue
        for directory in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
            for entry in sorted(os.scandir(directory), key=lambda e: e.name):
                if entry.is_file():
                    stat = entry.stat()
                    digest.update(f"{directory.name}/{entry.name}|{stat.st_size}|{stat.st_mtime_ns}\n"
                                  .encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def natural_key(path: pathlib.Path) -> list:
    """Sort 'img2' before 'img10', as file managers do."""
    return [int(part) if part.isdecimal() else part.lower() for part in re.split(r"(\d+)", path.name)]


@dataclass
class _FolderListing:
    images: list[pathlib.Path]
    files: set[pathlib.Path]  # every usable file (captions included): what the loader may open
    notices: list[LoadNotice]


def _entries(folder: pathlib.Path, roots: DatasetRoots | None) -> tuple[list[pathlib.Path], list[pathlib.Path]]:
    """(entries, links leading out of `roots`) of `folder`, naturally sorted, hidden files left out."""
    entries = sorted((entry for entry in folder.iterdir() if not entry.name.startswith(".")), key=natural_key)
    if roots is None:
        return entries, []
    outside = [entry for entry in entries if entry.is_symlink() and not roots.contains(entry)]
    return [entry for entry in entries if entry not in outside], outside


def _list_folder(folder: pathlib.Path, caption_extension: str, roots: DatasetRoots | None) -> _FolderListing:
    entries, outside = _entries(folder, roots)
    files = [p for p in entries if p.is_file()]
    images = [p for p in files if is_image_file(p)]
    image_stems = {p.stem for p in images}
    notices = _outside_links_notice(outside)
    unsupported = [p for p in files if p.suffix.lower() in UNSUPPORTED_IMAGE_EXTENSIONS]
    if unsupported:
        notices.append(LoadNotice(
            "unsupported_format",
            f"Files in a format Load Dataset does not read ({len(unsupported)}): {names(unsupported)}; "
            "convert them to png, jpg or webp to use them.", tuple(unsupported)))
    orphans = [p for p in files if p.suffix == caption_extension and p.stem not in image_stems]
    if orphans:
        notices.append(LoadNotice(
            "orphan_caption", f"Caption files without an image of the same name, renamed or deleted image? "
            f"({len(orphans)}): {names(orphans)}.", tuple(orphans), severity="note"))
    other = [p for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS | UNSUPPORTED_IMAGE_EXTENSIONS
             and p.suffix not in CAPTION_EXTENSIONS and not CAPTION_BACKUP.search(p.name)]
    if other:  # counted, not named: the report lists images and captions only
        notices.append(LoadNotice("ignored_files", f"Files that are neither images nor captions were ignored "
                                  f"({len(other)}).", tuple(other), severity="note"))
    return _FolderListing(images, set(files), notices)


def _outside_links_notice(links: list[pathlib.Path]) -> list[LoadNotice]:
    if not links:
        return []
    return [LoadNotice("outside_link", f"Links leading outside the dataset roots were skipped ({len(links)}): "
                       f"{names(links)}; copy what they point to into the dataset folder to use it.", tuple(links))]


def _inspect_all(paths: list[pathlib.Path]) -> tuple[dict[pathlib.Path, ImageFacts], list[SkippedFile]]:
    """Decode every image once, in a few threads (PIL's decoders release the GIL)."""
    facts: dict[pathlib.Path, ImageFacts] = {}
    skipped: list[SkippedFile] = []
    with strict_decoding(), concurrent.futures.ThreadPoolExecutor(INSPECT_THREADS) as pool:
        results = pool.map(_inspect_or_skip, paths)
        for path, result in zip(paths, results, strict=True):
            if isinstance(result, SkippedFile):
                skipped.append(result)
            else:
                facts[path] = result
    return facts, skipped


def _inspect_or_skip(path: pathlib.Path) -> ImageFacts | SkippedFile:
    try:
        return inspect_image(path)
    except UnreadableImage as error:
        logger.warning("Skipping %s", error)
        return SkippedFile(path, error.reason)


def _dataset_image(path: pathlib.Path, folder: DatasetFolder, facts: ImageFacts, caption_path: pathlib.Path,
                   sidecar: SidecarCaption | None) -> tuple[DatasetImage, list[LoadNotice]]:
    notices = []
    if sidecar is not None:
        if sidecar.encoding not in ("utf-8", "utf-8-sig"):
            notices.append(LoadNotice(
                "caption_encoding",
                f"{display_name(caption_path)} is not UTF-8; read it as "
                f"{ENCODING_NAMES.get(sidecar.encoding, sidecar.encoding)}: \"{sidecar.text[:60]}\". If that looks "
                "wrong, re-save the file as UTF-8.", (caption_path,)))
        if sidecar.line_count > 1:
            notices.append(LoadNotice(
                "caption_multiline", f"{display_name(caption_path)} has {sidecar.line_count} lines; only the first is "
                "used for training.", (caption_path,), severity="note"))
        if not sidecar.text:
            notices.append(LoadNotice("empty_caption_file", f"{display_name(caption_path)} is empty; the image is "
                                      "treated as uncaptioned.", (caption_path,)))
    has_caption = sidecar is not None and bool(sidecar.text)
    image = DatasetImage(
        path=path,
        caption=sidecar.text if has_caption else folder.class_tokens,
        caption_path=caption_path,
        has_caption_file=has_caption,
        folder=folder.name,
        repeats=folder.repeats,
        width=facts.width,
        height=facts.height,
        is_regularization=folder.is_regularization,
        class_tokens=folder.class_tokens,
        has_alpha=facts.has_alpha,
    )
    return image, notices


def _shared_caption_notices(images: list[DatasetImage]) -> list[LoadNotice]:
    by_caption: dict[pathlib.Path, list[DatasetImage]] = {}
    for image in images:
        by_caption.setdefault(image.caption_path, []).append(image)
    return [
        LoadNotice("shared_caption",
                   f"{' and '.join(display_name(image.path) for image in group)} share the caption file "
                   f"{display_name(caption_path)}; rename one image so each has its own caption.",
                   tuple(image.path for image in group))
        for caption_path, group in by_caption.items() if len(group) > 1
    ]


def _other_extension_notices(images: list[DatasetImage], caption_extension: str,
                             files: set[pathlib.Path]) -> list[LoadNotice]:
    """Uncaptioned images whose caption exists under the other extension: the setting is probably wrong."""
    other = next(extension for extension in CAPTION_EXTENSIONS if extension != caption_extension)
    found = [image.path.with_suffix(other) for image in images
             if not image.has_caption_file and image.path.with_suffix(other) in files]
    if not found:
        return []
    return [LoadNotice("other_caption_extension", f"Images without a {caption_extension} caption have a {other} file "
                       f"instead ({len(found)}): {names(found)}. Set caption_extension to {other} to use them.",
                       tuple(found))]


def _ignored_subfolders_notice(root: pathlib.Path, folders: list[pathlib.Path], why: str,
                               roots: DatasetRoots | None) -> list[LoadNotice]:
    with_images = [folder for folder in folders if any(is_image_file(p) for p in folder.iterdir())]
    if not with_images:
        return []
    names = ", ".join(f"'{folder.name}'" for folder in with_images)
    return [LoadNotice("ignored_folder", f"Subfolders {names} of {shown_path(root, roots)} hold images but are not used: {why}. "
                       "Name them N_name (e.g. '10_ohwx woman') to train on them.", tuple(with_images))]


def _decode_guessing(data: bytes) -> tuple[str, str]:
    for encoding in ("utf-8", *FALLBACK_ENCODINGS[:-1]):
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    return data.decode(FALLBACK_ENCODINGS[-1]), FALLBACK_ENCODINGS[-1]  # Latin-1 maps every byte: cannot fail


def names(paths, limit: int = 8) -> str:
    """'folder/a.png, folder/b.png and 3 more': file lists in report lines stay one line long."""
    paths = list(paths)
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    return ", ".join(display_name(path) for path in paths[:limit]) + more


def display_name(path: pathlib.Path) -> str:
    """'folder/file': enough to find a file in a report without the full absolute path."""
    return f"{path.parent.name}/{path.name}"
