"""Training on a MODEL whose UNet weights are stored in fp8, as Load Diffusion Model (weight_dtype fp8_e4m3fn) loads it.

fp8 is storage only: ComfyUI's manual-cast layers upcast each weight per forward. Training must learn on such a
model, leave its fp8 weights bit-identical, and give a LoRA that ComfyUI's own loader applies to it.
"""
from __future__ import annotations

import pytest
import torch

import test_lora_files_helpers as helpers
from harness import models, runtime, training_data

memory = runtime.pack("trainer.training.memory")
families = runtime.pack("trainer.models.families")
precision = runtime.pack("trainer.training.precision")
TrainingSettings = runtime.pack("trainer.training.settings").TrainingSettings

FP8 = torch.float8_e4m3fn


def raw_weights(bundle) -> dict[str, torch.Tensor]:
    """The UNet's stored tensors, as raw bytes (bit-exact comparison whatever the dtype)."""
    return {key: value.detach().clone().view(torch.uint8) for key, value in bundle.model.model.diffusion_model.state_dict().items()}


def sample(model, clip, text="sks, a red circle") -> torch.Tensor:
    positive = runtime.run_node("CLIPTextEncode", clip=clip, text=text)[0]
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    return runtime.run_node("KSampler", model=model, seed=3, steps=2, cfg=1.0, sampler_name="euler", scheduler="normal",
                            positive=positive, negative=positive, latent_image=latent, denoise=1.0)[0]["samples"]


class InputDtypes:
    """Records the dtype the UNet computes in (its input, after ComfyUI's cast to the compute dtype)."""

    def __init__(self, bundle) -> None:
        self.seen: set[torch.dtype] = set()
        self.handle = bundle.model.model.diffusion_model.register_forward_pre_hook(
            lambda module, args: self.seen.add(args[0].dtype))

    def remove(self) -> None:
        self.handle.remove()


@pytest.fixture
def fp8_model():
    return models.tiny_sd15_fp8()


@pytest.fixture
def twins(tmp_path):
    return training_data.captioned_shapes(tmp_path / "data", count=2, repeats=8, twins=True)


def test_fixture_is_stored_in_fp8_with_manual_cast_layers(fp8_model):
    diffusion_model = fp8_model.model.model.diffusion_model
    assert {parameter.dtype for parameter in diffusion_model.parameters()} == {FP8}
    assert fp8_model.model.model.get_dtype() == FP8
    assert fp8_model.model.model.manual_cast_dtype is not None  # compute happens in another dtype
    assert torch.isfinite(sample(fp8_model.model, fp8_model.clip)).all()


@pytest.mark.parametrize("mixed_precision", ["fp32", "bf16"])
def test_lora_trains_on_fp8_weights_and_leaves_them_untouched(fp8_model, twins, tmp_path, comfy_dirs, mixed_precision):
    before = raw_weights(fp8_model)
    graph_compute_dtype = fp8_model.model.model.manual_cast_dtype
    reference = sample(fp8_model.model, fp8_model.clip)
    dtypes = InputDtypes(fp8_model)
    try:
        model_out, clip_out, lora, _, _ = runtime.run_node("LoraLabTrainLoRA", **training_data.node_inputs(
            fp8_model, twins, epochs=4, unet_lr=2e-2, validation_split=0.5, min_snr_gamma=0, rank=8, batch_size=2,
            mixed_precision=mixed_precision))
    finally:
        dtypes.remove()

    # Computed in the dtype mixed_precision names, never in fp8.
    assert dtypes.seen == {precision.COMPUTE_DTYPES[mixed_precision]}
    assert all(torch.isfinite(torch.tensor(loss)) for _, loss in lora.loss_history)
    validation = [loss for _, loss in lora.validation_history]
    assert validation[-1] < validation[0] * 0.95, validation
    ups = [value for key, value in lora.weights().items() if key.endswith("lora_up.weight")]
    assert ups and all(value.abs().max() > 0 for value in ups), "lora_up starts at zero: it must have moved"

    # The graph's MODEL: same fp8 bytes, same compute dtype, same images; the output MODEL carries the LoRA.
    after = raw_weights(fp8_model)
    assert {value.dtype for value in fp8_model.model.model.diffusion_model.state_dict().values()} == {FP8}
    assert after.keys() == before.keys() and all(torch.equal(before[key], after[key]) for key in before)
    assert fp8_model.model.model.manual_cast_dtype == graph_compute_dtype
    assert not fp8_model.model.is_injected
    assert torch.equal(sample(fp8_model.model, fp8_model.clip), reference)
    trained = sample(model_out, clip_out)
    assert torch.isfinite(trained).all() and not torch.equal(trained, reference)


def test_fp8_storage_trains_like_the_same_weights_in_fp32(fp8_model, tmp_path, comfy_dirs):
    """fp8 is only how the weights are stored: in fp32 compute, from the same starting adapter, the run equals
    one on a model holding the same weights in fp32."""
    dataset = training_data.captioned_shapes(tmp_path / "data", count=2)
    upcast = models.tiny_sd15()
    with torch.no_grad():
        for name, parameter in upcast.model.model.diffusion_model.named_parameters():
            parameter.copy_(fp8_model.model.model.diffusion_model.get_parameter(name).float())
    inputs = dict(epochs=2, unet_lr=1e-2, mixed_precision="fp32")
    start = runtime.run_node("LoraLabTrainLoRA", **training_data.node_inputs(upcast, dataset, **inputs))[2]
    from_fp8, from_fp32 = (runtime.run_node("LoraLabTrainLoRA", **training_data.node_inputs(
        bundle, dataset, initial_lora=start, **inputs))[2] for bundle in (fp8_model, upcast))
    assert [loss for _, loss in from_fp8.loss_history] == pytest.approx([loss for _, loss in from_fp32.loss_history], rel=1e-5)
    for key, value in from_fp32.weights().items():
        assert torch.allclose(from_fp8.weights()[key], value, atol=1e-6), key


@pytest.mark.parametrize("network", ["LoRA", "LoHa", "LoKr"])
def test_adapters_start_in_full_precision_on_fp8_weights(fp8_model, tmp_path, comfy_dirs, network):
    """peft would create them in the base layer's dtype: fp8 initial values (3 mantissa bits)."""
    dataset = training_data.captioned_shapes(tmp_path / "data", count=1)
    lora = runtime.run_node("LoraLabTrainLoRA", **training_data.node_inputs(fp8_model, dataset, network=network,
                                                                             epochs=1, unet_lr=1e-12))[2]
    tensors = {key: value for key, value in lora.weights().items() if not key.endswith(".alpha")}
    assert tensors and all(value.dtype == torch.float32 for value in tensors.values())
    rounded = [key for key, value in tensors.items() if torch.equal(value.to(FP8).float(), value)]
    assert rounded == [], f"initial values were rounded to fp8: {rounded[:3]}"


def test_saved_lora_loads_on_the_fp8_model_with_lora_loader(fp8_model, tmp_path, comfy_dirs):
    dataset = training_data.captioned_shapes(tmp_path / "data", count=2)
    lora = runtime.run_node("LoraLabTrainLoRA", **training_data.node_inputs(fp8_model, dataset, epochs=2, unet_lr=2e-2))[2]
    runtime.run_node("LoraLabSaveLoRA", lora=lora, filename_prefix="fp8", epochs="final", dtype="fp16", overwrite=False)
    before = raw_weights(fp8_model)
    reference = sample(fp8_model.model, fp8_model.clip)
    with helpers.comfy_warnings() as warnings:
        model, clip = runtime.run_node("LoraLoader", model=fp8_model.model, clip=fp8_model.clip, lora_name="fp8.safetensors",
                                       strength_model=1.0, strength_clip=1.0)
        with_lora = sample(model, clip)
    assert [message for message in warnings if "lora" in message.lower()] == []  # e.g. "lora key not loaded"
    assert torch.isfinite(with_lora).all() and not torch.equal(with_lora, reference)
    assert torch.equal(sample(fp8_model.model, fp8_model.clip), reference)
    after = raw_weights(fp8_model)
    assert all(torch.equal(before[key], after[key]) for key in before)


def test_memory_estimate_counts_fp8_weights_at_one_byte_each(tmp_path):
    """On a GPU the frozen UNet weights count in their storage dtype: fp8 half of fp16."""
    dataset = training_data.captioned_shapes(tmp_path / "data", count=2)
    settings = TrainingSettings(**training_data.FAST)  # frozen text encoder, fixed captions: only the UNet loads
    gpu = torch.device("cuda")  # the estimate only reads the device's kind; nothing runs on it

    def estimate(bundle):
        return memory.training_estimator(bundle.model, bundle.clip, None, None, list(dataset.images), families.SD15, gpu)(settings, 64)

    fp8, fp16 = estimate(models.tiny_sd15_fp8()), estimate(models.tiny_sd15(weight_dtype=torch.float16))
    count = sum(parameter.numel() for parameter in models.tiny_sd15_fp8().model.model.diffusion_model.parameters())
    assert fp8.weights == count
    assert fp16.weights == 2 * count
    assert fp8.total < fp16.total
