"""The dataset report counts right and names every problem, in text and in structured form."""
from __future__ import annotations

import pytest

from harness import models, runtime
from harness.datasets import make_problem_dataset, make_sample_dataset

buckets = runtime.pack("trainer.data.buckets")
loader = runtime.pack("trainer.data.loading")
report_module = runtime.pack("trainer.data.report")
findings = runtime.pack("trainer.data.findings")
kohya_summary = runtime.pack("trainer.data.kohya_summary")
tokens = runtime.pack("trainer.data.tokens")


@pytest.fixture(scope="module")
def problems(tmp_path_factory):
    return make_problem_dataset(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def node_output(problems):
    return runtime.run_node("LoraLabLoadDataset", path=str(problems.root), repeats=3, caption_extension=".txt",
                            class_tokens="", batch_size=2)


@pytest.fixture(scope="module")
def report(problems):
    loaded = loader.load_dataset(problems.root, repeats=3)
    return report_module.build_report(loaded, batch_size=2)


def warning_lines(text):
    return [line for line in text.splitlines() if line.startswith("WARNING: ")]


def test_node_report_names_every_problem_on_a_warning_line(problems, node_output):
    _, text = node_output
    assert node_output.ui == {"text": [text]}
    warnings = "\n".join(warning_lines(text))
    for key in ("zero_byte", "corrupt", "truncated", "bomb", "long_caption", "no_caption", "small", "gif",
                "duplicate_a", "duplicate_b", "no_trigger", "photo_0"):
        assert problems.files[key].name in warnings, key
    assert "sjis.txt" in warnings and "Shift-JIS" in warnings
    assert "'backup'" in warnings
    notes = "\n".join(line for line in text.splitlines() if line.startswith("NOTE: "))
    for key, label in (("cmyk", "CMYK"), ("grey16", "16-bit"), ("palette", "palette")):
        assert f"{problems.files[key].name} ({label})" in notes
    assert problems.files["exif_rotated"].name in notes and problems.files["alpha"].name in notes


def test_report_counts_folders_repeats_and_steps(problems, node_output, report):
    _, text = node_output
    main, second = problems.usable_main, problems.usable_second
    assert f"5_ｏｈｗｘ　少女: {main} images x 5 repeats = {main * 5}" in text
    assert f"2_背景 scenery: {second} images x 2 repeats = {second * 2}" in text
    assert report.training_images == main + second
    assert report.steps_per_epoch == buckets.steps_per_epoch(
        report_module.epoch_buckets(loader.load_dataset(problems.root, repeats=3).dataset), 2)
    assert f"at batch size 2; 10 epochs = {report.steps_per_epoch * 10} steps" in text
    assert sum(report.bucket_counts.values()) == main + second
    assert "Buckets (64 px steps, sides 256-1024): 512x512:" in text


def test_structured_findings_carry_the_paths(problems, report):
    by_code = {}
    for finding in report.findings:
        by_code.setdefault(finding.code, set()).update(finding.paths)
    expected = {
        "unreadable_image": {problems.files[key] for key in problems.unreadable},
        "long_caption": {problems.files["long_caption"]},
        "missing_caption": {problems.files["no_caption"]},
        "small_image": {problems.files["small"]},
        "duplicate": {problems.files["duplicate_a"], problems.files["duplicate_b"]},
        "trigger_missing": {problems.files["no_caption"], problems.files["no_trigger"]},
        "mixed_styles": {problems.files["photo_0"], problems.files["photo_1"], problems.files["photo_2"],
                         problems.files["grey16"]},
        "caption_encoding": {problems.files["sjis"].with_suffix(".txt")},
        "exif_rotated": {problems.files["exif_rotated"]},
        "transparency": {problems.files["alpha"], problems.files["rgba16"]},
    }
    for code, paths in expected.items():
        assert by_code.get(code) == paths, code
    assert not {"few_images", "too_many_steps"} & report.codes


def test_long_captions_are_counted_with_comfyuis_clip_tokenizer(problems, report):
    count = tokens.clip_token_counter()
    assert count("a photo of a cat") == 5
    assert count("(cat:1.3), dog") == 3  # weights are syntax, not tokens: cat , dog
    assert count(r"\(cat\)") == 3  # escaped parentheses are real tokens
    long_caption = problems.files["long_caption"].with_suffix(".txt").read_text(encoding="utf-8")
    assert count(long_caption) > findings.TOKEN_LIMIT
    assert f"long.png ({count(long_caption)})" in next(f.message for f in report.findings if f.code == "long_caption")


def test_connected_model_and_clip_set_the_resolution_and_tokenizer(tmp_path):
    bundle = models.FAMILIES["sd15"]()
    root = make_sample_dataset(tmp_path / "with model", count=3, size=64)
    dataset, text = runtime.run_node("LoraLabLoadDataset", path=str(root), repeats=1, caption_extension=".txt",
                                     class_tokens="", model=bundle.model, clip=bundle.clip)
    assert dataset.base_resolution == 512
    assert "Resolution: 512 px (native size of the connected sd15 model)" in text
    counter = tokens.clip_token_counter(bundle.clip)
    assert counter("a photo of a cat, (red:1.2)") == tokens.clip_token_counter()("a photo of a cat, (red:1.2)")
    dataset, text = runtime.run_node("LoraLabLoadDataset", path=str(root), repeats=1, caption_extension=".txt",
                                     class_tokens="", base_resolution=768, model=bundle.model)
    assert dataset.base_resolution == 768 and "768 px (set on the node)" in text


def test_base_resolution_follows_the_connected_models_bucket_grid(tmp_path):
    """The toy world buckets in 8 px steps, SD models in 64 px: a size off the model's grid is refused by name."""
    root = make_sample_dataset(tmp_path / "set", count=2, size=32)
    toy_model = runtime.run_node("LoraLabLoadDemoModel")[0]
    dataset, text = runtime.run_node("LoraLabLoadDataset", path=str(root), repeats=1, caption_extension=".txt",
                                     class_tokens="", base_resolution=40, model=toy_model)
    assert dataset.base_resolution == 40 and "Buckets (8 px steps" in text
    errors = runtime.pack("trainer.errors")
    with pytest.raises(errors.DatasetError, match="base_resolution 40 must be a multiple of 64"):
        runtime.run_node("LoraLabLoadDataset", path=str(root), repeats=1, caption_extension=".txt", class_tokens="",
                         base_resolution=40, model=models.FAMILIES["sd15"]().model)


def test_a_clean_dataset_gets_no_warnings(tmp_path):
    root = make_sample_dataset(tmp_path / "clean", count=20, size=256, repeats=10)
    loaded = loader.load_dataset(root, repeats=1, base_resolution=256)
    report = report_module.build_report(loaded, epochs=10, trigger_word="ohwx")
    assert report.warnings == [], report.text()
    assert "No problems found." in report.text()
    assert report.steps_per_epoch == 200 and report.total_steps == 2000


def test_advice_for_few_images_and_too_many_steps(tmp_path):
    root = make_sample_dataset(tmp_path / "tiny", count=5, size=256, repeats=40)
    loaded = loader.load_dataset(root, repeats=1, base_resolution=256)
    report = report_module.build_report(loaded, epochs=10, batch_size=4)
    assert {"few_images", "too_many_steps"} <= report.codes
    text = report.text()
    assert "WARNING: Training images: only 5." in text
    assert "seen about 400 times" in text
    assert report.steps_per_epoch == 50  # 5 images x 40 repeats in one bucket, 4 per batch


def test_trigger_word_coverage_names_the_captions_without_it(tmp_path):
    root = make_sample_dataset(tmp_path / "trigger", count=4, size=64)
    folder = root / "2_ohwx shape"
    (folder / "shape_02.txt").write_text("blue circle, plain", encoding="utf-8")
    loaded = loader.load_dataset(root, repeats=1, base_resolution=64)
    report = report_module.build_report(loaded, trigger_word="OHWX")
    finding = next(f for f in report.findings if f.code == "trigger_missing")
    assert finding.paths == (folder / "shape_02.png",) and "'OHWX' (1 of 4)" in finding.message


def test_regularization_images_count_in_steps_and_kohya_summary_lists_folders(tmp_path):
    root = make_sample_dataset(tmp_path / "train", count=3, size=64, repeats=4)
    regularization = make_sample_dataset(tmp_path / "reg", count=5, size=64, repeats=1, name="shape", trigger="shape")
    loaded = loader.load_dataset(root, repeats=1, regularization_root=regularization, base_resolution=64)
    assert buckets.steps_per_epoch(report_module.epoch_buckets(loaded.dataset), 1) == 3 * 4 + 5 * 1
    assert buckets.steps_per_epoch(report_module.epoch_buckets(loaded.dataset), 4) == 5  # 17 samples in one bucket
    summary = kohya_summary.kohya_dataset_summary(loaded.dataset)
    assert summary["dataset_dirs"] == {"4_ohwx shape": {"n_repeats": 4, "img_count": 3}}
    assert summary["reg_dataset_dirs"] == {"1_shape": {"n_repeats": 1, "img_count": 5}}
    assert summary["num_train_images"] == 12 and summary["num_reg_images"] == 5
    text = report_module.build_report(loaded).text()
    assert "1_shape (regularization): 5 images x 1 repeats = 5" in text
    assert "3 images, 12 + 5 regularization image repeats per epoch -> 17 steps per epoch" in text
    assert summary["tag_frequency"]["4_ohwx shape"]["ohwx"] == 3
