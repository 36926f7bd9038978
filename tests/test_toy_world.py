"""The built-in toy-world model: it loads through its node, its VAE keeps every test colour and shape,
and the base model draws what a prompt names (the ground the LoRA-learning tests stand on)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from harness import image_metrics, runtime, toy_world

scenes = runtime.pack("trainer.toy_world.scenes")
demo_models = runtime.pack("trainer.toy_world.demo_models")
concept_dataset = runtime.pack("trainer.toy_world.concept_dataset")
CONCEPT = concept_dataset.CONCEPT

# Measured on the shipped weights (16 samples per prompt, euler, 20 steps, cfg 5); see test_base_model_* below.
PROMPT_FIDELITY_THRESHOLD = 0.75
FIDELITY_PROMPTS = [
    ("red", "circle", "white"), ("yellow", "square", "black"), ("green", "triangle", "gray"),
    ("blue", "circle", "black"), ("red", "triangle", "gray"), ("blue", "square", "white"),
]


DEMO_MODELS = {"toy_world": ("sd_v1", 4), "flow_toy_world": ("flux1", 16)}  # ss_base_model_version, latent channels


@pytest.fixture(scope="module", params=list(DEMO_MODELS))
def demo(request):
    model, clip, vae = runtime.run_node("LoraLabLoadDemoModel", model_name=request.param)
    return model, clip, vae


def test_image_metrics_read_back_rendered_scenes():
    rng = np.random.default_rng(3)
    for colour in (*scenes.BASE_COLOURS, CONCEPT.colour):
        for shape in (*scenes.BASE_SHAPES, CONCEPT.shape):
            for background in scenes.BASE_BACKGROUNDS:
                analysis = image_metrics.analyse(scenes.render(scenes.named_scene(colour, shape, background, rng)))
                assert (analysis.colour, analysis.shape, analysis.background) == (colour, shape, background)


def test_image_metrics_count_a_rounded_square_as_a_square_and_a_blank_image_as_nothing():
    from PIL import Image, ImageDraw

    canvas = Image.new("RGB", (32, 32), scenes.BACKGROUNDS["white"])
    ImageDraw.Draw(canvas).rounded_rectangle((6, 6, 25, 25), radius=6, fill=scenes.COLOURS["red"])
    assert image_metrics.analyse(np.asarray(canvas)).shape == "square"
    assert image_metrics.analyse(np.full((32, 32, 3), 128, np.uint8)).shape == "none"


def test_demo_model_loads_as_its_own_family_with_4x_latents(demo):
    model, clip, vae = demo
    family = runtime.pack("trainer.models.families").detect_family(model)
    base_model_version, channels = DEMO_MODELS[family.name]
    assert (family.base_model_version, family.native_resolution, family.bucket_step) == (base_model_version, 32, 8)
    empty = runtime.run_node("LoraLabEmptyLatent", width=48, height=36, batch_size=2)[0]
    assert empty["samples"].shape == (2, 4, 8, 12)  # 36 rounds down to 32 pixels; KSampler widens zeros to 16 channels
    latent = runtime.run_node("VAEEncode", vae=vae, pixels=torch.rand(2, 32, 48, 3))[0]
    assert latent["samples"].shape == (2, channels, 8, 12)
    assert runtime.run_node("VAEDecode", vae=vae, samples=latent)[0].shape == (2, 32, 48, 3)
    positive = runtime.run_node("CLIPTextEncode", clip=clip, text="a red circle on a white background")[0]
    assert positive[0][0].shape == {"toy_world": (1, 77, 64), "flow_toy_world": (1, 32, 64)}[family.name]


def test_missing_weights_file_names_the_script_that_rebuilds_it(tmp_path):
    errors = runtime.pack("trainer.errors")
    with pytest.raises(errors.SettingsError, match="pretrain_toy_world.py"):
        demo_models.load_demo_model(tmp_path / "toy_world.safetensors")


def test_vae_round_trip_keeps_every_test_colour_and_shape(demo):
    """Checked before any test relies on the VAE: a concept it cannot reproduce could never be learned."""
    _, _, vae = demo
    rng = np.random.default_rng(5)
    labels = [(c, s, b) for c in scenes.BASE_COLOURS for s in scenes.BASE_SHAPES for b in scenes.BASE_BACKGROUNDS]
    labels += [(CONCEPT.colour, CONCEPT.shape, b) for b in concept_dataset.CONCEPT_BACKGROUNDS for _ in range(4)]
    pixels = np.stack([scenes.render(scenes.named_scene(c, s, b, rng)) for c, s, b in labels])
    latent = runtime.run_node("VAEEncode", vae=vae, pixels=torch.from_numpy(pixels).float() / 255.0)[0]
    assert latent["samples"].shape[2:] == (8, 8)
    decoded = runtime.run_node("VAEDecode", vae=vae, samples=latent)[0]
    for (colour, shape, background), image in zip(labels, decoded.numpy()):
        analysis = image_metrics.analyse(image)
        assert (analysis.colour, analysis.shape, analysis.background) == (colour, shape, background)


@pytest.mark.parametrize("colour,shape,background", FIDELITY_PROMPTS)
def test_base_model_draws_the_prompted_colour_shape_and_background(demo, colour, shape, background):
    rates = toy_world.prompt_rates(*demo, scenes.caption(colour, shape, background), colour, shape, background)
    assert rates["colour"] >= PROMPT_FIDELITY_THRESHOLD, rates
    assert rates["shape"] >= PROMPT_FIDELITY_THRESHOLD, rates
    assert rates["background"] >= PROMPT_FIDELITY_THRESHOLD, rates


def test_base_model_never_draws_the_new_concept(demo):
    """The LoRA tests' baseline: without training, the trigger word yields no purple ring."""
    rates = toy_world.prompt_rates(*demo, CONCEPT.caption("white"), CONCEPT.colour, CONCEPT.shape)
    assert rates["all"] <= 1 / 16, rates


def test_concept_dataset_is_written_in_kohya_layout_without_overwriting(tmp_path):
    root = concept_dataset.write_concept_dataset(tmp_path / "zqx", count=6)
    folder = root / f"{concept_dataset.REPEATS}_{CONCEPT.trigger}"
    images = sorted(folder.glob("*.png"))
    assert len(images) == 6 and sorted(p.stem for p in folder.glob("*.txt")) == [p.stem for p in images]
    assert not list(folder.glob("*.partial"))
    from PIL import Image

    for path in images:
        analysis = image_metrics.analyse(np.asarray(Image.open(path).convert("RGB")))
        assert (analysis.colour, analysis.shape) == (CONCEPT.colour, CONCEPT.shape)
        caption = path.with_suffix(".txt").read_text().strip()
        assert caption == CONCEPT.caption(analysis.background)
    before = images[0].read_bytes()
    errors = runtime.pack("trainer.errors")
    with pytest.raises(errors.DatasetError, match="already exists"):
        concept_dataset.write_concept_dataset(root, count=6)
    assert images[0].read_bytes() == before
