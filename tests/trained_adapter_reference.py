"""The adapter a Train LoRA run trained, as the reference for what LoraLoader gives from its saved file.

During training the adapters are peft modules acting on activations inside ComfyUI's module tree; Save LoRA
writes them in kohya/LyCORIS layouts that LoraLoader merges into the weights. The reference here is the
in-process adapter itself: rebuilt with the trainer's own functions from the run's exact peft tensors (its
resumable state), injected into the graph's model as training injects it, and scaled with peft's per-layer
scale for other strengths. Used by test_trained_adapter_matches_lora_loader (CPU) and the GPU check kit.
"""
from __future__ import annotations

import contextlib
import pathlib
from typing import Any, Iterator

import torch

import test_lora_files_helpers as helpers
from harness import runtime

adapters_module = runtime.pack("trainer.training.adapters")
families = runtime.pack("trainer.models.families")
kohya_names = runtime.pack("trainer.files.kohya_names")
run_state = runtime.pack("trainer.training.run_state")
session = runtime.pack("trainer.training.session")
targets = runtime.pack("trainer.models.targets")
TrainingSettings = runtime.pack("trainer.training.settings").TrainingSettings


def in_process_adapters(bundle: Any, lora: Any) -> tuple[Any, Any | None]:
    """The run's UNet and (when it trained one) text-encoder adapters, built as the trainer builds them,
    holding its exact final tensors."""
    settings = TrainingSettings(**lora.settings)
    family = families.BY_NAME[lora.family]

    def build(part_targets: list, names: dict[str, str], root: torch.nn.Module) -> Any:
        return adapters_module.create_adapters(part_targets, names, root, settings.network_type, settings.rank,
                                               settings.network_alpha, settings.conv_rank, settings.network_conv_alpha)

    diffusion_model = bundle.model.model.diffusion_model
    unet_targets = targets.unet_targets(diffusion_model, settings.trains_convs, family.adapter_blocks,
                                        family.adapter_exclude)
    unet = build(unet_targets, kohya_names.unet_names(bundle.model.model.model_config.unet_config, family,
                                                      [target.path for target in unet_targets]), diffusion_model)
    text = None
    if settings.trains_text_encoder:
        encoder = bundle.clip.cond_stage_model
        text_targets = targets.text_encoder_targets(encoder, family.text_encoder_prefixes, family.text_encoder_layers)
        text = build(text_targets, {target.path: kohya_names.text_encoder_name(target.path, family) for target in text_targets},
                     encoder)
    trained = run_state.load_run_state(pathlib.Path(lora.state_dir)).adapters
    assert trained.keys() == unet.raw_state().keys() | (text.raw_state().keys() if text else set())
    for adapter_set in (unet, text):
        if adapter_set is not None:
            adapter_set.load_raw_state(trained)
    return unet, text


def set_strength(adapter_set: Any, strength: float) -> None:
    """peft's per-layer scale: strength x alpha/rank, as LoraLoader's strength scales the whole delta."""
    for slot in adapter_set.slots:
        slot.wrapper.set_scale(adapters_module.ADAPTER, strength)


@contextlib.contextmanager
def injected(patcher: Any, root: torch.nn.Module, adapter_set: Any, out_of_place_clip: bool) -> Iterator[None]:
    """The adapters in the module tree exactly as training puts them there (a patcher injection), removed afterwards."""
    import comfy.model_management as mm

    part = session.PartInjection(root, adapter_set, [], out_of_place_clip, mm.get_torch_device())
    session.inject(patcher, part)
    mm.load_models_gpu([patcher], force_full_load=True)
    try:
        yield
    finally:
        session.unload(patcher)


def in_process_outputs(bundle: Any, unet: Any, text: Any | None, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """UNet output and text conditioning with the trained adapters in the graph's model (the plain CLIP's
    conditioning when the run left the text encoder frozen)."""
    model = session.isolated_clone(bundle.model)
    with injected(model, model.model.diffusion_model, unet, out_of_place_clip=False):
        unet_output = helpers.unet_forward(model, inputs)
    if text is None:
        return unet_output, helpers.clip_output(bundle.clip)
    clip = bundle.clip.clone()
    with injected(clip.patcher, clip.cond_stage_model, text, out_of_place_clip=True):
        clip_output = helpers.clip_encode(clip)
    return unet_output, clip_output


def per_part(bundle: Any, unet_output: torch.Tensor, clip_output: torch.Tensor) -> dict[str, torch.Tensor]:
    """The UNet output and each text encoder's columns of the conditioning (SDXL concatenates clip_l and clip_g),
    so an encoder whose adapters were lost or mis-scaled cannot hide behind the other's larger values."""
    family = families.BY_NAME[bundle.family]
    encoder = bundle.clip.cond_stage_model
    widths = [getattr(encoder, name).transformer.get_input_embeddings().embedding_dim for name in family.text_encoder_prefixes]
    assert sum(widths) == clip_output.shape[-1]
    columns = torch.split(clip_output, widths, dim=-1)
    return {"unet": unet_output, **dict(zip(family.text_encoder_prefixes.values(), columns))}


def lora_loader_outputs(bundle: Any, lora_name: str, strength: float,
                        inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    with helpers.comfy_warnings() as warnings:
        model, clip = runtime.run_node("LoraLoader", model=bundle.model, clip=bundle.clip, lora_name=lora_name,
                                       strength_model=strength, strength_clip=strength)
    assert warnings == [], warnings  # e.g. "lora key not loaded: ..." or "ERROR lora ..."
    return helpers.unet_output(model, inputs), helpers.clip_output(clip)
