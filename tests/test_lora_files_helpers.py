"""Shared by the LoRA-file tests: random adapters over a fixture's real target layers, and an independent reference.

`random_trained_lora` builds what the trainer will hand Save LoRA (kohya names, trainer layouts) from
random tensors; `reference_delta` computes each layer's weight change from the formulas in the
kohya/LyCORIS format, without ComfyUI, so ComfyUI's LoraLoader can be checked against it.
"""
from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from harness import runtime

NETWORKS = ("LoRA", "LoCon", "LoHa", "LoKr")


@dataclass
class Layer:
    """A layer that carries an adapter: its kohya name, the module in a model, and whether it is in the UNet."""

    name: str
    module: torch.nn.Module
    in_unet: bool
    is_conv3x3: bool


def adapter_layers(bundle: Any, include_convs: bool, text_encoder: bool = True) -> list[Layer]:
    """The layers the trainer targets in a fixture bundle, named as kohya names them."""
    targets = runtime.pack("trainer.models.targets")
    names = runtime.pack("trainer.files.kohya_names")
    family = runtime.pack("trainer.models.families").BY_NAME[bundle.family]
    diffusion_model = bundle.model.model.diffusion_model
    unet_targets = targets.unet_targets(diffusion_model, include_convs, family.adapter_blocks, family.adapter_exclude)
    unet_names = names.unet_names(bundle.model.model.model_config.unet_config, family, [t.path for t in unet_targets])
    layers = [Layer(unet_names[t.path], t.module, True, t.is_conv3x3) for t in unet_targets]
    if text_encoder:
        for target in targets.text_encoder_targets(bundle.clip.cond_stage_model, family.text_encoder_prefixes, family.text_encoder_layers):
            layers.append(Layer(names.text_encoder_name(target.path, family), target.module, False, False))
    return layers


def _factor(size: int) -> int:
    """A small factor of `size` for the LoKr w1 side (2 or 4 where possible, as LyCORIS' factorisation favours)."""
    return next(candidate for candidate in (4, 2, 1) if size % candidate == 0)


def random_adapter(layer: Layer, network: str, rank: int, alpha: float, generator: torch.Generator,
                   decomposed: bool) -> dict[str, torch.Tensor]:
    """Random kohya/LyCORIS tensors for one layer, in the layouts the trainer produces, sized for a visible change."""
    weight = layer.module.weight
    out_features, in_features = weight.shape[0], weight.shape[1]
    kernel = tuple(weight.shape[2:])
    flat_in = math.prod(weight.shape[1:])

    def randn(*shape: int, std: float) -> torch.Tensor:
        return torch.randn(shape, generator=generator) * std

    name = layer.name
    tensors = {f"{name}.alpha": torch.tensor(float(alpha))}
    if network in ("LoRA", "LoCon"):
        tensors[f"{name}.lora_down.weight"] = randn(rank, in_features, *kernel, std=0.1)
        tensors[f"{name}.lora_up.weight"] = randn(out_features, rank, *((1, 1) if kernel else ()), std=0.1)
    elif network == "LoHa":
        for factor in ("1", "2"):
            tensors[f"{name}.hada_w{factor}_a"] = randn(out_features, rank, std=0.3)
            tensors[f"{name}.hada_w{factor}_b"] = randn(rank, flat_in, std=0.3)
    else:
        a, c = _factor(out_features), _factor(in_features)
        b, d = out_features // a, in_features // c
        tensors[f"{name}.lokr_w1"] = randn(a, c, std=0.1)
        if decomposed:
            tensors[f"{name}.lokr_w2_a"] = randn(b, rank, std=0.3)
            tensors[f"{name}.lokr_w2_b"] = randn(rank, d * math.prod(kernel), std=0.3)
        else:  # full factor: ComfyUI applies no alpha/rank scale, so the trainer bakes it in
            tensors[f"{name}.lokr_w2"] = randn(b, d, *kernel, std=0.1)
    return tensors


def random_trained_lora(bundle: Any, network: str, *, rank: int = 4, alpha: float = 2.0, conv_rank: int = 2,
                        conv_alpha: float = 1.0, text_encoder: bool = True, epochs: tuple[int, ...] = (1,),
                        seed: int = 0, settings: dict | None = None, dataset_summary: dict | None = None) -> Any:
    """A TrainedLora as the trainer would return it, with random adapters on every targeted layer of `bundle`."""
    trained_lora = runtime.pack("trainer.training.trained_lora")
    include_convs = network != "LoRA"
    layers = adapter_layers(bundle, include_convs, text_encoder)
    generator = torch.Generator().manual_seed(seed)
    kept = {}
    for epoch in epochs:
        weights: dict[str, torch.Tensor] = {}
        for index, layer in enumerate(layers):
            layer_rank, layer_alpha = (conv_rank, conv_alpha) if layer.is_conv3x3 else (rank, alpha)
            weights.update(random_adapter(layer, network, layer_rank, layer_alpha, generator, decomposed=index % 2 == 0))
        kept[epoch] = trained_lora.EpochWeights(epoch=epoch, step=epoch * 10, weights=weights, train_loss=0.1 / epoch)
    return trained_lora.TrainedLora(
        family=bundle.family, network=network, rank=rank, alpha=alpha,
        conv_rank=conv_rank if include_convs else None, conv_alpha=conv_alpha if include_convs else None,
        epochs=kept, settings=settings or {}, dataset_summary=dataset_summary or {},
        started_at=1_700_000_000.0, finished_at=1_700_000_600.0,
    )


def module_names(weights: dict[str, torch.Tensor]) -> set[str]:
    return {key.split(".", 1)[0] for key in weights}


def reference_delta(weights: dict[str, torch.Tensor], name: str, weight_shape: torch.Size) -> torch.Tensor:
    """The weight change a kohya/LyCORIS module makes at strength 1, from the format's formulas alone."""
    def get(part: str) -> torch.Tensor | None:
        value = weights.get(f"{name}.{part}")
        return None if value is None else value.double()

    alpha = get("alpha")
    if get("lora_down.weight") is not None:
        down, up = get("lora_down.weight"), get("lora_up.weight")
        delta = up.flatten(1) @ down.flatten(1) * (alpha / down.shape[0])
    elif get("hada_w1_a") is not None:
        w1a, w1b, w2a, w2b = (get(part) for part in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"))
        delta = (w1a @ w1b) * (w2a @ w2b) * (alpha / w1b.shape[0])
    else:
        w1 = get("lokr_w1")
        if get("lokr_w2") is not None:
            w2, scale = get("lokr_w2").flatten(1), 1.0
        else:
            w2, scale = get("lokr_w2_a") @ get("lokr_w2_b"), alpha / get("lokr_w2_b").shape[0]
        delta = torch.kron(w1, w2) * scale
    return delta.reshape(weight_shape)


def apply_reference(bundle: Any, weights: dict[str, torch.Tensor], strength_model: float, strength_clip: float,
                    include_convs: bool) -> None:
    """Add strength x delta to the fixture's own weights in place: the independent LoraLoader reference."""
    layers = {layer.name: layer for layer in adapter_layers(bundle, include_convs)}
    with torch.no_grad():
        for name in module_names(weights):
            layer = layers[name]
            strength = strength_model if layer.in_unet else strength_clip
            delta = reference_delta(weights, name, layer.module.weight.shape)
            layer.module.weight.copy_((layer.module.weight.double() + strength * delta).to(layer.module.weight.dtype))


def unet_inputs(bundle: Any, seed: int = 1) -> dict[str, torch.Tensor]:
    """Fixed inputs for a direct diffusion-model call: latent, timestep, text context and, where the model takes
    them, the pooled vector (SDXL, Flux) and the guidance value (Flux dev)."""
    generator = torch.Generator().manual_seed(seed)
    config = bundle.model.model.model_config.unet_config
    flux = config.get("image_model") == "flux"
    context_dim = (config.get("context_dim") or config.get("context_in_dim")  # UNet / Flux
                   or config["context_embedder_config"]["params"]["in_features"])  # MMDiT
    inputs = {
        "x": torch.randn((1, config["in_channels"], 8, 8), generator=generator),
        # Flux's forward names it `timestep` and takes sigma; the UNets and MMDiT take a step of 1000.
        "timestep" if flux else "timesteps": torch.tensor([0.5 if flux else 500.0]),
        "context": torch.randn((1, 77, context_dim), generator=generator),
    }
    pooled = config.get("adm_in_channels") or config.get("vec_in_dim")
    if pooled:
        inputs["y"] = torch.randn((1, pooled), generator=generator)
    if config.get("guidance_embed"):
        inputs["guidance"] = torch.tensor([3.5])
    return inputs


@contextlib.contextmanager
def patches_applied(*patchers: Any) -> Iterator[None]:
    """Apply the patchers' weight patches the way samplers do (load_models_gpu), undo them afterwards."""
    import comfy.model_management

    comfy.model_management.load_models_gpu(list(patchers))
    try:
        yield
    finally:
        comfy.model_management.unload_all_models()


def unet_forward(model_patcher: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """A direct UNet call on the loaded model: inputs on its device and in the dtype it computes in (as
    apply_model casts them); the output comes back as an fp32 CPU copy."""
    model = model_patcher.model
    dtype = model.manual_cast_dtype or model.get_dtype()
    moved = {name: value.to(model_patcher.load_device, dtype if value.is_floating_point() else value.dtype)
             if torch.is_tensor(value) else value for name, value in inputs.items()}  # (constants such as num_tokens)
    with torch.no_grad():
        return model.diffusion_model(**moved).to("cpu", torch.float32, copy=True)


def clip_encode(clip: Any, text: str = "a photo of a red circle") -> torch.Tensor:
    """What the trainable text encoders give the model: the conditioning sequence, or for Flux (where T5 writes
    the sequence and CLIP-L shows only in the pooled vector) CLIP-L's pooled output."""
    with torch.no_grad():
        cond, pooled = clip.encode_from_tokens(clip.tokenize(text), return_pooled=True)
    encoder = clip.cond_stage_model
    shown = pooled if hasattr(encoder, "t5xxl") and hasattr(encoder, "clip_l") else cond
    return shown.to("cpu", torch.float32, copy=True)


def unet_output(model_patcher: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with patches_applied(model_patcher):
        return unet_forward(model_patcher, inputs)


def clip_output(clip: Any) -> torch.Tensor:
    with patches_applied(clip.patcher):
        return clip_encode(clip)


@contextlib.contextmanager
def comfy_warnings() -> Iterator[list[str]]:
    """Collect what ComfyUI logs at WARNING and above (e.g. 'lora key not loaded: ...') while the block runs."""
    messages: list[str] = []

    class Collector(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = Collector(level=logging.WARNING)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield messages
    finally:
        root.removeHandler(handler)
