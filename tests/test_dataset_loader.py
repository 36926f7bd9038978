"""Load Dataset reads users' folders as kohya would, and names every file it could not use."""
from __future__ import annotations

import os
import pathlib

import pytest

from harness import runtime
from harness.datasets import make_problem_dataset, make_sample_dataset

loader = runtime.pack("trainer.data.loading")
errors = runtime.pack("trainer.errors")
dataset_types = runtime.pack("trainer.data.dataset")


@pytest.fixture(scope="module")
def problems(tmp_path_factory):
    return make_problem_dataset(tmp_path_factory.mktemp("loader"), size=128)


@pytest.fixture(scope="module")
def loaded(problems):
    return loader.load_dataset(problems.root, repeats=3, class_tokens="unused for kohya folders")


def by_key(problems, loaded):
    images = {image.path: image for image in loaded.dataset.images}
    return {key: images[path] for key, path in problems.files.items() if path in images}


def test_problem_dataset_loads_every_readable_image_with_its_folders_repeats(problems, loaded):
    assert loaded.layout == "kohya"
    assert [folder.name for folder in loaded.folders] == ["2_背景 scenery", "5_ｏｈｗｘ　少女"]
    assert loaded.image_counts == {problems.second_folder: problems.usable_second,
                                   problems.main_folder: problems.usable_main}
    images = by_key(problems, loaded)
    assert {image.repeats for image in images.values() if image.folder == "5_ｏｈｗｘ　少女"} == {5}
    assert {image.repeats for image in images.values() if image.folder == "2_背景 scenery"} == {2}
    assert isinstance(loaded.dataset, dataset_types.LoraDataset)
    assert all(isinstance(image, dataset_types.DatasetImage) for image in loaded.dataset.images)
    assert "ignored" not in images  # backup/ is not an N_name folder


def test_unreadable_files_are_skipped_and_named_with_the_reason(problems, loaded):
    skipped = {item.path: item.reason for item in loaded.skipped}
    assert set(skipped) == {problems.files[key] for key in problems.unreadable}
    assert "empty file" in skipped[problems.files["zero_byte"]]
    assert "truncated" in skipped[problems.files["truncated"]]
    assert "decompression bomb" in skipped[problems.files["bomb"]]
    assert "not a readable image" in skipped[problems.files["corrupt"]]


def test_captions_decode_from_shift_jis_and_bom_and_use_the_first_line(problems, loaded):
    images = by_key(problems, loaded)
    assert images["sjis"].caption == "ohwx, 猫耳, 制服, 笑顔"
    assert images["bom"].caption == "ohwx, ring, yellow background"  # BOM and CRLF gone
    encoding_notices = [n for n in loaded.notices if n.code == "caption_encoding"]
    assert [n.paths for n in encoding_notices] == [(problems.files["sjis"].with_suffix(".txt"),)]
    assert "Shift-JIS" in encoding_notices[0].message


def test_uncaptioned_image_trains_with_the_full_width_folder_class_tokens(problems, loaded):
    image = by_key(problems, loaded)["no_caption"]
    assert image.caption == "ｏｈｗｘ　少女" and image.class_tokens == "ｏｈｗｘ　少女"
    assert not image.has_caption_file
    assert image.caption_path == problems.files["no_caption"].with_suffix(".txt")


def test_sizes_are_after_exif_rotation_and_alpha_is_flagged(problems, loaded):
    images = by_key(problems, loaded)
    assert (images["exif_rotated"].width, images["exif_rotated"].height) == (128, 192)
    assert images["alpha"].has_alpha and images["rgba16"].has_alpha
    assert not images["good_0"].has_alpha


def test_layout_notices_name_ignored_folders_files_and_formats(problems, loaded):
    notices = {notice.code: notice for notice in loaded.notices}
    assert notices["ignored_folder"].paths == (problems.root / "backup",)
    assert notices["unsupported_format"].paths == (problems.files["gif"],)
    # Counted, not named: the report (sent to any client) lists only images and captions.
    assert notices["ignored_files"].severity == "note" and "(1)" in notices["ignored_files"].message
    assert "notes.md" not in notices["ignored_files"].message


def test_flat_folder_uses_the_repeats_and_class_tokens_inputs(tmp_path):
    root = make_sample_dataset(tmp_path / "flat", count=3) / "2_ohwx shape"
    (root / "shape_01.txt").unlink()
    loaded = loader.load_dataset(root, repeats=7, class_tokens="ohwx token")
    assert loaded.layout == "flat"
    assert {image.repeats for image in loaded.dataset.images} == {7}
    assert {image.folder for image in loaded.dataset.images} == {""}
    uncaptioned = [image for image in loaded.dataset.images if not image.has_caption_file]
    assert [image.caption for image in uncaptioned] == ["ohwx token"]


def test_caption_extension_setting_is_honoured_and_the_other_one_hinted(tmp_path):
    root = make_sample_dataset(tmp_path / "ext", count=2)
    loaded = loader.load_dataset(root, repeats=1, caption_extension=".caption")
    assert not any(image.has_caption_file for image in loaded.dataset.images)
    hint = next(notice for notice in loaded.notices if notice.code == "other_caption_extension")
    assert "caption_extension to .txt" in hint.message
    for image in loaded.dataset.images:
        image.path.with_suffix(".txt").rename(image.path.with_suffix(".caption"))
    recaptioned = loader.load_dataset(root, repeats=1, caption_extension=".caption")
    assert all(image.caption.startswith("ohwx, ") for image in recaptioned.dataset.images)


def test_regularization_folder_is_read_with_the_same_layout_and_marked(tmp_path):
    root = make_sample_dataset(tmp_path / "train", count=3)
    regularization = make_sample_dataset(tmp_path / "reg", count=4, repeats=1, name="shape", trigger="shape")
    loaded = loader.load_dataset(root, repeats=1, regularization_root=regularization)
    assert len(loaded.dataset.training_images) == 3
    assert len(loaded.dataset.regularization_images) == 4
    assert all(image.class_tokens == "shape" for image in loaded.dataset.regularization_images)


@pytest.mark.parametrize("case", ["missing", "empty", "unnamed_subfolders", "file"])
def test_unusable_folder_errors_name_the_path_and_show_the_layout(tmp_path, case):
    path = tmp_path / "my dataset ｆｕｌｌ"
    if case == "empty":
        path.mkdir()
    elif case == "unnamed_subfolders":
        make_sample_dataset(tmp_path / "tmp", count=1)
        (tmp_path / "tmp").rename(path)
        (path / "2_ohwx shape").rename(path / "cats")
    elif case == "file":
        path.write_text("x")
    with pytest.raises(errors.DatasetError) as raised:
        loader.load_dataset(path, repeats=1)
    message = str(raised.value)
    assert str(path) in message and "N_name" in message and "10_ohwx woman" in message
    if case == "unnamed_subfolders":
        assert "cats" in message and "10_cats" in message


def test_folder_of_only_broken_images_lists_each_failure(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"")
    (folder / "b.jpg").write_bytes(b"garbage")
    with pytest.raises(errors.DatasetError) as raised:
        loader.load_dataset(folder, repeats=1)
    assert "a.png: empty file" in str(raised.value) and "b.jpg: not a readable image" in str(raised.value)


def test_relative_paths_resolve_inside_comfyui_input_folder(comfy_dirs):
    make_sample_dataset(comfy_dirs["input"] / "my set (1)", count=2)
    roots = runtime.pack("trainer.data.roots")
    assert roots.resolve_dataset_path('  "my set (1)" ', comfy_dirs["input"], roots.comfy_dataset_roots()) == comfy_dirs["input"] / "my set (1)"
    result = runtime.run_node("LoraLabLoadDataset", path="my set (1)", repeats=1, caption_extension=".txt",
                              class_tokens="")
    dataset, report = result
    assert len(dataset.images) == 2 and dataset.root == comfy_dirs["input"] / "my set (1)"
    assert result.ui == {"text": [report]} and dataset.report == report


def test_is_changed_follows_caption_edits_on_disk(tmp_path):
    root = make_sample_dataset(tmp_path / "watched", count=2)
    node = runtime.boot().NODE_CLASS_MAPPINGS["LoraLabLoadDataset"]
    before = node.IS_CHANGED(path=str(root), regularization_path="")
    assert node.IS_CHANGED(path=str(root), regularization_path="") == before
    caption = root / "2_ohwx shape" / "shape_00.txt"
    caption.write_text("ohwx, edited caption", encoding="utf-8")
    os.utime(caption, ns=(caption.stat().st_atime_ns, caption.stat().st_mtime_ns + 5_000_000_000))
    assert node.IS_CHANGED(path=str(root), regularization_path="") != before


def test_sample_dataset_is_a_kohya_folder_of_captioned_shapes(tmp_path):
    root = make_sample_dataset(tmp_path / "sample", count=5, size=48, repeats=3)
    loaded = loader.load_dataset(root, repeats=1)
    assert [folder.name for folder in loaded.folders] == ["3_ohwx shape"]
    assert len(loaded.dataset.images) == 5 and not loaded.skipped
    assert all(image.caption.startswith("ohwx, ") and (image.width, image.height) == (48, 48)
               for image in loaded.dataset.images)
    assert isinstance(loaded.dataset.images[0].path, pathlib.Path)
