"""Training the Flux family (Flux.1 dev, schnell, Chroma) through the real nodes, on the tiny flow fixtures.

The loss is measured in flow space (velocity), noise levels come from the family's kohya sampler, Flux dev's
guidance embedding receives the training guidance (and only dev has one), buckets step by 16 px, settings
that do not apply are refused by name, and the saved file loads completely in ComfyUI's LoraLoader.
"""
from __future__ import annotations

import contextlib

import pytest
import safetensors.torch
import torch

import test_lora_files_helpers as helpers
from harness import flow_models, runtime, training_data
from harness.observers import SilentObserver

TrainingSettings = runtime.pack("trainer.training.settings").TrainingSettings
loop = runtime.pack("trainer.training.loop")
errors = runtime.pack("trainer.errors")
flow_matching = runtime.pack("trainer.training.flow_matching")

FAMILY_NAMES = {"flux_dev": "flux_dev", "flux_schnell": "flux_schnell", "chroma": "chroma"}


def flux_inputs(bundle, dataset, **overrides):
    """Train LoRA's inputs for a flow model, min_snr_gamma left at its (eps/v) default as a user's graph has it."""
    return training_data.node_inputs(bundle, dataset, **{"epochs": 1, "unet_lr": 1e-3, **overrides})


@contextlib.contextmanager
def recorded_forwards(bundle):
    """Every call of the diffusion model while the block runs: (x, timesteps, guidance) as the model received them."""
    calls = []

    def record(module, args, kwargs):
        x, timesteps = args[0], args[1]
        guidance = kwargs.get("guidance")
        calls.append((x.detach().clone(), timesteps.detach().clone(),
                      None if guidance is None else guidance.detach().clone()))

    handle = bundle.model.model.diffusion_model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


@pytest.fixture
def dataset(tmp_path):
    return training_data.captioned_shapes(tmp_path / "data", count=2)


@pytest.mark.parametrize("family", sorted(flow_models.FLUX_FAMILIES))
def test_each_flux_family_trains_through_the_node_and_its_file_loads_completely(family, dataset, comfy_dirs):
    bundle = flow_models.FLUX_FAMILIES[family]()
    model_out, clip_out, lora, _, _ = runtime.run_node("LoraLabTrainLoRA", **flux_inputs(bundle, dataset, epochs=2))
    assert lora.family == FAMILY_NAMES[family]
    names = helpers.module_names(lora.weights())
    assert names and all(name.startswith(("lora_unet_double_blocks_", "lora_unet_single_blocks_")) for name in names)
    assert all(torch.isfinite(loss) for loss in torch.tensor([epoch.train_loss for epoch in lora.epochs.values()]))
    saved = runtime.run_node("LoraLabSaveLoRA", lora=lora, filename_prefix=f"flux/{family}", epochs="final",
                             dtype="fp32", overwrite=False)
    path = saved.ui["loras"][0]["path"]
    with safetensors.safe_open(path, "pt") as handle:
        metadata = handle.metadata()
        keys = set(handle.keys())
    architecture = {"flux_dev": "flux-1-dev/lora", "flux_schnell": "flux-1-schnell/lora", "chroma": "chroma/lora"}
    assert metadata["modelspec.architecture"] == architecture[family]
    assert metadata["ss_base_model_version"] == ("chroma" if family == "chroma" else "flux1")
    with helpers.comfy_warnings() as warnings:
        runtime.run_node("LoraLoaderModelOnly", model=bundle.model, lora_name=path.split("loras/", 1)[-1],
                         strength_model=1.0)
    assert not [message for message in warnings if "lora key not loaded" in message], warnings
    assert keys == set(lora.weights())


@pytest.mark.parametrize("family,setting,expected", [
    ("flux_dev", {}, 1.0),  # kohya's training guidance for the guidance-distilled dev
    ("flux_dev", {"guidance_scale": 2.5}, 2.5),
    ("flux_schnell", {}, None),  # no guidance embedding: nothing is passed (ComfyUI would fill in 3.5)
    ("chroma", {}, 0.0),  # kohya trains Chroma at guidance 0
])
def test_flux_dev_receives_the_training_guidance_and_the_others_none(family, setting, expected, dataset, comfy_dirs):
    bundle = flow_models.FLUX_FAMILIES[family]()
    with recorded_forwards(bundle) as calls:
        runtime.run_node("LoraLabTrainLoRA", **flux_inputs(bundle, dataset, **setting))
    assert calls
    for _, _, guidance in calls:
        if expected is None:
            assert guidance is None
        else:
            assert guidance is not None and torch.all(guidance == expected), guidance


@pytest.mark.parametrize("family,sampler,options", [
    ("flux_dev", "shift", {"shift": 3.1582}),  # kohya's Flux recommendation, the family default
    ("chroma", "sigmoid", {}),
])
def test_training_draws_noise_levels_from_the_family_sampler(family, sampler, options, tmp_path, comfy_dirs):
    """The timesteps the model sees during training are the family sampler's draws (a KS distance to its law)."""
    bundle = flow_models.FLUX_FAMILIES[family]()
    dataset = training_data.captioned_shapes(tmp_path / "data", count=2, repeats=60)
    with recorded_forwards(bundle) as calls:
        runtime.run_node("LoraLabTrainLoRA", **flux_inputs(bundle, dataset, unet_lr=1e-5))
    seen = torch.cat([timesteps.double() for _, timesteps, _ in calls])
    reference = flow_matching.sample_sigmas(sampler, 100_000, torch.Generator().manual_seed(0), **options).double()
    uniform = torch.rand(100_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert ks_two_sample(seen, reference) < 1.63 * (1 / len(seen) + 1 / len(reference)) ** 0.5
    assert ks_two_sample(seen, uniform) > 1.63 * (1 / len(seen) + 1 / len(uniform)) ** 0.5  # not just any draw


def ks_two_sample(first: torch.Tensor, second: torch.Tensor) -> float:
    values = torch.sort(torch.cat([first, second])).values
    cdf_first = torch.searchsorted(torch.sort(first).values, values, right=True).double() / len(first)
    cdf_second = torch.searchsorted(torch.sort(second).values, values, right=True).double() / len(second)
    return float((cdf_first - cdf_second).abs().max())


def test_the_loss_is_the_flow_matching_loss_in_velocity_space(tmp_path):
    """One step's loss, recomputed from what the model saw and predicted: mean ||v_hat - (n - x0)||^2, with
    n - x0 = (x_t - x0) / sigma. A loss in x0 space would be sigma^2 times smaller."""
    import numpy
    from PIL import Image

    bundle = flow_models.tiny_flux_schnell()
    dataset = training_data.captioned_shapes(tmp_path / "data", count=1)
    settings = TrainingSettings(**{**training_data.FAST, "epochs": 1, "unet_lr": 1e-3, "min_snr_gamma": 0.0})
    seen = []

    def record(module, args, kwargs, output):
        seen.append((args[0].detach().clone(), args[1].detach().clone(), output.detach().clone()))

    handle = bundle.model.model.diffusion_model.register_forward_hook(record, with_kwargs=True)
    try:
        lora = loop.train_lora(bundle.model, bundle.clip, bundle.vae, dataset, settings, SilentObserver(),
                               tmp_path / "state").lora
    finally:
        handle.remove()
    (noisy, sigma, velocity), = seen  # one image, one step; Flux's timestep input is sigma itself
    pixels = torch.from_numpy(numpy.array(Image.open(dataset.images[0].path).convert("RGB"))).float()[None] / 255
    with torch.no_grad():
        clean = bundle.model.model.process_latent_in(bundle.vae.encode(pixels))
    expected = ((velocity - (noisy - clean) / sigma.view(-1, 1, 1, 1)) ** 2).mean()
    assert lora.epochs[1].train_loss == pytest.approx(float(expected), rel=1e-3)
    assert 0 < float(sigma) < 1


def test_a_negative_shift_is_refused_by_name():
    """0 means the family's shift; a negative one (from a kohya config, which no widget range guards) is refused."""
    with pytest.raises(errors.SettingsError, match="discrete_flow_shift -1.0 is negative: use 0 for the family's shift"):
        TrainingSettings(discrete_flow_shift=-1.0)
    assert TrainingSettings(discrete_flow_shift=0.0).discrete_flow_shift == 0.0


@pytest.mark.parametrize("family,overrides,message", [
    ("flux_dev", {"min_snr_gamma": 7.0}, "min_snr_gamma 7.0 weights eps/v noise levels"),
    ("chroma", {"text_encoder_lr": 1e-4}, "text_encoder_lr trains CLIP text encoders"),
    ("flux_schnell", {"guidance_scale": 3.0}, r"guidance_scale applies to guidance-distilled models \(Flux.1 dev, Flux.2 dev\) only"),
    ("flux_dev", {"timestep_sampling": "sigmoid", "discrete_flow_shift": 2.0}, "discrete_flow_shift applies to the shift sampler"),
])
def test_settings_that_do_not_apply_are_refused_by_name(family, overrides, message, dataset, comfy_dirs):
    bundle = flow_models.FLUX_FAMILIES[family]()
    with pytest.raises(errors.SettingsError, match=message):
        runtime.run_node("LoraLabTrainLoRA", **flux_inputs(bundle, dataset, **overrides))


def test_flow_settings_are_refused_on_an_sd_model(dataset, comfy_dirs):
    from harness import models

    bundle = models.FAMILIES["sd15"]()
    with pytest.raises(errors.SettingsError, match="timestep_sampling applies to flow-matching models"):
        runtime.run_node("LoraLabTrainLoRA", **training_data.node_inputs(bundle, dataset, timestep_sampling="sigmoid"))


def test_flux_buckets_step_by_16_pixels(tmp_path, comfy_dirs):
    """48 px is a Flux resolution (a multiple of 16) but not an SD one (64 px steps)."""
    bundle = flow_models.tiny_flux_schnell()
    dataset = training_data.captioned_shapes(tmp_path / "data", count=1)
    with recorded_forwards(bundle) as calls:
        runtime.run_node("LoraLabTrainLoRA", **flux_inputs(bundle, dataset, resolution=48))
    assert {tuple(x.shape[-2:]) for x, _, _ in calls} == {(6, 6)}  # 48 px over the VAE's 8x


@pytest.mark.parametrize("family,guidance,steps", [("flux_dev", 3.5, 20), ("flux_schnell", None, 4)])
def test_training_samples_render_as_a_flux_graph_does(family, guidance, steps, dataset, comfy_dirs):
    """Samples use cfg 1 (one forward a step) with FluxGuidance 3.5 for dev, and 4 steps for schnell."""
    bundle = flow_models.FLUX_FAMILIES[family]()
    with recorded_forwards(bundle) as calls:
        runtime.run_node("LoraLabTrainLoRA", **flux_inputs(bundle, dataset, sample_prompts="a red circle",
                                                           sample_every_n_epochs=1))
    training_calls = 2  # two images, one epoch, batch 1
    sampling = calls[training_calls:]
    assert len(sampling) == steps
    if guidance is not None:  # (schnell has no guidance embedding; ComfyUI passes its 3.5 default, unused)
        assert all(bool(torch.all(g == guidance)) for _, _, g in sampling)


def test_strength_sweep_passes_its_guidance_to_flux_dev(dataset, comfy_dirs):
    bundle = flow_models.tiny_flux_dev()
    lora = runtime.run_node("LoraLabTrainLoRA", **flux_inputs(bundle, dataset))[2]
    with recorded_forwards(bundle) as calls:
        runtime.run_node("LoraLabStrengthSweep", model=bundle.model, clip=bundle.clip, vae=bundle.vae, lora=lora,
                         prompts="a red circle", negative="", strengths="0, 1", seeds="1", epochs="final",
                         clip_strength_ratio=1.0, width=64, height=64, steps=2, cfg=1.0, sampler_name="euler",
                         scheduler="simple", guidance=2.0)
    assert len(calls) == 4 and all(bool(torch.all(g == 2.0)) for _, _, g in calls)


def test_the_dataset_report_counts_flux_captions_in_t5_tokens_against_kohyas_length(tmp_path, comfy_dirs):
    """T5 carries Flux's caption: its tokens and kohya's t5xxl_max_token_length (256 for schnell) replace CLIP's 75."""
    bundle = flow_models.tiny_flux_schnell()
    folder = tmp_path / "data"
    training_data.captioned_shapes(folder, count=2)
    long_caption = ", ".join(f"a detailed red circle number {index}" for index in range(45))  # ~300 T5 tokens
    (folder / "000.txt").write_text(long_caption, encoding="utf-8")
    _, text = runtime.run_node("LoraLabLoadDataset", path=str(folder), repeats=1, caption_extension=".txt",
                               class_tokens="", model=bundle.model, clip=bundle.clip)
    t5_count = len(bundle.clip.tokenizer.t5xxl.tokenizer(long_caption)["input_ids"]) - 1  # without T5's end token
    assert "(limit 256 T5)" in text
    assert f"longest {t5_count} tokens" in text
    assert f"Captions longer than 256 T5 tokens" in text and "t5xxl_max_token_length" in text


def diffusers_named(kohya: dict[str, torch.Tensor], model) -> dict[str, torch.Tensor]:
    """A kohya Flux LoRA rewritten as ai-toolkit writes it (diffusers names, peft lora_A/lora_B, no alpha, q/k/v and
    proj_mlp split out of the fused layers), following ComfyUI's own diffusers-Flux key map."""
    import comfy.utils

    out = {}
    written_whole: dict[str, bool] = {}  # ComfyUI weight -> written under one name (else split into rows)
    for diffusers_key, target in comfy.utils.flux_to_diffusers(model.model_config.unet_config, output_prefix="").items():
        if not diffusers_key.endswith(".weight") or (not isinstance(target, str) and target[1] is None):
            continue  # biases, and the final layer's reordered modulation (never adapted)
        weight_key, rows = (target, None) if isinstance(target, str) else (target[0], target[1][1:])
        if weight_key in written_whole and (rows is None or written_whole[weight_key]):
            continue  # a later alias of a layer already written (0.33 also maps Flux.2's and LyCORIS's names)
        written_whole[weight_key] = rows is None
        name = "lora_unet_" + weight_key[: -len(".weight")].replace(".", "_")
        if f"{name}.lora_down.weight" not in kohya:
            continue
        down, up = kohya[f"{name}.lora_down.weight"], kohya[f"{name}.lora_up.weight"]
        scale = kohya[f"{name}.alpha"].item() / down.shape[0]
        module = "transformer." + diffusers_key[: -len(".weight")]
        out[f"{module}.lora_A.weight"] = down * scale
        out[f"{module}.lora_B.weight"] = up if rows is None else up[rows[0]: rows[0] + rows[1]]
    return out


def test_load_lora_reads_an_ai_toolkit_flux_file_as_the_same_change(comfy_dirs, dataset):
    """Load LoRA places diffusers-named split layers on ComfyUI's fused ones; Save LoRA writes a kohya file that
    LoraLoader loads completely; continuing it as initial_lora is refused by name (its fused layers' rank)."""
    bundle = flow_models.tiny_flux_dev()
    trained = runtime.run_node("LoraLabTrainLoRA", **flux_inputs(bundle, dataset, unet_lr=1e-2))[2]
    kohya = trained.weights()
    safetensors.torch.save_file({key: value.contiguous() for key, value in
                                 diffusers_named(kohya, bundle.model.model).items()},
                                str(comfy_dirs["loras"] / "ai_toolkit.safetensors"))
    (imported,) = runtime.run_node("LoraLabLoadLoRA", lora_name="ai_toolkit.safetensors", model=bundle.model)
    shapes = {name: module.weight.shape for name, module in
              {"lora_unet_" + t.path.replace(".", "_"): t.module for t in
               runtime.pack("trainer.models.targets").unet_targets(bundle.model.model.diffusion_model, False)}.items()}
    assert helpers.module_names(imported.weights()) == helpers.module_names(kohya)
    for name, shape in shapes.items():
        torch.testing.assert_close(helpers.reference_delta(imported.weights(), name, shape),
                                   helpers.reference_delta(kohya, name, shape), rtol=1e-5, atol=1e-7)
    path = runtime.run_node("LoraLabSaveLoRA", lora=imported, filename_prefix="flux/from_ai_toolkit", epochs="final",
                            dtype="fp32", overwrite=False).ui["loras"][0]["path"]
    with helpers.comfy_warnings() as warnings:
        runtime.run_node("LoraLoaderModelOnly", model=bundle.model, lora_name=path.split("loras/", 1)[-1],
                         strength_model=1.0)
    assert not [message for message in warnings if "lora key not loaded" in message], warnings
    with pytest.raises(errors.SettingsError, match="initial_lora: .* have rank 12, not 4"):
        runtime.run_node("LoraLabTrainLoRA", **flux_inputs(bundle, dataset, initial_lora=imported, rank=4))


def test_flux_trains_clip_l_as_kohya_does_and_leaves_t5_frozen(dataset, comfy_dirs):
    """text_encoder_lr > 0 on Flux dev trains CLIP-L under kohya's lora_te1_ names; T5-XXL stays frozen (its
    outputs are cached), and LoraLoader puts every text-encoder key back on the graph's CLIP. In Flux, CLIP-L
    gives the pooled vector; T5 gives the token conditioning."""
    bundle = flow_models.tiny_flux_dev()
    t5 = bundle.clip.cond_stage_model.t5xxl
    t5_before = {name: tensor.clone() for name, tensor in t5.state_dict().items()}
    base_tokens, base_pooled = encoded(bundle.clip)
    lora = runtime.run_node("LoraLabTrainLoRA", **flux_inputs(bundle, dataset, text_encoder_lr=1e-2))[2]
    text_names = {name for name in helpers.module_names(lora.weights()) if name.startswith("lora_te")}
    assert text_names and all(name.startswith("lora_te1_text_model_encoder_layers_") for name in text_names)
    assert all(torch.equal(tensor, t5_before[name]) for name, tensor in t5.state_dict().items())

    saved = runtime.run_node("LoraLabSaveLoRA", lora=lora, filename_prefix="flux/clip_l", epochs="final",
                             dtype="fp32", overwrite=False)
    with helpers.comfy_warnings() as warnings:
        _, clip = runtime.run_node("LoraLoader", model=bundle.model, clip=bundle.clip, strength_model=1.0,
                                   strength_clip=1.0, lora_name=saved.ui["loras"][0]["path"].split("loras/", 1)[-1])
    assert not [message for message in warnings if "lora key not loaded" in message], warnings
    tokens, pooled = encoded(clip)
    assert torch.equal(tokens, base_tokens)  # T5's conditioning: no adapter there
    assert not torch.allclose(pooled, base_pooled)  # the trained CLIP-L moves the pooled vector
    assert all(torch.equal(after, before) for after, before in zip(encoded(bundle.clip), (base_tokens, base_pooled)))


def encoded(clip) -> tuple[torch.Tensor, torch.Tensor]:
    """(T5 token conditioning, CLIP-L pooled vector) with the CLIP's LoRA patches applied, as fp32 CPU copies."""
    with helpers.patches_applied(clip.patcher), torch.no_grad():
        tokens, pooled = clip.encode_from_tokens(clip.tokenize("a photo of a red circle"), return_pooled=True)
    return tokens.to("cpu", torch.float32, copy=True), pooled.to("cpu", torch.float32, copy=True)


def test_a_flux_file_from_load_diffusion_model_in_fp8_trains_saves_and_sweeps(tmp_path, comfy_dirs):
    """The Flux pipeline as a user wires it: a Flux.1 dev transformer file (real widths, one block of each kind, fp8
    as Flux's fp8 releases) detected by Load Diffusion Model with weight_dtype fp8_e4m3fn, then Load Dataset ->
    Train LoRA -> Save LoRA -> Strength Sweep. DualCLIPLoader cannot stand in for the text encoders: ComfyUI builds
    T5-XXL from its fixed 24-layer config whatever the file holds, 4.7B weights, so they are built in memory at
    Flux's widths (CLIP-L 768, T5 4096)."""
    import folder_paths

    path = flow_models.full_width_flux_file(depth=1, depth_single_blocks=1)
    folder_paths.add_model_folder_path("diffusion_models", str(path.parent))
    model = runtime.run_node("UNETLoader", unet_name=path.name, weight_dtype="fp8_e4m3fn")[0]
    assert model.model.diffusion_model.img_in.weight.dtype == torch.float8_e4m3fn
    clip = flow_models.full_width_flux_clip()
    vae = flow_models.assemble_vae(flow_models.vae_weights(flow_models.tiny_vae_config(16), 2),
                                   flow_models.tiny_vae_config(16), latent_channels=16)
    folder = tmp_path / "data"
    training_data.captioned_shapes(folder, count=1)
    dataset, report = runtime.run_node("LoraLabLoadDataset", path=str(folder), repeats=1, caption_extension=".txt",
                                       class_tokens="", model=model, clip=clip, trigger_word="sks", batch_size=1, epochs=1)
    assert "flux_dev" in report, report
    graph = type("Graph", (), {"model": model, "clip": clip, "vae": vae})
    trained = runtime.run_node("LoraLabTrainLoRA", **flux_inputs(graph, dataset, resolution=64, rank=4,
                                                                  mixed_precision="fp32"))
    lora = trained[2]
    assert lora.family == "flux_dev"
    saved = runtime.run_node("LoraLabSaveLoRA", lora=lora, filename_prefix="flux_fp8", epochs="final", dtype="fp16",
                             overwrite=False)
    keys = set(safetensors.torch.load_file(folder_paths.get_full_path("loras", saved.ui["loras"][0]["lora_name"])))
    assert "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight" in keys
    assert "lora_unet_single_blocks_0_linear1.lora_up.weight" in keys
    grid = runtime.run_node("LoraLabStrengthSweep", model=model, clip=clip, vae=vae, lora=lora, prompts="sks, a red circle",
                            negative="", strengths="0, 1", seeds="1", epochs="final", clip_strength_ratio=1.0, width=64,
                            height=64, steps=1, cfg=1.0, sampler_name="euler", scheduler="simple", guidance=3.5)[0]
    assert grid.shape[0] == 1 and torch.isfinite(grid).all()
