"""Load Dataset -> Auto Caption queued on a real ComfyUI server, as a user's workflow runs."""
from __future__ import annotations

import pytest

from harness.datasets import make_sample_dataset, make_tiny_wd14_tagger
from harness.server import ComfyServer


@pytest.mark.server
def test_workflow_loads_reports_and_captions_with_progress(tmp_path):
    base = tmp_path / "server"
    make_tiny_wd14_tagger(base / "models" / "captioners" / "wd-vit-tagger-v3")
    root = make_sample_dataset(base / "input" / "ｍｙ ｓｅｔ (日本語)", count=3, size=64, with_captions=False)
    prompt = {
        "1": {"class_type": "LoraLabLoadDataset",
              "inputs": {"path": root.name, "repeats": 2, "caption_extension": ".txt", "class_tokens": ""}},
        "2": {"class_type": "LoraLabAutoCaption",
              "inputs": {"dataset": ["1", 0], "captioner": "wd-vit-tagger-v3", "trigger_word": "ohwx",
                         "mode": "fill_missing", "exclude_tags": "", "general_threshold": 0.35,
                         "character_threshold": 0.85, "replace_underscores": True, "max_tags": 40}},
    }
    with ComfyServer(base) as server:
        assert "captioners" in server.get_json("/models")
        run = server.run(prompt, timeout=300)
        assert run.status == "success", (run.history, server.log_tail())
        report = run.outputs("1")["text"][0]
        assert report.startswith("Dataset: ") and "2_ohwx shape: 3 images x 2 repeats = 6" in report
        assert "WARNING: Images without a caption file" in report
        captions = run.outputs("2")["text"][0]
        assert "3 written" in captions
        progress = [event for event in run.events("progress") if event.get("node") == "2"]
        assert progress and progress[-1]["value"] == progress[-1]["max"] == 3
        # The folder changed on disk, so the next queue reloads it and finds nothing left to caption.
        second = server.run(prompt, timeout=300)
        assert "nothing to caption" in second.outputs("2")["text"][0]
        assert "WARNING: Images without a caption file" not in second.outputs("1")["text"][0]
    for index in range(3):
        caption = (root / "2_ohwx shape" / f"shape_{index:02d}.txt").read_text(encoding="utf-8")
        assert caption.startswith("ohwx, hatsune miku, ")
