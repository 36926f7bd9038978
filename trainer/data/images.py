"""Reading training images the way users actually have them: rotated phone photos, CMYK scans, 16-bit
PNGs, transparent cut-outs, half-copied files.

`open_training_image` is what training calls for pixels; `inspect_image` is what the dataset loader
calls once per file to reject unreadable ones and collect what the report needs.
"""
from __future__ import annotations

import contextlib
import logging
import pathlib
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageFile

from ..errors import DatasetError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})
# PIL's own hard limit (2 x its MAX_IMAGE_PIXELS default), fixed here because other packs switch PIL's off.
MAX_PIXELS = 178_956_970
# Every way a damaged file shows up while PIL parses or decodes it.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, Image.DecompressionBombError)

ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
# EXIF orientation -> the transpose that shows the picture upright (as PIL's ImageOps.exif_transpose).
ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
HASH_SIZE = 8  # 8x8 DCT coefficients -> a 64-bit perceptual hash
ANALYSIS_SIDE = 96  # thumbnail side for the style and colour measures


class UnreadableImage(DatasetError):
    """An image file that cannot be used; `reason` is the short form the report lists."""

    def __init__(self, path: pathlib.Path, reason: str, detail: str = "") -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}{f' ({detail})' if detail else ''}")


@dataclass(frozen=True)
class ImageFacts:
    """What the report needs about one readable image."""

    width: int  # after EXIF orientation
    height: int
    mode: str  # PIL mode as stored (e.g. "CMYK", "I;16", "P")
    format: str
    orientation: int  # EXIF orientation tag, 1 = upright
    has_alpha: bool  # the file has transparent pixels (they are composited on white)
    perceptual_hash: int  # 64-bit DCT hash; near-duplicates differ in few bits
    colour_signature: bytes  # 4x4 grid of mean RGB; perceptual hashes ignore colour
    flatness: float  # share of flat neighbour pairs: high for illustrations, low for photos


@contextlib.contextmanager
def strict_decoding():
    """Make PIL raise on truncated files for the duration, whatever another pack set globally.

    ComfyUI's LoadImage and several packs set `LOAD_TRUNCATED_IMAGES = True`, which silently fills a
    half-copied file with grey; a training set must name those files instead.
    """
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def is_image_file(path: pathlib.Path) -> bool:
    """An image by extension (any case); hidden files such as macOS '._x.png' resource forks are not."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def open_training_image(path: pathlib.Path | str, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """The image as training sees it: upright (EXIF applied), 8-bit RGB, transparency composited on white.

    `draft_size` (width, height after orientation) lets JPEGs decode at a reduced scale that is still at
    least that large, which is much faster for big photos that will be scaled down anyway.
    Raises UnreadableImage (a DatasetError) for corrupt, truncated, empty or oversized files.
    """
    path = pathlib.Path(path)
    with strict_decoding(), _open_checked(path) as image:
        orientation = read_orientation(image, path)
        if draft_size is not None:
            width, height = draft_size
            image.draft("RGB", (height, width) if orientation in (5, 6, 7, 8) else (width, height))
        try:
            image.load()
            upright = apply_orientation(to_rgb(image), orientation)
        except DECODE_ERRORS as error:
            raise _unreadable(path, error) from error
        # The file is closed on leaving this block, and a closed PIL image refuses every operation.
        return image.copy() if upright is image else upright


def inspect_image(path: pathlib.Path) -> ImageFacts:
    """Decode the whole file once (so truncation shows) and measure what the report needs.

    Raises UnreadableImage for zero-byte, corrupt, truncated and decompression-bomb sized files.
    """
    with strict_decoding(), _open_checked(path) as image:
        orientation = read_orientation(image, path)
        stored_width, stored_height = image.size
        mode, image_format = image.mode, image.format or path.suffix.lstrip(".").upper()
        # JPEGs decode at 1/2..1/8 scale here: the measures need a thumbnail, not 24 megapixels.
        image.draft("RGB", (ANALYSIS_SIDE * 2, ANALYSIS_SIDE * 2))
        try:
            image.load()
            alpha = _alpha_channel(image)
            thumbnail = to_rgb(image).resize((ANALYSIS_SIDE, ANALYSIS_SIDE), Image.Resampling.BOX)
        except DECODE_ERRORS as error:
            raise _unreadable(path, error) from error
    has_alpha = alpha is not None and alpha.getextrema()[0] < 255
    if orientation in (5, 6, 7, 8):
        stored_width, stored_height = stored_height, stored_width
    thumbnail = apply_orientation(thumbnail, orientation)
    return ImageFacts(
        width=stored_width,
        height=stored_height,
        mode=mode,
        format=image_format,
        orientation=orientation,
        has_alpha=has_alpha,
        perceptual_hash=perceptual_hash(thumbnail),
        colour_signature=colour_signature(thumbnail),
        flatness=flatness(thumbnail),
    )


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any mode PIL opens for our formats, without the classic conversion bugs.

    16-bit greyscale is scaled (PIL's own convert clips everything above 255 to white), palette and
    greyscale transparency go through RGBA, and transparent areas become white, not black.
    """
    if image.mode in SIXTEEN_BIT_MODES:
        values = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
        return Image.fromarray((values >> 8).astype(np.uint8)).convert("RGB")
    if image.mode in ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode == "RGB":
        return image
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def read_orientation(image: Image.Image, path: pathlib.Path) -> int:
    """The EXIF orientation (1..8); 1 when absent, invalid, or the EXIF block itself is damaged."""
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except DECODE_ERRORS as error:
        logger.warning("%s: unreadable EXIF block (%s); using the image as stored, unrotated", path, error)
        return 1
    return orientation if orientation in ORIENTATION_TRANSPOSE else 1


def apply_orientation(image: Image.Image, orientation: int) -> Image.Image:
    transpose = ORIENTATION_TRANSPOSE.get(orientation)
    return image if transpose is None else image.transpose(transpose)


def perceptual_hash(image: Image.Image) -> int:
    """pHash: signs of the lowest 8x8 DCT coefficients of a 32x32 grey thumbnail against their median.

    Survives resizing, re-encoding and small edits, so re-saved copies of one photo hash alike.
    """
    grey = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    dct = _DCT_32 @ grey @ _DCT_32.T
    low = dct[:HASH_SIZE, :HASH_SIZE].ravel()
    bits = low > np.median(low)
    return int("".join("1" if bit else "0" for bit in bits), 2)


def colour_signature(image: Image.Image) -> bytes:
    return image.resize((4, 4), Image.Resampling.BOX).tobytes()


def colour_distance(first: bytes, second: bytes) -> float:
    """Mean absolute difference (0..255) between two colour signatures."""
    return float(np.mean(np.abs(np.frombuffer(first, np.uint8).astype(np.int16) - np.frombuffer(second, np.uint8))))


def flatness(image: Image.Image) -> float:
    """Among neighbouring pixel pairs that are not an edge, the share that are exactly equal.

    Cel-shaded and flat digital art is made of identical fills (close to 1); photographs are smooth
    gradients and texture where neighbours differ a little (close to 0).
    """
    pixels = np.asarray(image, dtype=np.int16)
    difference = np.abs(pixels[:, 1:] - pixels[:, :-1]).max(axis=2)
    not_edge = difference < 16
    if not not_edge.any():
        return 0.0
    return float((difference[not_edge] == 0).mean())


def _dct_matrix(size: int) -> np.ndarray:
    """Orthonormal DCT-II matrix, so a 2-D DCT is `M @ x @ M.T`."""
    k = np.arange(size)[:, None]
    n = np.arange(size)[None, :]
    matrix = np.cos(np.pi * (2 * n + 1) * k / (2 * size)) * np.sqrt(2 / size)
    matrix[0] /= np.sqrt(2)
    return matrix


_DCT_32 = _dct_matrix(32)


def _alpha_channel(image: Image.Image) -> Image.Image | None:
    if image.mode in ALPHA_MODES or "transparency" in image.info:
        return image.convert("RGBA").getchannel("A")
    return None


@contextlib.contextmanager
def _open_checked(path: pathlib.Path):
    """Image.open with the failures users hit turned into UnreadableImage (header only, lazy)."""
    try:
        size = path.stat().st_size
    except OSError as error:
        raise UnreadableImage(path, "cannot be read", str(error)) from error
    if size == 0:
        raise UnreadableImage(path, "empty file (0 bytes)")
    try:
        image = Image.open(path)
    except Image.DecompressionBombError as error:
        raise UnreadableImage(path, "refused: too many pixels (decompression bomb guard)", str(error)) from error
    except DECODE_ERRORS as error:
        raise UnreadableImage(path, "not a readable image (corrupt, or another format)", str(error)) from error
    try:
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise UnreadableImage(
                path,
                f"refused: {width}x{height} is {width * height / 1e6:.0f} megapixels, over the "
                f"{MAX_PIXELS / 1e6:.0f} MP limit (decompression bomb guard); downscale it",
            )
        yield image
    finally:
        image.close()


def _unreadable(path: pathlib.Path, error: BaseException) -> UnreadableImage:
    message = str(error)
    if "truncated" in message or isinstance(error, EOFError):
        return UnreadableImage(path, "truncated (the file ends early; copy it again)", message)
    return UnreadableImage(path, "corrupt image data", message)
