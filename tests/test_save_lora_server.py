"""Through a real ComfyUI server: saved paths reach /history, and LoraLoader lists and applies the file without a restart."""
from __future__ import annotations

import os
import re
import types

import pytest
import torch

import test_lora_files_helpers as helpers
from harness import models, runtime
from harness.server import ComfyServer


def seed_lora_for_the_checkpoint(loras_dir):
    """A LoRA file whose layers are those of the detectable SD1.5 checkpoint (built on the meta device)."""
    import comfy.sd1_clip
    import comfy.supported_models

    with torch.device("meta"):
        model = comfy.supported_models.SD15(models.unet_config(**models.DETECTABLE_SD15_UNET)).get_model({}, device="meta")
        clip = comfy.sd1_clip.SD1ClipModel(device="meta", dtype=torch.float16)
    bundle = types.SimpleNamespace(family="sd15", model=types.SimpleNamespace(model=model),
                                   clip=types.SimpleNamespace(cond_stage_model=clip))
    lora = helpers.random_trained_lora(bundle, "LoCon", rank=2, conv_rank=2)
    runtime.pack("trainer.files.lora_io").save_lora_files(lora, loras_dir, "seed", "final", "fp16", overwrite=False)


@pytest.mark.server
def test_saved_paths_reach_history_and_loraloader_uses_the_file_without_restart(tmp_path):
    base = tmp_path / "server"
    checkpoint = models.detectable_sd15_checkpoint()
    (base / "models" / "checkpoints").mkdir(parents=True)
    (base / "models" / "checkpoints" / "random_sd15.safetensors").symlink_to(checkpoint)
    seed_lora_for_the_checkpoint(base / "models" / "loras")
    with ComfyServer(base) as server:
        saving = {
            "1": {"class_type": "LoraLabLoadLoRA", "inputs": {"lora_name": "seed.safetensors"}},
            "2": {"class_type": "LoraLabSaveLoRA", "inputs": {"lora": ["1", 0], "filename_prefix": "served/dog",
                                                              "epochs": "final", "dtype": "fp16", "overwrite": False}},
        }
        run = server.run(saving, timeout=300)
        assert run.status == "success", run.history
        output = run.outputs("2")
        saved_path = base / "models" / "loras" / "served" / "dog.safetensors"
        assert output["text"] == [str(saved_path)]
        assert output["loras"][0]["lora_name"] == os.path.join("served", "dog.safetensors")
        assert saved_path.is_file()

        lora_name = output["loras"][0]["lora_name"]
        listed = server.get_json("/object_info/LoraLoader")["LoraLoader"]["input"]["required"]["lora_name"][0]
        assert lora_name in listed  # the frontend's list already has it
        using = {
            "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "random_sd15.safetensors"}},
            "2": {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1], "lora_name": lora_name,
                                                         "strength_model": 0.8, "strength_clip": 0.8}},
            "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 1], "text": "a dog"}},
            "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "5": {"class_type": "KSampler", "inputs": {"model": ["2", 0], "positive": ["3", 0], "negative": ["3", 0],
                                                       "latent_image": ["4", 0], "seed": 1, "steps": 1, "cfg": 1.0,
                                                       "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
            "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
            "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},
        }
        run = server.run(using, timeout=600)
        assert run.status == "success", run.history
        log = server.log_tail(10**7)
        assert "lora key not loaded" not in log and "NOT LOADED" not in log
        assert not re.search(r"^ERROR (lora|loha|lokr) ", log, re.MULTILINE)  # ComfyUI's message for a layer that failed
