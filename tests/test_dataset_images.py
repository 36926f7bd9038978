"""Training pixels come out right for the image files users really have."""
from __future__ import annotations

import pytest
from PIL import Image, ImageChops, ImageFile

from harness import runtime
from harness.datasets import draw_shape, make_problem_dataset

images = runtime.pack("trainer.data.images")
errors = runtime.pack("trainer.errors")


@pytest.fixture(scope="module")
def problems(tmp_path_factory):
    return make_problem_dataset(tmp_path_factory.mktemp("images"), size=128)


def pixel(path, xy):
    image = images.open_training_image(path)
    assert image.mode == "RGB"
    return image.getpixel(xy)


def close(actual, expected, tolerance=12):
    return all(abs(a - b) <= tolerance for a, b in zip(actual, expected, strict=True))


def test_cmyk_jpeg_becomes_the_same_rgb_colours(problems):
    red_square = draw_shape((128, 128), "square", "red", "white", 11)
    background = Image.new("RGB", (128, 128), (245, 245, 245))
    left, top, right, bottom = ImageChops.difference(red_square, background).getbbox()
    inside = ((left + right) // 2, (top + bottom) // 2)
    assert close(pixel(problems.files["cmyk"], inside), red_square.getpixel(inside))
    assert close(pixel(problems.files["cmyk"], (0, 0)), (245, 245, 245))


def test_16_bit_greyscale_is_scaled_not_clipped_to_white(problems):
    image = images.open_training_image(problems.files["grey16"])
    left, middle, right = (image.getpixel((x, 64))[0] for x in (0, 64, 127))
    assert left < 5 and 110 < middle < 145 and right > 250


def test_transparency_is_composited_on_white_not_black(problems):
    assert pixel(problems.files["alpha"], (2, 2)) == (255, 255, 255)  # fully transparent corner
    assert close(pixel(problems.files["alpha"], (64, 64)), (30, 60, 200), 2)  # opaque centre keeps its colour
    # 16-bit RGBA red at half opacity over white is pink.
    assert close(pixel(problems.files["rgba16"], (5, 5)), (255, 127, 127), 2)


def test_palette_image_keeps_its_colours(problems):
    original = draw_shape((128, 128), "triangle", "green", "yellow", 12)
    assert close(pixel(problems.files["palette"], (0, 0)), original.getpixel((0, 0)))


def test_exif_rotation_is_applied_to_size_and_pixels(problems):
    stored = draw_shape((192, 128), "bar", "purple", "white", 13)
    upright = images.open_training_image(problems.files["exif_rotated"])
    assert upright.size == (128, 192)  # stored landscape, tagged "rotate 90 CW"
    # Orientation 6: the stored left column becomes the top row.
    for y in range(0, 128, 16):
        assert close(upright.getpixel((127 - y, 0)), stored.getpixel((0, y)), 20)


def test_draft_size_decodes_big_jpegs_smaller_but_never_below_the_request(problems):
    full = images.open_training_image(problems.files["exif_rotated"])
    drafted = images.open_training_image(problems.files["exif_rotated"], draft_size=(60, 90))
    assert drafted.size[0] >= 60 and drafted.size[1] >= 90 and drafted.size[0] < full.size[0]
    assert drafted.size[0] / drafted.size[1] == pytest.approx(full.size[0] / full.size[1], rel=0.02)


@pytest.mark.parametrize("key, reason", [("zero_byte", "empty file"), ("corrupt", "not a readable image"),
                                         ("truncated", "truncated"), ("bomb", "decompression bomb")])
def test_unusable_files_raise_a_dataset_error_naming_the_file(problems, key, reason):
    with pytest.raises(errors.DatasetError) as raised:
        images.open_training_image(problems.files[key])
    assert reason in str(raised.value) and problems.files[key].name in str(raised.value)


def test_truncated_files_are_caught_even_when_another_pack_allows_them(problems, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # what several packs set at import
    with pytest.raises(images.UnreadableImage, match="truncated"):
        images.inspect_image(problems.files["truncated"])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # and it is left as the other pack wanted


def test_near_duplicates_share_a_perceptual_hash_and_different_images_do_not(problems):
    first = images.inspect_image(problems.files["duplicate_a"])
    resaved = images.inspect_image(problems.files["duplicate_b"])
    other = images.inspect_image(problems.files["good_2"])
    assert (first.perceptual_hash ^ resaved.perceptual_hash).bit_count() <= 4
    assert (first.perceptual_hash ^ other.perceptual_hash).bit_count() > 10


def test_flatness_tells_drawings_from_photographs(problems):
    assert images.inspect_image(problems.files["good_0"]).flatness > 0.9
    assert images.inspect_image(problems.files["photo_0"]).flatness < 0.1
