"""Cancel stops Save LoRA, Auto Caption and an early Train LoRA at the next file, saying what was written; Auto
Caption never writes through a link out of the dataset roots and never leaves an empty .bak on a full disk."""
from __future__ import annotations

import logging
import pathlib

import pytest

from harness import models, runtime, training_data
from harness.datasets import make_sample_dataset, make_tiny_wd14_tagger
from harness.small_disk import SmallDisk

errors = runtime.pack("trainer.errors")


@pytest.fixture
def stop_flag_cleared():
    import comfy.model_management

    yield comfy.model_management
    assert not comfy.model_management.processing_interrupted(), "the node must clear ComfyUI's stop flag"
    comfy.model_management.interrupt_current_processing(False)


class StopAfterFirst(logging.Handler):
    """Presses ComfyUI's stop button when the first record matching `text` is logged."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def emit(self, record: logging.LogRecord) -> None:
        import comfy.model_management

        if self.text in record.getMessage():
            comfy.model_management.interrupt_current_processing(True)


def test_save_lora_stops_at_the_next_file_and_says_what_was_written(comfy_dirs, stop_flag_cleared, caplog):
    from test_lora_files import small_lora

    handler = StopAfterFirst("Saved epoch")
    logging.getLogger().addHandler(handler)
    try:
        with caplog.at_level(logging.INFO), pytest.raises(stop_flag_cleared.InterruptProcessingException):
            runtime.run_node("LoraLabSaveLoRA", lora=small_lora(epochs=(2, 4, 6)), filename_prefix="cut/dog",
                             epochs="all", dtype="fp16", overwrite=False)
    finally:
        logging.getLogger().removeHandler(handler)
    assert sorted(path.name for path in (comfy_dirs["loras"] / "cut").iterdir()) == ["dog-000002.safetensors"]
    assert "Save LoRA cancelled; written: cut/dog-000002.safetensors" in caplog.text.replace("\\", "/")


@pytest.fixture
def captioners(tmp_path_factory):
    import folder_paths

    store = tmp_path_factory.mktemp("captioners")
    make_tiny_wd14_tagger(store / "wd-vit-tagger-v3")
    saved = folder_paths.folder_names_and_paths.get("captioners")
    folder_paths.folder_names_and_paths["captioners"] = ([str(store)], set())
    yield store
    folder_paths.folder_names_and_paths["captioners"] = saved


def caption(dataset, mode: str):
    return runtime.run_node("LoraLabAutoCaption", dataset=dataset, captioner="wd-vit-tagger-v3", trigger_word="ohwx",
                            mode=mode, exclude_tags="", general_threshold=0.35, character_threshold=0.85,
                            replace_underscores=True, max_tags=40)


def load(path: str):
    return runtime.run_node("LoraLabLoadDataset", path=path, repeats=1, caption_extension=".txt", class_tokens="")[0]


def test_auto_caption_stops_at_the_next_image_and_says_what_was_written(comfy_dirs, captioners, stop_flag_cleared,
                                                                       caplog, monkeypatch):
    import comfy.utils

    # Current ComfyUI throttles progress updates to one per 100 ms; every update is wanted here.
    monkeypatch.setattr(comfy.utils, "PROGRESS_THROTTLE_MIN_INTERVAL", 0.0, raising=False)

    root = make_sample_dataset(comfy_dirs["input"] / "set", count=3, with_captions=False)

    def stop_after_first(value, total, preview, node_id=None):
        if value == 1:
            stop_flag_cleared.interrupt_current_processing(True)

    comfy.utils.set_progress_bar_global_hook(stop_after_first)
    try:
        with caplog.at_level(logging.WARNING), pytest.raises(stop_flag_cleared.InterruptProcessingException):
            caption(load("set"), "fill_missing")
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    written = sorted(path.name for path in root.rglob("*.txt"))
    assert written == ["shape_00.txt"]
    assert (root / "2_ohwx shape" / "shape_00.txt").read_text(encoding="utf-8").startswith("ohwx, ")
    assert "Auto Caption cancelled after 1 of 3 images" in caplog.text and "1 written" in caplog.text


def test_auto_caption_never_writes_or_reads_through_a_link_out_of_the_roots(comfy_dirs, captioners, tmp_path,
                                                                           monkeypatch):
    monkeypatch.setenv("LORALAB_DATASET_ROOTS", "")  # only ComfyUI's input folder
    outside = tmp_path / "outside.txt"
    outside.write_text("someone else's file")
    root = make_sample_dataset(comfy_dirs["input"] / "set", count=2, with_captions=False)
    link = root / "2_ohwx shape" / "shape_01.txt"
    link.symlink_to(outside)
    _, text = caption(load("set"), "fill_missing")
    assert outside.read_text() == "someone else's file" and link.is_symlink()
    assert "shape_01.png: ohwx shape  [not captioned: the image or its caption file leads outside the dataset roots]" in text
    assert "someone else's file" not in text
    assert (root / "2_ohwx shape" / "shape_00.txt").is_file()


def test_auto_caption_overwrite_on_a_full_disk_leaves_no_empty_backup(comfy_dirs, captioners):
    folder = comfy_dirs["input"] / "full"
    with SmallDisk(folder, megabytes=4) as disk:
        root = make_sample_dataset(folder / "set", count=2)
        captions = {path: path.read_bytes() for path in root.rglob("*.txt")}
        dataset = load("full/set")
        disk.fill()
        with pytest.raises(errors.DiskFull, match="No space left on the disk of"):
            caption(dataset, "overwrite")
        assert {path: path.read_bytes() for path in root.rglob("*.txt")} == captions
        assert not list(root.rglob("*.bak*")) and not [p for p in root.rglob("*") if p.name.endswith(".partial")]


def test_a_cancel_before_the_first_save_says_nothing_could_be_saved(tmp_path, comfy_dirs, stop_flag_cleared, caplog):
    import comfy.model_management

    bundle = models.FAMILIES["sd15"]()
    dataset = training_data.captioned_shapes(tmp_path / "data", count=2)

    def cancel_while_encoding(module, args, output):
        raise comfy.model_management.InterruptProcessingException()  # as ComfyUI's layers raise on GPU

    handle = bundle.vae.first_stage_model.encoder.register_forward_hook(cancel_while_encoding)
    try:
        with caplog.at_level(logging.WARNING), pytest.raises(comfy.model_management.InterruptProcessingException):
            runtime.run_node("LoraLabTrainLoRA", **training_data.node_inputs(bundle, dataset, epochs=1))
    finally:
        handle.remove()
    assert "nothing could be saved yet" in caplog.text and "resume_from to" not in caplog.text
    state_root = pathlib.Path(comfy_dirs["output"]) / "loralab" / "training_state"
    assert not state_root.exists() or not any(state_root.iterdir())
