"""diffusers loads saved SD1.5 and SDXL files through its kohya-format LoRA path, every layer, each where it belongs.

The diffusers models are built from configs with random weights and the same layout as the ComfyUI
models the files were made for, so every kohya name has a layer to land on.
"""
from __future__ import annotations

import types

import pytest
import safetensors.torch
import torch

import test_lora_files_helpers as helpers
from harness import models, runtime

diffusers = pytest.importorskip("diffusers")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")


def lora_layers(module: torch.nn.Module) -> dict[str, torch.nn.Module]:
    return {name: layer for name, layer in module.named_modules() if isinstance(layer, peft.tuners.lora.LoraLayer)}


def fused_deltas(pipe, components: dict[str, torch.nn.Module]) -> dict[tuple[str, str], torch.Tensor]:
    """Weight change of every layer diffusers put a LoRA on, after fusing it at scale 1."""
    before = {(part, name): layer.base_layer.weight.detach().clone()
              for part, module in components.items() for name, layer in lora_layers(module).items()}
    pipe.fuse_lora(components=list(components), lora_scale=1.0)
    after = {(part, name): layer.base_layer.weight.detach()
             for part, module in components.items() for name, layer in lora_layers(module).items()}
    return {key: (after[key] - before[key]).double() for key in before}


def clip_text_model(hidden_size: int, layers: int, projection: bool = False):
    config = transformers.CLIPTextConfig(hidden_size=hidden_size, intermediate_size=hidden_size * 4, num_attention_heads=2,
                                         num_hidden_layers=layers, vocab_size=49408, projection_dim=hidden_size)
    return (transformers.CLIPTextModelWithProjection if projection else transformers.CLIPTextModel)(config)


def save_and_read(lora, prefix):
    saved = runtime.run_node("LoraLabSaveLoRA", lora=lora, filename_prefix=prefix, epochs="final", dtype="fp16",
                             overwrite=False)
    path = saved.ui["loras"][0]["path"]
    return path, {key: value.double() for key, value in safetensors.torch.load_file(path).items()}


@pytest.mark.parametrize("network", ["LoRA", "LoCon"])
def test_diffusers_loads_an_sd15_file_onto_the_same_layers(comfy_dirs, network):
    bundle = models.FAMILIES["sd15"]()  # UNet 32/64 channels, 1 res block per level, conv proj_in; CLIP 32 wide, 2 layers
    path, tensors = save_and_read(helpers.random_trained_lora(bundle, network), f"diffusers/sd15_{network}")
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=2, norm_num_groups=32)
    text_encoder = clip_text_model(32, 2)
    pipe = diffusers.StableDiffusionPipeline(vae=None, text_encoder=text_encoder, tokenizer=None, unet=unet,
                                             scheduler=diffusers.DDPMScheduler(clip_sample=False, steps_offset=1), safety_checker=None,
                                             feature_extractor=None, requires_safety_checker=False)
    pipe.load_lora_weights(path)

    deltas = fused_deltas(pipe, {"unet": unet, "text_encoder": text_encoder})
    file_modules = helpers.module_names(tensors)
    assert len(deltas) == len(file_modules)  # nothing dropped
    for (part, name), delta in deltas.items():
        # kohya derives SD1 names from exactly these diffusers module paths
        path_in_kohya = name.replace(".", "_") if part == "unet" else name.removeprefix("text_model.").replace(".", "_")
        kohya_name = f"lora_unet_{path_in_kohya}" if part == "unet" else f"lora_te_text_model_{path_in_kohya}"
        assert kohya_name in file_modules
        torch.testing.assert_close(delta, helpers.reference_delta(tensors, kohya_name, delta.shape).double(),
                                   rtol=1e-3, atol=1e-6)


# A small SDXL: SGM-named UNet (64 channels at the attention level, linear proj_in), two text encoders.
TINY_SDXL_COMFY = dict(use_checkpoint=False, image_size=32, in_channels=4, out_channels=4, use_spatial_transformer=True,
                       legacy=False, use_temporal_resblock=False, use_temporal_attention=False, model_channels=32,
                       num_res_blocks=[1, 1], channel_mult=[1, 2], transformer_depth=[0, 1], transformer_depth_output=[0, 0, 1, 1],
                       transformer_depth_middle=1, context_dim=64, num_heads=-1, num_head_channels=32,
                       use_linear_in_transformer=True, adm_in_channels=80, num_classes="sequential")


def sdxl_lora(network: str, text_encoders: dict[str, torch.nn.Module]):
    """A TrainedLora over a ComfyUI SDXL UNet of this layout (meta device: names and shapes) and the diffusers CLIPs."""
    import comfy.supported_models

    with torch.device("meta"):
        model = comfy.supported_models.SDXL(dict(TINY_SDXL_COMFY)).get_model({}, device="meta")
    bundle = types.SimpleNamespace(family="sdxl", model=types.SimpleNamespace(model=model))
    layers = helpers.adapter_layers(bundle, include_convs=network != "LoRA", text_encoder=False)
    names = runtime.pack("trainer.files.kohya_names")
    family = runtime.pack("trainer.models.families").SDXL
    for encoder, text_model in text_encoders.items():
        for path, module in text_model.named_modules():
            if isinstance(module, torch.nn.Linear) and ".layers." in path:
                comfy_path = f"{encoder}.transformer.text_model.encoder.layers.{path.split('.layers.')[1]}"
                layers.append(helpers.Layer(names.text_encoder_name(comfy_path, family), module, False, False))
    generator = torch.Generator().manual_seed(0)
    weights = {}
    for layer in layers:
        rank, alpha = (2, 1.0) if layer.is_conv3x3 else (4, 2.0)
        weights.update(helpers.random_adapter(layer, "LoRA", rank, alpha, generator, decomposed=False))
    trained_lora = runtime.pack("trainer.training.trained_lora")
    return trained_lora.TrainedLora(family="sdxl", network=network, rank=4, alpha=2.0, conv_rank=2, conv_alpha=1.0,
                                    epochs={1: trained_lora.EpochWeights(1, 10, weights, 0.1)})


@pytest.mark.parametrize("network", ["LoRA", "LoCon"])
def test_diffusers_loads_an_sdxl_file_without_dropping_layers(comfy_dirs, network):
    text_encoder, text_encoder_2 = clip_text_model(32, 2), clip_text_model(32, 3, projection=True)
    path, tensors = save_and_read(sdxl_lora(network, {"clip_l": text_encoder, "clip_g": text_encoder_2}),
                                  f"diffusers/sdxl_{network}")
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64, attention_head_dim=(1, 2), use_linear_projection=True, norm_num_groups=32,
        addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=80)
    pipe = diffusers.StableDiffusionXLPipeline(vae=None, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                               tokenizer=None, tokenizer_2=None, unet=unet,
                                               scheduler=diffusers.EulerDiscreteScheduler(steps_offset=1))
    pipe.load_lora_weights(path)

    deltas = fused_deltas(pipe, {"unet": unet, "text_encoder": text_encoder, "text_encoder_2": text_encoder_2})
    modules = helpers.module_names(tensors)
    assert len(deltas) == len(modules)  # nothing dropped
    assert sum(part == "text_encoder_2" for part, _ in deltas) == sum(name.startswith("lora_te2_") for name in modules)
    # SGM and diffusers names differ, so match each landed change to the file's layer that makes it.
    unmatched = set(modules)
    for delta in deltas.values():
        match = next((name for name in sorted(unmatched) if makes(tensors, name, delta)), None)
        assert match is not None
        unmatched.remove(match)
    assert unmatched == set()


def makes(tensors: dict[str, torch.Tensor], name: str, delta: torch.Tensor) -> bool:
    """Whether the file's layer `name` makes exactly this weight change."""
    size = tensors[f"{name}.lora_up.weight"].shape[0] * tensors[f"{name}.lora_down.weight"][0].numel()
    return size == delta.numel() and torch.allclose(delta, helpers.reference_delta(tensors, name, delta.shape),
                                                    rtol=1e-3, atol=1e-6)
