"""kohya's Flux file naming on ComfyUI's Flux layers, checked against the loaders users have.

kohya's lora_flux.py adapts every Linear in the double and single stream blocks and names each
`lora_unet_<ComfyUI module path, dots as underscores>` (Black Forest Labs' paths, which ComfyUI keeps), CLIP-L
layers `lora_te1_text_model_encoder_layers_<i>_<part>`. ComfyUI's LoraLoader must place every key; diffusers'
kohya-Flux conversion must put every layer where ComfyUI has it; ai-toolkit's (diffusers-named) files must come
back as the same change on ComfyUI's fused layers.
"""
from __future__ import annotations

import collections
import re

import pytest
import safetensors.torch
import torch

import test_lora_files_helpers as helpers
from harness import flow_models, runtime

KOHYA_DOUBLE_BLOCK = {"img_mod.lin", "img_attn.qkv", "img_attn.proj", "img_mlp.0", "img_mlp.2",
                      "txt_mod.lin", "txt_attn.qkv", "txt_attn.proj", "txt_mlp.0", "txt_mlp.2"}
KOHYA_SINGLE_BLOCK = {"linear1", "linear2", "modulation.lin"}
MODULATION = {"img_mod.lin", "txt_mod.lin", "modulation.lin"}  # Chroma's blocks have none: one approximator feeds them


def kohya_unet_name(path: str) -> str:
    return "lora_unet_" + path.replace(".", "_")


def unet_layers(diffusion_model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The layers LoRA Lab adapts, by the name kohya gives them."""
    targets = runtime.pack("trainer.models.targets").unet_targets(diffusion_model, include_convs=False)
    return {kohya_unet_name(target.path): target.module for target in targets}


def clip_l_layers(clip) -> dict[str, torch.nn.Module]:
    targets = runtime.pack("trainer.models.targets").text_encoder_targets(clip.cond_stage_model, {"clip_l": "lora_te1"})
    layers = {}
    for target in targets:
        match = re.match(r"clip_l\.transformer\.text_model\.encoder\.layers\.(\d+)\.(.+)$", target.path)
        layers[f"lora_te1_text_model_encoder_layers_{match[1]}_{match[2].replace('.', '_')}"] = target.module
    return layers


def random_lora(layers: dict[str, torch.nn.Module], rank: int = 4, alpha: float = 2.0, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, module in layers.items():
        out_features, in_features = module.weight.shape
        tensors[f"{name}.lora_down.weight"] = torch.randn(rank, in_features, generator=generator) * 0.1
        tensors[f"{name}.lora_up.weight"] = torch.randn(out_features, rank, generator=generator) * 0.1
        tensors[f"{name}.alpha"] = torch.tensor(alpha)
    return tensors


@pytest.mark.parametrize("family", sorted(flow_models.FLUX_FAMILIES))
def test_flux_targets_are_the_layers_kohya_trains(family):
    diffusion_model = flow_models.FLUX_FAMILIES[family]().model.model.diffusion_model
    parts = collections.defaultdict(set)
    for target in runtime.pack("trainer.models.targets").unet_targets(diffusion_model, include_convs=False):
        kind, index, part = target.path.split(".", 2)
        parts[kind].add(part)
    expected_double, expected_single = KOHYA_DOUBLE_BLOCK, KOHYA_SINGLE_BLOCK
    if family == "chroma":
        expected_double, expected_single = expected_double - MODULATION, expected_single - MODULATION
    assert dict(parts) == {"double_blocks": expected_double, "single_blocks": expected_single}


@pytest.mark.parametrize("family", sorted(flow_models.FLUX_FAMILIES))
def test_lora_loader_loads_every_kohya_flux_key_onto_its_layer(family, comfy_dirs):
    bundle = flow_models.FLUX_FAMILIES[family]()
    layers = unet_layers(bundle.model.model.diffusion_model)
    if family != "chroma":
        layers.update(clip_l_layers(bundle.clip))
    tensors = random_lora(layers)
    safetensors.torch.save_file(tensors, str(comfy_dirs["loras"] / "flux_kohya.safetensors"))
    before = {name: module.weight.detach().clone().double() for name, module in layers.items()}
    with helpers.comfy_warnings() as warnings:
        model, clip = runtime.run_node("LoraLoader", model=bundle.model, clip=bundle.clip,
                                       lora_name="flux_kohya.safetensors", strength_model=1.0, strength_clip=1.0)
    assert not [message for message in warnings if "lora key not loaded" in message]
    with helpers.patches_applied(model, clip.patcher):
        after = {name: module.weight.detach().clone().double() for name, module in layers.items()}
    for name, module in layers.items():
        expected = (before[name] + helpers.reference_delta(tensors, name, before[name].shape)).to(module.weight.dtype)
        torch.testing.assert_close(after[name].to(module.weight.dtype), expected)  # to the weight's own precision


def probed_change(down: torch.Tensor, up: torch.Tensor, scale: float, probe: torch.Tensor) -> torch.Tensor:
    """A LoRA's weight change applied to probe vectors: (up @ down * scale) @ probe without forming the matrix,
    which at Flux's widths is 66M entries a layer. Changes that differ anywhere differ on random probes."""
    return (up.double() @ (down.double() @ probe)) * scale


def kohya_probed(tensors: dict[str, torch.Tensor], name: str, probe: torch.Tensor) -> torch.Tensor:
    down = tensors[f"{name}.lora_down.weight"]
    return probed_change(down, tensors[f"{name}.lora_up.weight"], tensors[f"{name}.alpha"].item() / down.shape[0],
                         probe[: down.shape[1]])


PROBE = torch.randn(16384, 6, generator=torch.Generator().manual_seed(7), dtype=torch.float64)


def full_width_layers() -> tuple[object, dict[str, torch.nn.Module]]:
    model = flow_models.full_width_flux_on_meta()
    return model, unet_layers(model.diffusion_model)


def diffusers_flux_transformer():
    """diffusers' Flux transformer with the meta model's widths and blocks; weights left uninitialised (only the
    LoRA layers diffusers adds are read)."""
    diffusers = pytest.importorskip("diffusers")
    with torch.device("meta"):
        transformer = diffusers.FluxTransformer2DModel(
            patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=128,
            num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
            axes_dims_rope=(16, 56, 56))
    return transformer.to(torch.bfloat16).to_empty(device="cpu")


def comfy_place(diffusers_name: str, model) -> tuple[str, tuple[int, int] | None]:
    """Where ComfyUI's own diffusers-Flux key map puts a diffusers layer: kohya name and row slice (or None)."""
    import comfy.utils

    key_map = comfy.utils.flux_to_diffusers(model.model_config.unet_config, output_prefix="")
    target = key_map[diffusers_name + ".weight"]
    if isinstance(target, str):
        return kohya_unet_name(target[: -len(".weight")]), None
    weight_key, (_, offset, size) = target
    return kohya_unet_name(weight_key[: -len(".weight")]), (offset, size)


def test_diffusers_loads_a_kohya_flux_file_with_every_layer_where_comfyui_has_it(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    model, layers = full_width_layers()
    clip = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        hidden_size=32, intermediate_size=128, num_attention_heads=2, num_hidden_layers=3, vocab_size=49408))
    te_layers = {f"lora_te1_text_model_encoder_layers_{i}_{part.replace('.', '_')}": layer
                 for i, block in enumerate(getattr(clip, "text_model", clip).encoder.layers)  # transformers 5 dropped text_model
                 for part, layer in block.named_modules() if isinstance(layer, torch.nn.Linear)}
    tensors = random_lora({**layers, **te_layers})
    path = tmp_path / "flux_kohya.safetensors"
    safetensors.torch.save_file(tensors, str(path))
    transformer = diffusers_flux_transformer()
    pipe = diffusers.FluxPipeline(scheduler=None, vae=None, text_encoder=clip, tokenizer=None, text_encoder_2=None,
                                  tokenizer_2=None, transformer=transformer)
    pipe.load_lora_weights(str(path))

    placed = collections.defaultdict(list)
    for part, module in (("transformer", transformer), ("text_encoder", clip)):
        for name, layer in module.named_modules():
            if not isinstance(layer, peft.tuners.lora.LoraLayer):
                continue
            adapter = next(iter(layer.lora_A))
            down = layer.lora_A[adapter].weight
            delta = probed_change(down, layer.lora_B[adapter].weight, layer.scaling[adapter], PROBE[: down.shape[1]])
            if part == "transformer":
                kohya, rows = comfy_place(name, model)
            else:
                path = name.removeprefix("text_model.")  # transformers 5 has no text_model level
                kohya, rows = "lora_te1_text_model_" + path.replace(".", "_"), None
            placed[kohya].append((rows, delta))
    assert set(placed) == helpers.module_names(tensors)  # every layer, and nothing else
    for kohya, pieces in placed.items():
        expected = kohya_probed(tensors, kohya, PROBE)
        for rows, delta in pieces:
            reference = expected if rows is None else expected[rows[0]: rows[0] + rows[1]]
            # diffusers keeps the LoRA in the transformer's bf16: 8 bits of mantissa, so compare to the change's scale
            assert (delta - reference).abs().max() < 2e-2 * reference.abs().max()
        assert sum(delta.shape[0] for _, delta in pieces) == expected.shape[0]  # slices cover the fused layer


def test_an_ai_toolkit_flux_file_comes_back_as_the_same_change_on_comfyuis_fused_layers(tmp_path):
    """diffusers converts the kohya file to ai-toolkit's naming (split q/k/v, peft lora_A/lora_B); our import
    puts the split LoRAs back onto ComfyUI's fused layers with exactly the kohya file's change."""
    import comfy.lora

    diffusers = pytest.importorskip("diffusers")
    model, layers = full_width_layers()
    tensors = random_lora(layers, alpha=8.0)
    path = tmp_path / "flux_kohya.safetensors"
    safetensors.torch.save_file(tensors, str(path))
    ai_toolkit = diffusers.FluxPipeline.lora_state_dict(str(path))
    ai_toolkit = ai_toolkit[0] if isinstance(ai_toolkit, tuple) else ai_toolkit
    assert all(key.startswith("transformer.") for key in ai_toolkit)
    assert any(".attn.to_q." in key for key in ai_toolkit) and any(".proj_mlp." in key for key in ai_toolkit)

    shapes = {f"diffusion_model.{key}": value.shape for key, value in model.diffusion_model.state_dict().items()}
    comfy_named = runtime.pack("trainer.files.diffusers_lora").to_comfy_modules(
        ai_toolkit, comfy.lora.model_lora_keys_unet(model, {}), shapes, "ai_toolkit.safetensors")
    back = {kohya_unet_name(key.removeprefix("diffusion_model.").rsplit(".", 2)[0] if key.endswith(".weight")
                            else key.removeprefix("diffusion_model.").rsplit(".", 1)[0])
            + key[key.index(".lora_") if ".lora_" in key else key.rindex(".alpha"):]: value
            for key, value in comfy_named.items()}
    assert helpers.module_names(back) == helpers.module_names(tensors)
    for name in layers:
        torch.testing.assert_close(kohya_probed(back, name, PROBE), kohya_probed(tensors, name, PROBE),
                                   rtol=1e-5, atol=1e-7)
