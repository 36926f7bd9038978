"""Auto Caption runs real captioners (a tiny ONNX WD14 tagger, a tiny transformers BLIP) on a real
dataset, writes per mode, and never loses a caption."""
from __future__ import annotations

import gc
import pathlib
import time

import pytest
from PIL import Image

from harness import runtime
from harness.datasets import BLIP_WORDS, make_tiny_blip, make_tiny_florence, make_tiny_wd14_tagger

loader = runtime.pack("trainer.data.loading")
errors = runtime.pack("trainer.errors")

@pytest.fixture(scope="module")
def model_store(tmp_path_factory):
    """Tiny captioners under the names Auto Caption offers, built once per module."""
    store = tmp_path_factory.mktemp("captioners")
    make_tiny_wd14_tagger(store / "wd-vit-tagger-v3")
    make_tiny_blip(store / "blip-image-captioning-base")
    make_tiny_florence(store / "Florence-2-base")
    return store


@pytest.fixture
def captioners(model_store):
    """Make ComfyUI's "captioners" model folder the tiny store for one test."""
    import folder_paths

    saved = folder_paths.folder_names_and_paths.get("captioners")
    folder_paths.folder_names_and_paths["captioners"] = ([str(model_store)], set())
    yield model_store
    if saved is None:
        del folder_paths.folder_names_and_paths["captioners"]
    else:
        folder_paths.folder_names_and_paths["captioners"] = saved


@pytest.fixture
def colour_dataset(tmp_path):
    """kohya folder '3_ohwx': red.png and blue.png uncaptioned, kept.png with a Shift-JIS caption."""
    folder = tmp_path / "colours ｄａｔａ" / "3_ohwx"
    folder.mkdir(parents=True)
    Image.new("RGB", (80, 60), RED).save(folder / "red.png")
    Image.new("RGB", (60, 80), BLUE).save(folder / "blue.png")
    Image.new("RGB", (64, 64), RED).save(folder / "kept.png")
    (folder / "kept.txt").write_bytes("ohwx, 手書きのキャプション\n".encode("cp932"))
    return folder


RED, BLUE = (220, 30, 30), (30, 30, 220)


def snapshot(folder: pathlib.Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def load(folder: pathlib.Path):
    return loader.load_dataset(folder.parent, repeats=1).dataset


def run_caption(dataset, captioner="wd-vit-tagger-v3", **overrides):
    inputs = dict(dataset=dataset, captioner=captioner, trigger_word="", mode="fill_missing", exclude_tags="long hair",
                  general_threshold=0.35, character_threshold=0.85, replace_underscores=True, max_tags=40)
    inputs.update(overrides)
    return runtime.run_node("LoraLabAutoCaption", **inputs)


def captions_of(dataset):
    return {image.path.name: image.caption for image in dataset.images}


EXPECTED_RED = r"ohwx, hatsune miku, red theme, 1girl, star \(symbol\), ^_^"
EXPECTED_BLUE = r"ohwx, hatsune miku, blue theme, 1girl, star \(symbol\), ^_^"


def test_wd14_fill_missing_tags_only_uncaptioned_images_and_keeps_the_rest(captioners, colour_dataset):
    before = snapshot(colour_dataset)
    dataset, text = run_caption(load(colour_dataset))
    assert (colour_dataset / "red.txt").read_text(encoding="utf-8") == EXPECTED_RED + "\n"
    assert (colour_dataset / "blue.txt").read_text(encoding="utf-8") == EXPECTED_BLUE + "\n"
    assert (colour_dataset / "kept.txt").read_bytes() == before["kept.txt"]  # Shift-JIS original untouched
    assert captions_of(dataset) == {"red.png": EXPECTED_RED, "blue.png": EXPECTED_BLUE,
                                    "kept.png": "ohwx, 手書きのキャプション"}
    assert all(image.has_caption_file for image in dataset.images)
    assert "2 written" in text and "red.png: " + EXPECTED_RED in text
    assert not list(colour_dataset.glob("*.bak*")) and not list(colour_dataset.glob(".*.tmp"))
    # Nothing left to fill: a second run changes nothing.
    after_first = snapshot(colour_dataset)
    _, text = run_caption(load(colour_dataset))
    assert snapshot(colour_dataset) == after_first and "nothing to caption" in text


def test_wd14_overwrite_backs_up_every_replaced_caption_and_never_a_backup(captioners, colour_dataset):
    original = (colour_dataset / "kept.txt").read_bytes()
    run_caption(load(colour_dataset), mode="overwrite", trigger_word="sks")
    assert (colour_dataset / "kept.txt").read_text(encoding="utf-8") == EXPECTED_RED.replace("ohwx", "sks") + "\n"
    assert (colour_dataset / "kept.txt.bak").read_bytes() == original
    assert not (colour_dataset / "red.txt.bak").exists()  # there was nothing to back up
    # A second overwrite keeps the first backup and adds another; an identical caption is left alone.
    first_generation = (colour_dataset / "kept.txt").read_bytes()
    _, text = run_caption(load(colour_dataset), mode="overwrite", trigger_word="sks", max_tags=2)
    assert (colour_dataset / "kept.txt.bak").read_bytes() == original
    assert (colour_dataset / "kept.txt.bak2").read_bytes() == first_generation
    assert (colour_dataset / "kept.txt").read_text(encoding="utf-8") == "sks, hatsune miku, red theme\n"
    _, text = run_caption(load(colour_dataset), mode="overwrite", trigger_word="sks", max_tags=2)
    assert "3 unchanged" in text and not (colour_dataset / "kept.txt.bak3").exists()
    # Backups are not captions, images, or clutter to the loader.
    notices = loader.load_dataset(colour_dataset.parent, repeats=1).notices
    assert not [notice for notice in notices if notice.code in ("ignored_files", "orphan_caption")]


def test_memory_only_captions_everything_and_writes_nothing(captioners, colour_dataset):
    before = snapshot(colour_dataset)
    dataset, text = run_caption(load(colour_dataset), mode="memory_only", replace_underscores=False,
                                exclude_tags="1girl, Hatsune Miku")
    assert snapshot(colour_dataset) == before
    assert captions_of(dataset)["red.png"] == r"ohwx, red_theme, star_\(symbol\), ^_^, long_hair"
    assert captions_of(dataset)["kept.png"] == r"ohwx, red_theme, star_\(symbol\), ^_^, long_hair"
    assert not any(image.has_caption_file for image in dataset.images if image.path.name != "kept.png")
    assert "3 memory" in text and "missing" not in text.lower()


def test_trigger_word_is_deduplicated_against_tags_and_goes_first(captioners, colour_dataset):
    dataset, _ = run_caption(load(colour_dataset), trigger_word="Hatsune Miku", mode="memory_only")
    assert captions_of(dataset)["blue.png"] == r"Hatsune Miku, blue theme, 1girl, star \(symbol\), ^_^"


def test_progress_is_reported_per_image_and_cancel_stops_between_images(captioners, colour_dataset):
    import comfy.model_management
    import comfy.utils

    updates = []

    def hook(value, total, preview, node_id=None):
        updates.append((value, total))
        if value == 0:
            time.sleep(0.2)  # ComfyUI 0.33 drops updates less than 0.1 s after the previous one
        if value == 1:
            comfy.model_management.interrupt_current_processing(True)  # the user presses Cancel

    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            run_caption(load(colour_dataset), mode="overwrite")
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
        comfy.model_management.interrupt_current_processing(False)
    assert updates == [(0, 3), (1, 3)]
    written = sorted(path.name for path in colour_dataset.glob("*.txt"))
    assert written == ["blue.txt", "kept.txt"]  # first image (natural order: blue) done, the rest untouched
    assert (colour_dataset / "kept.txt").read_bytes() == "ohwx, 手書きのキャプション\n".encode("cp932")
    assert live_instances("InferenceSession") == 0  # unloaded although cancelled


def live_instances(class_name: str) -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if type(obj).__name__ == class_name)


def test_blip_captions_with_a_real_transformers_model_and_is_unloaded(captioners, colour_dataset):
    dataset, text = run_caption(load(colour_dataset), captioner="blip-image-captioning-base", trigger_word="ohwx")
    caption = (colour_dataset / "red.txt").read_text(encoding="utf-8").strip()
    first, sentence = caption.split(", ", 1)
    assert first == "ohwx"
    assert sentence.split() and set(sentence.split()) <= set(BLIP_WORDS)
    assert captions_of(dataset)["red.png"] == caption
    assert (colour_dataset / "kept.txt").read_bytes() == "ohwx, 手書きのキャプション\n".encode("cp932")
    assert "2 written" in text
    assert live_instances("BlipForConditionalGeneration") == 0


def test_florence2_captions_with_a_real_transformers_model_and_is_unloaded(captioners, colour_dataset):
    _, text = run_caption(load(colour_dataset), captioner="Florence-2-base", mode="overwrite", trigger_word="ohwx")
    caption = (colour_dataset / "blue.txt").read_text(encoding="utf-8").strip()
    first, sentence = caption.split(", ", 1)
    assert first == "ohwx" and sentence and set(sentence) <= set("abcdefghijklmnopqrstuvwxyz .")
    assert (colour_dataset / "kept.txt.bak").read_bytes() == "ohwx, 手書きのキャプション\n".encode("cp932")
    assert "2 written, 1 replaced" in text
    assert live_instances("Florence2ForConditionalGeneration") == 0


def test_regularization_images_are_left_alone_unless_asked(captioners, colour_dataset, tmp_path):
    regularization = tmp_path / "reg" / "1_woman"
    regularization.mkdir(parents=True)
    Image.new("RGB", (64, 64), BLUE).save(regularization / "reg.png")
    dataset = loader.load_dataset(colour_dataset.parent, repeats=1, regularization_root=regularization.parent).dataset
    run_caption(dataset, mode="memory_only")
    captioned, _ = run_caption(dataset, mode="memory_only", include_regularization=True)
    assert captions_of(captioned)["reg.png"] == EXPECTED_BLUE.replace("ohwx", "woman")
    run_caption(dataset)
    assert not (regularization / "reg.txt").exists()


def test_long_tag_captions_are_reported_after_captioning(captioners, colour_dataset):
    _, text = run_caption(load(colour_dataset), mode="memory_only", trigger_word=", ".join(["word"] * 80))
    assert "WARNING: Captions longer than 75 CLIP tokens" in text


def test_bad_settings_and_unknown_captioners_are_user_errors(captioners, colour_dataset):
    with pytest.raises(errors.SettingsError, match="general_threshold"):
        run_caption(load(colour_dataset), general_threshold=1.5)
    with pytest.raises(errors.CaptionerError, match="Unknown captioner 'nope'"):
        run_caption(load(colour_dataset), captioner="nope")
