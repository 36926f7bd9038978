"""Strength Sweep on a real (tiny) model: each cell is what LoraLoader + KSampler give, in a labelled, saved grid."""
from __future__ import annotations

import collections
import dataclasses
import json

import pytest
import safetensors.torch
import torch
from PIL import Image

from harness import models, runtime, training_data
from harness.observers import SilentObserver

TrainingSettings = runtime.pack("trainer.training.settings").TrainingSettings
loop = runtime.pack("trainer.training.loop")
errors = runtime.pack("trainer.errors")
image_files = runtime.pack("trainer.files.image_files")

SAMPLING = dict(width=64, height=64, steps=2, cfg=2.0, sampler_name="euler", scheduler="normal")
PROMPT, NEGATIVE = "sks, a red circle", "blurry"


@pytest.fixture(scope="module")
def sd15():
    return models.FAMILIES["sd15"]()


@pytest.fixture(scope="module")
def trained(sd15, tmp_path_factory):
    """A two-epoch LoRA that trains the UNet and the text encoder, both epochs kept."""
    folder = tmp_path_factory.mktemp("trained")
    dataset = training_data.captioned_shapes(folder / "data", count=2)
    settings = TrainingSettings(epochs=2, unet_lr=2e-2, text_encoder_lr=2e-3, rank=4, resolution=64, mixed_precision="fp32",
                                save_every_n_epochs=1, seed=7)
    return loop.train_lora(sd15.model, sd15.clip, sd15.vae, dataset, settings, SilentObserver(), folder / "state").lora


def run_sweep(bundle, lora, **overrides):
    inputs = dict(model=bundle.model, clip=bundle.clip, vae=bundle.vae, lora=lora, prompts=PROMPT, negative=NEGATIVE,
                  strengths="0, 0.5, 1", seeds="1, 2", epochs="all", clip_strength_ratio=1.0, **SAMPLING)
    inputs.update(overrides)
    return runtime.run_node("LoraLabStrengthSweep", **inputs)


def lora_loader_image(bundle, lora_name: str, strength: float, clip_strength: float, seed: int) -> torch.Tensor:
    """The stock graph a user would build: LoraLoader -> CLIPTextEncode x2 -> EmptyLatentImage -> KSampler -> VAEDecode."""
    model, clip = runtime.run_node("LoraLoader", model=bundle.model, clip=bundle.clip, lora_name=lora_name,
                                   strength_model=strength, strength_clip=clip_strength)
    positive = runtime.run_node("CLIPTextEncode", clip=clip, text=PROMPT)[0]
    negative = runtime.run_node("CLIPTextEncode", clip=clip, text=NEGATIVE)[0]
    latent = runtime.run_node("EmptyLatentImage", width=SAMPLING["width"], height=SAMPLING["height"], batch_size=1)[0]
    samples = runtime.run_node("KSampler", model=model, seed=seed, steps=SAMPLING["steps"], cfg=SAMPLING["cfg"],
                               sampler_name=SAMPLING["sampler_name"], scheduler=SAMPLING["scheduler"], positive=positive,
                               negative=negative, latent_image=latent, denoise=1.0)[0]
    return runtime.run_node("VAEDecode", samples=samples, vae=bundle.vae)[0]


def test_each_cell_equals_lora_loader_with_the_saved_file(sd15, trained, comfy_dirs):
    for epoch in trained.epochs:
        safetensors.torch.save_file(trained.weights(epoch), str(comfy_dirs["loras"] / f"sweep-e{epoch}.safetensors"))
    result = run_sweep(sd15, trained, clip_strength_ratio=0.5)
    grid, images = result

    cells = 3 * 2 * 2
    assert images.shape == (cells, 64, 64, 3)
    assert grid.shape[0] == 1 and grid.shape[1] > 2 * 64 and grid.shape[2] > 6 * 64
    entry = result.ui["images"][0]
    details = json.loads(Image.open(comfy_dirs["output"] / entry["subfolder"] / entry["filename"]).text["loralab_sweep"])
    assert [(c["epoch"], c["seed"], c["strength"]) for c in details["cells"]] == [
        (epoch, seed, strength) for epoch in (1, 2) for seed in (1, 2) for strength in (0.0, 0.5, 1.0)]
    scale = details["cell_scale"]
    assert scale == 2, "64 px cells are enlarged 2x in the grid, nearest neighbour"
    for cell in details["cells"]:
        left, top, right, bottom = cell["box"]
        assert (right - left, bottom - top) == (128, 128)
        assert torch.equal(grid[0, top:bottom:scale, left:right:scale], images[cell["index"]])
        expected = lora_loader_image(sd15, f"sweep-e{cell['epoch']}.safetensors", cell["strength"], cell["strength"] * 0.5,
                                     cell["seed"])
        assert torch.equal(images[cell["index"]], expected[0]), cell

    by_key = {(c["epoch"], c["seed"], c["strength"]): images[c["index"]] for c in details["cells"]}
    assert torch.equal(by_key[(1, 1, 0.0)], by_key[(2, 1, 0.0)]), "strength 0 is the base model in every epoch row"
    assert not torch.equal(by_key[(2, 1, 0.0)], by_key[(2, 1, 1.0)]), "the LoRA must change the image"
    assert not torch.equal(by_key[(1, 1, 1.0)], by_key[(2, 1, 1.0)]), "epochs differ"
    assert not torch.equal(by_key[(2, 1, 1.0)], by_key[(2, 2, 1.0)]), "seeds differ"


def test_the_model_loads_once_per_epoch_and_strength_not_per_cell(sd15, trained, comfy_dirs, monkeypatch):
    import comfy.model_patcher

    loaded, patched = collections.Counter(), collections.Counter()
    original = comfy.model_patcher.ModelPatcher.patch_weight_to_device

    def counting(self, key, *args, **kwargs):
        loaded[key] += 1  # called for every weight each time a patcher loads its weights
        if key in self.patches:
            patched[key] += 1  # and computes W + strength * delta only for the LoRA's layers
        return original(self, key, *args, **kwargs)

    monkeypatch.setattr(comfy.model_patcher.ModelPatcher, "patch_weight_to_device", counting)
    run_sweep(sd15, trained, seeds="1, 2, 3", prompts=f"{PROMPT}\nsks, a blue square")  # 3 x 2 x 3 x 2 = 36 cells
    unet_loads = {count for key, count in loaded.items() if key.startswith("diffusion_model.")}
    assert unet_loads == {5}, "base model once (reused in both epoch rows) + 2 epochs x 2 non-zero strengths"
    unet_patches = {key: count for key, count in patched.items() if key.startswith("diffusion_model.")}
    text_patches = {key: count for key, count in patched.items() if not key.startswith("diffusion_model.")}
    assert unet_patches and text_patches, patched
    assert set(unet_patches.values()) == {4} and set(text_patches.values()) == {4}, patched


def test_epochs_best_renders_the_recorded_epoch(sd15, trained, comfy_dirs):
    recorded_first = dataclasses.replace(trained, recommended_epoch=1, recommendation="test: epoch 1")
    single = dict(strengths="1", seeds="3")
    best = run_sweep(sd15, recorded_first, epochs="best", **single)[1]
    first = run_sweep(sd15, recorded_first, epochs="1", **single)[1]
    final = run_sweep(sd15, recorded_first, epochs="final", **single)[1]
    assert torch.equal(best, first) and not torch.equal(best, final)
    with pytest.raises(errors.SettingsError, match="epoch 5 was not kept; kept epochs are 1, 2"):
        run_sweep(sd15, trained, epochs="5")


def test_filename_prefix_names_the_grid_file(sd15, trained, comfy_dirs):
    """Save Image's naming, so the command line can give each dataset's grid its own name."""
    result = run_sweep(sd15, trained, strengths="1", seeds="1", epochs="final", filename_prefix="loralab/ohwx_sweep_cat")
    (entry,) = result.ui["images"]
    assert entry["subfolder"] == "loralab" and entry["filename"].startswith("ohwx_sweep_cat_")
    assert (comfy_dirs["output"] / "loralab" / entry["filename"]).is_file()


@pytest.mark.parametrize("prefix, problem", [("../escape", "outside the output folder"), ("sweeps/", "no file name")])
def test_an_unusable_filename_prefix_is_refused_before_sampling(sd15, trained, comfy_dirs, prefix, problem):
    with pytest.raises(errors.SettingsError, match=f"filename_prefix .*{problem}"):
        run_sweep(sd15, trained, strengths="1", seeds="1", epochs="final", filename_prefix=prefix)
    assert not any(path.is_file() for path in comfy_dirs["output"].parent.rglob("*"))


def test_grid_png_embeds_the_workflow_and_previews_on_the_node(sd15, trained, comfy_dirs):
    workflow = {"nodes": [{"id": 9, "type": "LoraLabStrengthSweep"}]}
    api_prompt = {"9": {"class_type": "LoraLabStrengthSweep", "inputs": {}}}
    result = run_sweep(sd15, trained, strengths="0, 1", seeds="1", prompt=api_prompt, extra_pnginfo={"workflow": workflow})
    (entry,) = result.ui["images"]
    assert entry["type"] == "output" and entry["subfolder"] == "loralab/sweeps"
    png = Image.open(comfy_dirs["output"] / entry["subfolder"] / entry["filename"])
    assert json.loads(png.text["prompt"]) == api_prompt and json.loads(png.text["workflow"]) == workflow
    details = json.loads(png.text["loralab_sweep"])
    assert details["sampler"]["steps"] == 2 and details["negative"] == NEGATIVE
    assert png.size == (result[0].shape[2], result[0].shape[1])
    saved_cell = png.crop(tuple(details["cells"][1]["box"])).reduce(details["cell_scale"])  # blocks of equal pixels
    assert list(saved_cell.getdata()) == list(image_files.to_pil(result[1][1]).getdata()), "the PNG holds SaveImage's pixels"
    assert "recommended epoch: 2" in result.ui["text"][0]
    assert not list((comfy_dirs["output"] / entry["subfolder"]).glob("*.partial"))


def test_one_progress_bar_over_all_cells_with_a_preview_per_image(sd15, trained, comfy_dirs):
    import comfy.utils

    updates = []
    previous = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: updates.append((value, total, preview)))
    try:
        run_sweep(sd15, trained, strengths="0, 1", seeds="1", unique_id="12")
    finally:
        comfy.utils.set_progress_bar_global_hook(previous)
    # Cells: base (rendered once, reused for epoch 2), epoch 1 at 1.0, epoch 2 at 1.0 -> 3 images x 2 steps.
    totals = {total for _, total, _ in updates}
    assert totals == {6}, updates
    values = [value for value, _, _ in updates]
    assert values == sorted(values) and values[-1] == 6
    previews = [preview for _, _, preview in updates if preview is not None]
    assert len(previews) == 3
    assert all(kind == "PNG" and image.size == (64, 64) and size == 512 for kind, image, size in previews)


def test_cancel_stops_the_sweep_within_a_step_and_writes_no_grid(sd15, trained, comfy_dirs):
    import comfy.model_management

    calls = []

    def interrupt_on_third_call(module, args, output):
        calls.append(1)
        if len(calls) == 3:
            comfy.model_management.interrupt_current_processing(True)
        return output

    handle = sd15.model.model.diffusion_model.register_forward_hook(interrupt_on_third_call)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            run_sweep(sd15, trained)
    finally:
        handle.remove()
    assert len(calls) <= 4, "stopped at the next step, not after the whole sweep"
    assert not comfy.model_management.processing_interrupted()
    assert not (comfy_dirs["output"] / "loralab" / "sweeps").exists()


def four_times_vae():
    """A VAE with two downsamplings (4x), set up as ComfyUI's loader sets up such a VAE."""
    config = models.tiny_vae_config()
    config["params"]["ddconfig"]["ch_mult"] = [1, 1, 1]
    vae = models.assemble_vae(models.vae_weights(config, seed=11), config, latent_channels=4)
    vae.downscale_ratio = vae.upscale_ratio = 4
    return vae


def test_latent_size_follows_the_vae_not_an_assumed_8x(sd15, trained, comfy_dirs):
    bundle = models.ModelBundle("sd15", sd15.model, sd15.clip, four_times_vae())
    images = run_sweep(bundle, trained, strengths="0, 1", seeds="1", epochs="final", width=64, height=96)[1]
    assert images.shape == (2, 96, 64, 3)


def test_a_lora_for_another_model_is_refused(trained, comfy_dirs):
    sdxl = models.FAMILIES["sdxl"]()
    with pytest.raises(errors.SettingsError, match="trained on a sd15 model but the connected MODEL is sdxl: connect the model it was trained on"):
        run_sweep(sdxl, trained, strengths="1", seeds="1", epochs="final")
