"""Samples during training and the loss graph: images after chosen epochs, kept in the LORA and the output folder,
shown as live previews, and training unchanged by them."""
from __future__ import annotations

import json

import pytest
import safetensors.torch
import torch
from PIL import Image

from harness import models, runtime, training_data

training_samples = runtime.pack("trainer.sweep.epoch_samples")
loss_chart = runtime.pack("trainer.sweep.loss_chart")
errors = runtime.pack("trainer.errors")

FAST = training_data.FAST
node_inputs = training_data.node_inputs
SAMPLE_PROMPTS = "sks, a red circle --s 2 --l 2\nsks, a blue square --n blurry --d 5 --s 2 --w 64 --h 48"


@pytest.fixture
def sd15():
    return models.FAMILIES["sd15"]()



def test_sampling_between_epochs_leaves_training_exactly_as_without(sd15, tmp_path, comfy_dirs):
    dataset = training_data.captioned_shapes(tmp_path / "data", count=2, twins=True)
    settings = dict(epochs=3, unet_lr=2e-2, text_encoder_lr=2e-3, validation_split=0.5, gradient_checkpointing=True)
    plain = runtime.run_node("LoraLabTrainLoRA", **node_inputs(sd15, dataset, **settings))[2]
    sampled = runtime.run_node("LoraLabTrainLoRA", **node_inputs(sd15, dataset, sample_prompts=SAMPLE_PROMPTS,
                                                                 sample_every_n_epochs=1, **settings))[2]
    assert sorted(sampled.samples) == [1, 2, 3]
    assert [loss for _, loss in sampled.loss_history] == [loss for _, loss in plain.loss_history]
    assert sampled.validation_history == plain.validation_history
    for epoch in plain.epochs:
        for key, value in plain.weights(epoch).items():
            assert torch.equal(sampled.weights(epoch)[key], value), (epoch, key)


def test_samples_are_files_in_the_lora_and_match_lora_loader_at_full_strength(sd15, tmp_path, comfy_dirs):
    dataset = training_data.captioned_shapes(tmp_path / "data", count=2)
    result = runtime.run_node("LoraLabTrainLoRA", **node_inputs(
        sd15, dataset, epochs=4, unet_lr=2e-2, sample_prompts=SAMPLE_PROMPTS, sample_every_n_epochs=2,
        prompt={"4": {"class_type": "LoraLabTrainLoRA"}}, extra_pnginfo={"workflow": {"nodes": []}}))
    lora = result[2]
    assert sorted(lora.samples) == [2, 4], "after every second epoch"
    assert all(len(paths) == 2 for paths in lora.samples.values())
    chart, *samples = result.ui["images"]  # the loss chart first, then the samples
    assert chart["subfolder"] == "loralab/charts" and chart["filename"].endswith(".png")
    assert [entry["filename"] for entry in samples] == [
        pathlib_name(path) for epoch in (2, 4) for path in lora.samples[epoch]]
    first, second = (Image.open(path) for path in lora.samples[4])
    assert first.size == (64, 64) and second.size == (64, 48), "--w/--h override the training resolution"
    assert json.loads(first.text["workflow"]) == {"nodes": []} and "prompt" in first.text
    details = json.loads(second.text["loralab_sample"])
    assert (details["epoch"], details["prompt"], details["negative"], details["seed"]) == (4, "sks, a blue square", "blurry", 5)
    assert all("loralab/samples/" in path for paths in lora.samples.values() for path in paths)

    # The epoch-4 sample is what a user gets from that epoch's file with LoraLoader at 1.0 (same seed and sampler).
    safetensors.torch.save_file(lora.weights(4), str(comfy_dirs["loras"] / "epoch4.safetensors"))
    model, clip = runtime.run_node("LoraLoader", model=sd15.model, clip=sd15.clip, lora_name="epoch4.safetensors",
                                   strength_model=1.0, strength_clip=1.0)
    positive = runtime.run_node("CLIPTextEncode", clip=clip, text="sks, a red circle")[0]
    negative = runtime.run_node("CLIPTextEncode", clip=clip, text="")[0]
    latent = runtime.run_node("EmptyLatentImage", width=64, height=64, batch_size=1)[0]
    samples = runtime.run_node("KSampler", model=model, seed=7, steps=2, cfg=2.0, sampler_name="euler", scheduler="normal",
                               positive=positive, negative=negative, latent_image=latent, denoise=1.0)[0]
    expected = runtime.pack("trainer.files.image_files").to_pil(runtime.run_node("VAEDecode", samples=samples, vae=sd15.vae)[0][0])
    assert list(first.getdata()) == list(expected.getdata())


def pathlib_name(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def test_samples_show_as_live_previews_on_the_training_node(sd15, tmp_path, comfy_dirs):
    import comfy.utils

    updates = []
    previous = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: updates.append((value, total, preview, node_id)))
    dataset = training_data.captioned_shapes(tmp_path / "data", count=2)
    try:
        runtime.run_node("LoraLabTrainLoRA", **node_inputs(sd15, dataset, epochs=2, unet_lr=1e-3, unique_id="4",
                                                           sample_prompts="sks --s 1", sample_every_n_epochs=1))
    finally:
        comfy.utils.set_progress_bar_global_hook(previous)
    previews = [(value, total, preview) for value, total, preview, node in updates if preview is not None]
    assert len(previews) == 2 and all(node == "4" for *_, node in updates)
    assert [(value, total) for value, total, _ in previews] == [(2, 4), (4, 4)], "previews keep the step progress"
    assert all(kind == "PNG" and size == 512 and image.size == (64, 64) for _, _, (kind, image, size) in previews)


def test_cancel_while_sampling_keeps_the_finished_epochs_resumable(sd15, tmp_path, comfy_dirs):
    import comfy.model_management

    dataset = training_data.captioned_shapes(tmp_path / "data", count=2)

    def interrupt_when_sampling(module, args, output):
        if torch.is_inference_mode_enabled():  # sampling runs in inference mode, training steps do not
            comfy.model_management.interrupt_current_processing(True)
        return output

    handle = sd15.model.model.diffusion_model.register_forward_hook(interrupt_when_sampling)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            runtime.run_node("LoraLabTrainLoRA", **node_inputs(sd15, dataset, epochs=2, unet_lr=1e-3,
                                                               sample_prompts="sks --s 2", sample_every_n_epochs=1))
    finally:
        handle.remove()
    state = sorted((comfy_dirs["output"] / "loralab" / "training_state").iterdir())[-1]
    saved = runtime.pack("trainer.training.run_state").load_run_state(state)
    assert saved.position.epoch == 2, "epoch 1 finished and was saved before its samples"
    assert not list((comfy_dirs["output"] / "loralab" / "samples").rglob("*.png"))


@pytest.mark.parametrize("line,expected", [
    ("a cat", ("a cat", "", 7, 64, 64, 20, 7.0)),
    ("a cat --n ugly, blurry --w 96 --h 32 --d 3 --l 4.5 --s 8", ("a cat", "ugly, blurry", 3, 96, 32, 8, 4.5)),
])
def test_sample_prompt_lines_accept_kohya_options(line, expected):
    defaults = training_samples.sample_defaults(64, 7, 7.0)
    (prompt,) = training_samples.parse_sample_prompts(f"\n# a comment\n{line}\n", defaults)
    assert (prompt.text, prompt.negative, prompt.seed, prompt.settings.width, prompt.settings.height,
            prompt.settings.steps, prompt.settings.cfg) == expected


@pytest.mark.parametrize("line,message", [
    ("a cat --x 3", "line 1: unknown option --x"),
    ("a cat --s many", "--s needs a whole number"),
    ("a cat --w 8", "--w 8 is out of range: the width in pixels must be 16 to 4096"),
    (" --n only negative", "line 1 has options but no prompt"),
])
def test_bad_sample_prompt_options_name_the_line(line, message):
    with pytest.raises(errors.SettingsError, match=message):
        training_samples.parse_sample_prompts(line, training_samples.sample_defaults(64, 7, 7.0))


def test_loss_graph_output_plots_losses_validation_and_learning_rate(sd15, tmp_path, comfy_dirs):
    dataset = training_data.captioned_shapes(tmp_path / "data", count=2, twins=True)
    result = runtime.run_node("LoraLabTrainLoRA", **node_inputs(sd15, dataset, epochs=3, unet_lr=1e-2, validation_split=0.5,
                                                                lr_scheduler="cosine"))
    graph = result[4]
    assert runtime.boot().NODE_CLASS_MAPPINGS["LoraLabTrainLoRA"].RETURN_NAMES[4] == "loss_graph"
    assert graph.shape == (1, 432, 768, 3) and graph.dtype == torch.float32
    pixels = (graph[0] * 255).round().to(torch.int16)
    for colour in (loss_chart.SMOOTHED, loss_chart.VALIDATION, loss_chart.LEARNING_RATE, loss_chart.RECOMMENDED):
        matches = (pixels == torch.tensor(colour, dtype=torch.int16)).all(dim=-1).sum().item()
        assert matches > 20, f"colour {colour} missing from the graph"


def test_smoothing_is_a_debiased_moving_average():
    assert loss_chart.smoothed([2.0, 2.0, 2.0], span=5) == pytest.approx([2.0, 2.0, 2.0])
    values = loss_chart.smoothed([1.0] * 10 + [0.0] * 10, span=3)
    assert values[0] == 1.0 and values[9] == pytest.approx(1.0)
    assert 0 < values[12] < values[10] < 1.0 and values[-1] < 0.01
    assert loss_chart.smoothing_span(1000) == 50 and loss_chart.smoothing_span(5) == 1
