"""Load Dataset reads only ComfyUI's input folder and the dataset roots the user declared, never through a link
leading out, and its report names files relative to their root, listing only images and captions."""
from __future__ import annotations

import os
import pathlib

import pytest

from harness import runtime
from harness.datasets import make_sample_dataset

errors = runtime.pack("trainer.errors")
dataset_roots = runtime.pack("trainer.data.roots")

SECRET_CAPTION = "the secret caption text"


@pytest.fixture
def outside(tmp_path, monkeypatch) -> pathlib.Path:
    """A dataset that is not in any root: this test declares only its own `declared` folder."""
    declared = tmp_path / "declared"
    declared.mkdir()
    monkeypatch.setenv("LORALAB_DATASET_ROOTS", str(declared))
    secret = make_sample_dataset(tmp_path / "private", count=2, name="secret_name_subject")
    (secret / "2_secret_name_subject" / "shape_00.txt").write_text(SECRET_CAPTION)
    (secret / "2_secret_name_subject" / "passwords.md").write_text("hunter2")
    return secret


def load(path: str, **inputs):
    return runtime.run_node("LoraLabLoadDataset", path=path, repeats=1, caption_extension=".txt", class_tokens="",
                            **inputs)


def refusal(path: str, **inputs) -> str:
    with pytest.raises(errors.DatasetError) as raised:
        load(path, **inputs)
    return str(raised.value)


def test_paths_outside_the_roots_are_refused_naming_the_roots_and_how_to_declare_one(outside, comfy_dirs, tmp_path):
    (comfy_dirs["input"] / "link_out").symlink_to(outside, target_is_directory=True)
    make_sample_dataset(comfy_dirs["input"] / "mine", count=2)
    for path in (str(outside), "../../private", "mine/../../../private", "link_out", f"{comfy_dirs['input']}/../../private"):
        message = refusal(path)
        assert "outside the folders datasets may be read from" in message
        assert str(tmp_path / "declared") in message and "LORALAB_DATASET_ROOTS" in message
        assert "loralab_datasets" in message and "extra_model_paths.yaml" in message
        assert "secret_name" not in message and "shape_00" not in message and SECRET_CAPTION not in message
    message = refusal("mine", regularization_path=str(outside))
    assert message.startswith("regularization_path ")


def test_a_missing_folder_outside_the_roots_is_refused_like_an_existing_one(outside, tmp_path):
    """The answer must not tell a client whether a path exists on the server."""
    first, second = refusal(str(outside)), refusal(str(tmp_path / "no such folder"))
    assert first.replace(str(outside), "X") == second.replace(str(tmp_path / "no such folder"), "X")


def test_declared_roots_are_read(outside, monkeypatch, tmp_path):
    import folder_paths

    monkeypatch.setenv("LORALAB_DATASET_ROOTS", os.pathsep.join([str(tmp_path / "declared"), str(outside.parent)]))
    dataset, report = load(str(outside))
    assert len(dataset.images) == 2 and report.startswith(f"Dataset: {tmp_path.name}/private (kohya layout)")

    monkeypatch.setenv("LORALAB_DATASET_ROOTS", "")
    assert "outside" in refusal(str(outside))
    saved = folder_paths.folder_names_and_paths.get("loralab_datasets")
    folder_paths.add_model_folder_path("loralab_datasets", str(outside.parent))  # what extra_model_paths.yaml does
    try:
        assert len(load(str(outside))[0].images) == 2
    finally:
        if saved is None:
            del folder_paths.folder_names_and_paths["loralab_datasets"]
        else:
            folder_paths.folder_names_and_paths["loralab_datasets"] = saved


def test_links_inside_a_root_that_lead_out_are_skipped_and_not_listed(outside, comfy_dirs):
    root = make_sample_dataset(comfy_dirs["input"] / "mine", count=2)
    folder = root / "2_ohwx shape"
    secret_folder = outside / "2_secret_name_subject"
    (folder / "borrowed.png").symlink_to(secret_folder / "shape_01.png")
    (folder / "shape_01.txt").unlink()
    (folder / "shape_01.txt").symlink_to(secret_folder / "shape_00.txt")
    (root / "3_linked").symlink_to(secret_folder, target_is_directory=True)
    (folder / "inside.png").symlink_to(folder / "shape_00.png")  # a link that stays inside is fine
    dataset, report = load("mine")
    assert sorted(image.path.name for image in dataset.images) == ["inside.png", "shape_00.png", "shape_01.png"]
    assert all(SECRET_CAPTION not in image.caption for image in dataset.images)
    assert "Links leading outside the dataset roots were skipped (2): 2_ohwx shape/borrowed.png, 2_ohwx shape/shape_01.txt" in report
    assert "(1): mine/3_linked" in report
    assert SECRET_CAPTION not in report and "secret_name" not in report and "hunter2" not in report
    assert str(comfy_dirs["input"]) not in report and report.startswith("Dataset: input/mine (kohya layout)")


def test_the_report_lists_only_images_and_captions_and_never_the_server_path(comfy_dirs):
    root = make_sample_dataset(comfy_dirs["input"] / "mine", count=2)
    folder = root / "2_ohwx shape"
    (folder / "tax_return_2024.pdf").write_bytes(b"%PDF")
    (folder / "shape_01.txt").write_bytes(b"\x00\x01binary\xff\xfe garbage, private bytes")
    dataset, report = load("mine")
    assert "tax_return" not in report and "Files that are neither images nor captions were ignored (1)" in report
    assert [image.path.name for image in dataset.images] == ["shape_00.png"]
    assert "Skipped 2_ohwx shape/shape_01.png: its caption file shape_01.txt is not text" in report
    assert "private bytes" not in report and "garbage" not in report
    assert str(comfy_dirs["input"]) not in report and str(root) not in report
    with pytest.raises(errors.DatasetError) as raised:
        load("mine/2_ohwx shape/shape_00.png")
    assert str(comfy_dirs["input"]) not in str(raised.value) and "input/mine/2_ohwx shape/shape_00.png" in str(raised.value)


def test_the_headless_escape_hatch_reads_any_path(outside):
    loader = runtime.pack("trainer.data.loading")
    path = dataset_roots.resolve_dataset_path(str(outside), "/nonexistent-input", None)
    assert len(loader.load_dataset(path, repeats=1).dataset.images) == 2
