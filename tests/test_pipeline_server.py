"""The user's pipeline on a real server: Load Dataset -> Auto Caption -> Train LoRA -> KSampler in one graph."""
from __future__ import annotations

import shutil

import pytest

from harness import models
from harness.datasets import make_sample_dataset, make_tiny_wd14_tagger
from harness.server import ComfyServer

CHECKPOINT = "random-sd15.safetensors"


def train_inputs(**overrides):
    inputs = {
        "model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2], "dataset": ["3", 0], "network": "LoRA", "rank": 4,
        "alpha": 0.0, "conv_rank": 4, "conv_alpha": 0.0, "epochs": 1, "batch_size": 1, "gradient_accumulation": 2,
        "resolution": 64, "unet_lr": 1e-4, "text_encoder_lr": 0.0, "optimizer": "AdamW", "lr_scheduler": "constant",
        "warmup_steps": 0, "mixed_precision": "fp32", "gradient_checkpointing": True, "seed": 1, "noise_offset": 0.0,
        "min_snr_gamma": 5.0, "caption_shuffle": False, "keep_tokens": 1, "caption_dropout": 0.0, "flip_augment": False,
        "save_every_n_epochs": 1, "validation_split": 0.0,
    }
    inputs.update(overrides)
    return inputs


@pytest.mark.server
def test_dataset_caption_train_and_sample_in_one_workflow(tmp_path):
    base = tmp_path / "server"
    (base / "models" / "checkpoints").mkdir(parents=True)
    shutil.copyfile(models.detectable_sd15_checkpoint(), base / "models" / "checkpoints" / CHECKPOINT)
    make_tiny_wd14_tagger(base / "models" / "captioners" / "wd-vit-tagger-v3")
    make_sample_dataset(base / "input" / "my set", count=3, size=64, repeats=1, with_captions=False)
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
        "2": {"class_type": "LoraLabLoadDataset",
              "inputs": {"path": "my set", "repeats": 1, "caption_extension": ".txt", "class_tokens": "", "model": ["1", 0]}},
        "3": {"class_type": "LoraLabAutoCaption",
              "inputs": {"dataset": ["2", 0], "captioner": "wd-vit-tagger-v3", "trigger_word": "ohwx", "mode": "fill_missing",
                         "exclude_tags": "", "general_threshold": 0.35, "character_threshold": 0.85,
                         "replace_underscores": True, "max_tags": 20}},
        "4": {"class_type": "LoraLabTrainLoRA", "inputs": train_inputs()},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "ohwx, a red circle"}},
        "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "7": {"class_type": "KSampler", "inputs": {"model": ["4", 0], "positive": ["5", 0], "negative": ["5", 0],
                                                   "latent_image": ["6", 0], "seed": 1, "steps": 1, "cfg": 1.0,
                                                   "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "after_training"}},
    }
    with ComfyServer(base) as server:
        run = server.run(prompt, timeout=900)
        assert run.status == "success", (run.history, server.log_tail())
        summary = run.outputs("4")["text"][0]
        assert "LoRA rank 4 on sd15" in summary and "recommended epoch: 1" in summary
        steps = [event for event in run.events("loralab.train") if event["kind"] == "step"]
        assert [event["step"] for event in steps] == [1, 2]  # 3 images, accumulation 2: two optimizer steps
        assert all(event["node"] == "4" and event["loss"] > 0 and "lr" in event for event in steps)
        progress = [event for event in run.events("progress") if event.get("node") == "4"]
        assert progress[-1]["value"] == progress[-1]["max"] == 2
        image = run.outputs("9")["images"][0]
        assert server.view(image["filename"], image["subfolder"]).startswith(b"\x89PNG")
