"""Peak training memory, estimated before the first step, so a run that cannot fit stops at once with a fix.

    peak = frozen weights + adapters (parameters, gradients, optimizer state) + activations + workspace

- Frozen weights count in the dtype they are stored in (fp8 storage: one byte a weight); the text encoder
  counts too when it trains or must encode captions every step.
- Adapters train in fp32: 4 bytes of parameter, 4 of gradient, and the optimizer's state (OPTIMIZER_STATE_BYTES).
- Activations grow with batch size x latent area. `activation_profile` reads from the model's layers how many
  values one forward produces per latent pixel: all layers, the outputs of the blocks gradient checkpointing
  keeps, and the largest block (recomputed, then backpropagated, one at a time). CALIBRATION turns these
  counts into bytes; it was measured, not guessed (see its docstring).
- Attention kernels that materialise the score matrix (ComfyUI's split, sub-quadratic and basic attention,
  its choices on CPU) add heads x tokens^2 per self-attention layer; flash/SDPA/xformers/sage kernels do not.

`estimate_peak` and `fitting_changes` are pure; `check_fits` is the bridge to ComfyUI that the trainer
calls before encoding anything, and raises OutOfMemory naming the settings that would fit.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

from ..data.buckets import make_buckets, nearest_bucket, samples_per_bucket
from ..data.dataset import DatasetImage
from ..errors import OutOfMemory
from .precision import COMPUTE_DTYPES
from .settings import TrainingSettings

if TYPE_CHECKING:
    from ..models.families import Family
    from .adapters import AdapterSet

GIB = 1024**3
MIN_RESOLUTION = 256  # the lowest resolution worth suggesting
CONTEXT_TOKENS = 77  # one CLIP chunk: cross-attention scores per query token
OPTIMIZER_STATE_BYTES = {  # per fp32 adapter parameter
    "AdamW": 8,  # exp_avg + exp_avg_sq, fp32
    "AdamW8bit": 2,  # the same two states, 8-bit (block-wise scales are negligible)
    "SGD": 4,  # momentum
    "Lion": 4,  # one momentum
    "Prodigy": 16,  # exp_avg, exp_avg_sq, s and the initial weights p0
    "Adafactor": 1,  # factored second moment (a row and a column vector per matrix), no first moment
}
# Layers whose output is per sample or per text token, not per latent pixel: time/label/size embeddings, DiT
# modulation and the context embedder. Counted per pixel they would dwarf the feature maps.
PER_SAMPLE_LAYERS = ("time_embed", "label_emb", "emb_layers", "adaLN_modulation", "t_embedder", "y_embedder",
                     "context_embedder",
                     # Flux and Chroma: timestep/guidance/pooled-text embeddings, block modulations, the approximator
                     "time_in", "vector_in", "guidance_in", "img_mod", "txt_mod", "modulation",
                     "distilled_guidance_layer",
                     # Wan: timestep embeddings and the UMT5 context projection
                     "time_embedding", "time_projection", "text_embedding")
MATERIALISED_ATTENTION = ("attention_basic", "attention_split", "attention_sub_quad")


@dataclass(frozen=True)
class Calibration:
    """Bytes actually held (per byte of the compute dtype) for each value the profile counts, fitted to
    measured peaks by tests/bench/benchmark_memory_calibration.py (its docstring says how).

    Autograd keeps more than each layer's output (activation functions' inputs, attention q/k/v, GEGLU
    halves, residual sums), and the backward pass of the step at the peak adds gradients and temporaries,
    so the multipliers are above 1. With checkpointing, block outputs are kept once each (the skip
    connections are the same tensors) and only the block being recomputed holds the rest; on CPU that block
    also holds the im2col buffers of ComfyUI's 3x3 convolutions, hence the large multiplier.

    Measured (CPU, fp32, batch 1, rank 8, peak RSS growth over a training step), MiB:

        checkpointing    tiny 128/256/384/512 px        full SD1.5 64/128/192/256 px
        on               20 / 152 / 599 / 1690          109 / 224 / 327 / 498
        off              25 / 223 / 985 / 2878          117 / 299 / 465 / 750

    Least-squares fits: on: 10.08 per largest-block value, 2.81 per score value, 25 MiB constant;
    off: 2.29 per layer value, 1.56 per score value, 23 MiB constant. Rounded up below. On a GPU (cuDNN,
    flash attention) the same constants overestimate somewhat, which errs on the side of a clear message.
    """

    all_layers: float  # without checkpointing, per value of every layer
    all_scores: float  # without checkpointing, per self-attention score value of every layer
    largest_block: float  # with checkpointing, per value of the largest block
    largest_block_scores: float  # with checkpointing, per score value of the largest block
    block_outputs: float = 1.0
    fixed_bytes: int = 64 * 1024**2  # allocator slack and kernels' workspace, whatever the size (fit: 25 MiB)


CALIBRATION = Calibration(all_layers=2.3, all_scores=1.6, largest_block=10.1, largest_block_scores=2.9)


@dataclass(frozen=True)
class ActivationProfile:
    """Values one forward produces per latent pixel of one sample, read from the diffusion model's layers.

    `*_scores` count self-attention score values per (latent pixel)^2: heads x (tokens/pixels)^2.
    """

    all_layers: float
    block_outputs: float
    largest_block: float
    all_scores: float
    largest_block_scores: float
    largest_block_weights: int  # frozen weights of the largest block (cast to the compute dtype inside it)


@dataclass(frozen=True)
class Workload:
    """What one run asks of the device; everything `estimate_peak` needs besides the model."""

    weight_bytes: int  # frozen weights the run adds to the device (0 on CPU: they are in RAM already)
    weight_count: int
    weights_cast: bool  # stored in another dtype than the compute dtype: layers cast them on the fly
    adapter_parameters: int
    optimizer: str
    batches: tuple[tuple[int, int], ...]  # (samples, latent pixels per sample) of each bucket's fullest batch
    gradient_checkpointing: bool
    compute_bytes: int  # 4 for fp32, 2 under bf16/fp16 autocast
    scores_materialised: bool


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    adapters: int
    activations: int
    fixed: int

    @property
    def total(self) -> int:
        return self.weights + self.adapters + self.activations + self.fixed

    def as_dict(self) -> dict[str, int]:
        return {**dataclasses.asdict(self), "total": self.total}

    def describe(self) -> str:
        weights = f"frozen weights {gib(self.weights)}, " if self.weights else ""
        return (f"{gib(self.total)} ({weights}adapters with gradients and optimizer state {gib(self.adapters)}, "
                f"activations {gib(self.activations)}, workspace {gib(self.fixed)})")


def gib(size: float) -> str:
    return f"{size / GIB:.1f} GB"


def activation_bytes(profile: ActivationProfile, work: Workload, samples: int, pixels: int,
                     calibration: Calibration = CALIBRATION) -> float:
    """Activation memory of one batch of `samples` at `pixels` latent pixels each."""
    if work.gradient_checkpointing:
        values = calibration.block_outputs * profile.block_outputs + calibration.largest_block * profile.largest_block
        scores = calibration.largest_block_scores * profile.largest_block_scores
        cast_weights = profile.largest_block_weights
    else:
        values = calibration.all_layers * profile.all_layers
        scores = calibration.all_scores * profile.all_scores
        cast_weights = work.weight_count
    per_sample = values * pixels + (scores * pixels * pixels if work.scores_materialised else 0.0)
    total = samples * per_sample * work.compute_bytes
    if work.weights_cast:
        total += cast_weights * work.compute_bytes  # autograd keeps the cast copy of each weight for backward
    return total


def estimate_peak(profile: ActivationProfile, work: Workload, calibration: Calibration = CALIBRATION) -> MemoryEstimate:
    adapters = work.adapter_parameters * (4 + 4 + OPTIMIZER_STATE_BYTES[work.optimizer])
    activations = max(activation_bytes(profile, work, samples, pixels, calibration) for samples, pixels in work.batches)
    return MemoryEstimate(work.weight_bytes, adapters, int(activations), calibration.fixed_bytes)


# ---------------------------------------------------------------------- reading the model


def _layer_outputs(module: torch.nn.Module) -> int | None:
    """Values per token a weighted layer outputs; None for modules that are not such layers."""
    if isinstance(module, torch.nn.Conv2d):
        return module.out_channels
    if isinstance(module, torch.nn.Linear):
        return module.out_features
    if isinstance(module, torch.nn.GroupNorm):
        return module.num_channels
    if isinstance(module, torch.nn.LayerNorm):
        return math.prod(module.normalized_shape)
    return None


def _token_scales(diffusion_model: torch.nn.Module) -> dict[str, float]:
    """Tokens per latent pixel at every module: 4^-level in a UNet (after each Downsample, until each
    Upsample), one per patch everywhere in a DiT (a video DiT's (frames, height, width) patch: its height x
    width, as a still image is one frame)."""
    blocks = [getattr(diffusion_model, name, None) for name in ("input_blocks", "middle_block", "output_blocks")]
    if any(block is None for block in blocks):
        patch = getattr(diffusion_model, "patch_size", 2)
        area = math.prod(patch[-2:]) if isinstance(patch, (tuple, list)) else patch**2
        return {name: 1.0 / area for name, _ in diffusion_model.named_modules()}
    scales: dict[str, float] = {}
    level = 0
    for name, module in diffusion_model.named_modules():
        kind = type(module).__name__
        if kind == "Downsample":
            level += 1
        elif kind == "Upsample" and name.startswith("output_blocks"):
            level -= 1
        scales[name] = 4.0**-level
    return scales


def _self_attention_heads(name: str, module: torch.nn.Module) -> int:
    """Heads of a self-attention layer (UNet attn1, DiT attention, Wan's self_attn); 0 for anything else."""
    last = name.rpartition(".")[2]
    if last not in ("attn1", "attn", "img_attn", "self_attn") and type(module).__name__ != "SingleStreamBlock":  # Flux's joint
        return 0
    return int(getattr(module, "heads", 0) or getattr(module, "num_heads", 0))


def _cross_attention_heads(name: str, module: torch.nn.Module) -> int:
    """Heads of a cross-attention layer (UNet attn2, Wan's cross_attn); 0 for anything else."""
    if name.rpartition(".")[2] not in ("attn2", "cross_attn"):
        return 0
    return int(getattr(module, "heads", 0) or getattr(module, "num_heads", 0))


def activation_profile(diffusion_model: torch.nn.Module, checkpoint_blocks: list[torch.nn.Module]) -> ActivationProfile:
    """Per-latent-pixel value counts of a diffusion model; `checkpoint_blocks` as gradient checkpointing splits it."""
    scales = _token_scales(diffusion_model)
    block_of = {id(module): index for index, block in enumerate(checkpoint_blocks) for module in block.modules()}
    values = [0.0] * (len(checkpoint_blocks) + 1)  # the last slot: layers outside every block
    scores = [0.0] * (len(checkpoint_blocks) + 1)
    for name, module in diffusion_model.named_modules():
        if any(part in PER_SAMPLE_LAYERS for part in name.split(".")):
            continue
        slot = block_of.get(id(module), len(checkpoint_blocks))
        scale = scales[name]
        outputs = _layer_outputs(module)
        if outputs is not None:
            values[slot] += outputs * scale
        values[slot] += _cross_attention_heads(name, module) * CONTEXT_TOKENS * scale
        scores[slot] += _self_attention_heads(name, module) * scale * scale
    names = {id(module): name for name, module in diffusion_model.named_modules()}
    block_outputs = sum(_block_output(block, scales, names) for block in checkpoint_blocks)
    largest = max(range(len(checkpoint_blocks)), key=lambda index: values[index]) if checkpoint_blocks else None
    return ActivationProfile(
        all_layers=sum(values), block_outputs=block_outputs,
        largest_block=values[largest] if largest is not None else sum(values),
        all_scores=sum(scores), largest_block_scores=scores[largest] if largest is not None else sum(scores),
        largest_block_weights=sum(p.numel() for p in checkpoint_blocks[largest].parameters()) if largest is not None else 0,
    )


def _block_output(block: torch.nn.Module, scales: dict[str, float], names: dict[int, str]) -> float:
    """Values per latent pixel a block hands to the next: its last weighted layer's output."""
    last = [module for module in block.modules() if _layer_outputs(module) is not None]
    return _layer_outputs(last[-1]) * scales[names[id(last[-1])]] if last else 0.0


# ---------------------------------------------------------------------- settings and what would fit


def bucket_batches(images: list[DatasetImage], batch_size: int, resolution: int,
                   family: Family) -> tuple[tuple[int, int], ...]:
    """(samples, latent pixels) of the fullest batch of each aspect bucket, as the trainer will form them."""
    buckets = make_buckets(resolution, family.bucket_step)
    scale = family.latent_scale
    counts = samples_per_bucket((nearest_bucket(image.width, image.height, buckets), image.repeats) for image in images)
    return tuple((min(batch_size, count), (width // scale) * (height // scale))
                 for (width, height), count in sorted(counts.items()))


@dataclass(frozen=True)
class Change:
    """One setting changed, as the user would change it."""

    name: str
    old: object
    new: object

    def __str__(self) -> str:
        return f"{self.name} {_render(self.old)} -> {_render(self.new)}"

    def apply(self, settings: TrainingSettings) -> TrainingSettings:
        return dataclasses.replace(settings, **{self.name: self.new})


def _render(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def fitting_changes(estimate_for: Callable[[TrainingSettings, int], MemoryEstimate], settings: TrainingSettings,
                    resolution: int, available: int, on_cuda: bool) -> list[list[Change]]:
    """Settings that would bring the estimate under `available` bytes: every single change that fits on its
    own (batch size and resolution at the largest value that fits), else one combination, built in the order
    that costs the least quality: checkpointing, a leaner optimizer, bf16, a frozen text encoder, a smaller
    batch, a lower resolution. Empty when even all of them together do not fit.

    `estimate_for(settings, resolution)` re-runs the estimate for other settings.
    """

    def fits(candidate: TrainingSettings, candidate_resolution: int) -> bool:
        return estimate_for(candidate, candidate_resolution).total <= available

    def largest_batch(candidate: TrainingSettings) -> int | None:
        return next((size for size in _halvings(candidate.batch_size)
                     if fits(dataclasses.replace(candidate, batch_size=size), resolution)), None)

    def largest_resolution(candidate: TrainingSettings) -> int | None:
        return next((size for size in range(resolution - 64, MIN_RESOLUTION - 1, -64) if fits(candidate, size)), None)

    toggles = []
    if not settings.gradient_checkpointing:
        toggles.append(Change("gradient_checkpointing", False, True))
    lean_optimizer = "AdamW8bit" if on_cuda else "Adafactor"
    if OPTIMIZER_STATE_BYTES[settings.optimizer] > OPTIMIZER_STATE_BYTES[lean_optimizer]:
        toggles.append(Change("optimizer", settings.optimizer, lean_optimizer))
    if settings.mixed_precision == "fp32":
        toggles.append(Change("mixed_precision", "fp32", "bf16"))
    if settings.trains_text_encoder and settings.unet_lr > 0:
        toggles.append(Change("text_encoder_lr", settings.text_encoder_lr, 0.0))

    singles = [[change] for change in toggles if fits(change.apply(settings), resolution)]
    batch = largest_batch(settings)
    if batch is not None:
        singles.append([Change("batch_size", settings.batch_size, batch)])
    smaller = largest_resolution(settings)
    if smaller is not None:
        singles.append([Change("resolution", resolution, smaller)])
    if singles:
        return singles

    combined, candidate = [], settings
    for change in toggles:
        combined.append(change)
        candidate = change.apply(candidate)
        if fits(candidate, resolution):
            return [combined]
    batch = largest_batch(candidate)
    if batch is not None:
        return [combined + [Change("batch_size", settings.batch_size, batch)]]
    if settings.batch_size > 1:
        combined.append(Change("batch_size", settings.batch_size, 1))
        candidate = dataclasses.replace(candidate, batch_size=1)
    smaller = largest_resolution(candidate)
    return [combined + [Change("resolution", resolution, smaller)]] if smaller is not None else []


def _halvings(value: int) -> list[int]:
    """value/2, value/4, ... down to 1: the batch sizes worth suggesting."""
    sizes = []
    while value > 1:
        value //= 2
        sizes.append(value)
    return sizes


# ---------------------------------------------------------------------- the bridge to ComfyUI


def _weight_stats(modules: list[torch.nn.Module]) -> tuple[int, int, torch.dtype]:
    """(bytes, count, dtype of the largest tensor) of the frozen parameters and buffers."""
    tensors = [t for module in modules for t in list(module.parameters()) + list(module.buffers())]
    total = sum(t.numel() * t.element_size() for t in tensors)
    count = sum(t.numel() for t in tensors)
    dtype = max(tensors, key=lambda t: t.numel()).dtype if tensors else torch.float32
    return total, count, dtype


def _reclaimable_bytes(device: torch.device) -> int:
    """GPU memory ComfyUI holds for loaded models, which it unloads to make room (our UNet's share is
    counted by the estimate, as it will be loaded again)."""
    import comfy.model_management as mm

    return sum(loaded.model_loaded_memory() for loaded in mm.current_loaded_models
               if loaded.device == device and loaded.model is not None)  # a model freed by Python holds nothing


def _scores_materialised() -> bool:
    from comfy.ldm.modules import attention

    return attention.optimized_attention.__name__ in MATERIALISED_ATTENTION


def training_estimator(model_patcher, clip, unet_adapters: AdapterSet | None, text_adapters: AdapterSet | None,
                       images: list[DatasetImage], family: Family,
                       device: torch.device) -> Callable[[TrainingSettings, int], MemoryEstimate]:
    """`estimate_for(settings, resolution)`: the run's estimated peak on `device`, read from the model as
    loaded (frozen weights in their storage dtype, so fp8-stored weights count one byte each)."""
    from .session import checkpoint_blocks

    diffusion_model = model_patcher.model.diffusion_model
    text_encoder = clip.cond_stage_model
    profile = activation_profile(diffusion_model, checkpoint_blocks(diffusion_model))
    unet_bytes, unet_count, unet_dtype = _weight_stats([diffusion_model])
    text_bytes = _weight_stats([text_encoder])[0]
    unet_parameters, text_parameters = (sum(p.numel() for p in adapters.parameters()) if adapters else 0
                                        for adapters in (unet_adapters, text_adapters))
    scores = _scores_materialised()

    def estimate_for(candidate: TrainingSettings, candidate_resolution: int) -> MemoryEstimate:
        # The text encoder stays on the device while it trains or captions change every step.
        needs_text_encoder = candidate.trains_text_encoder or not candidate.static_captions
        weight_bytes = 0 if device.type == "cpu" else unet_bytes + (text_bytes if needs_text_encoder else 0)
        work = Workload(
            weight_bytes=weight_bytes, weight_count=unet_count,
            weights_cast=unet_dtype != COMPUTE_DTYPES[candidate.mixed_precision],
            adapter_parameters=unet_parameters + (text_parameters if candidate.trains_text_encoder else 0),
            optimizer=candidate.optimizer,
            batches=bucket_batches(images, candidate.batch_size, candidate_resolution, family),
            gradient_checkpointing=candidate.gradient_checkpointing,
            compute_bytes=COMPUTE_DTYPES[candidate.mixed_precision].itemsize, scores_materialised=scores,
        )
        return estimate_peak(profile, work)

    return estimate_for


def check_fits(model_patcher, clip, unet_adapters: AdapterSet | None, text_adapters: AdapterSet | None,
               images: list[DatasetImage], settings: TrainingSettings, resolution: int, family: Family,
               device: torch.device) -> MemoryEstimate:
    """Raise OutOfMemory before any work when the run's estimated peak exceeds the memory it can have.

    On a GPU, available memory is ComfyUI's free memory plus what its loaded models hold (it unloads them to
    make room), against the whole estimate. On CPU the model's weights are in RAM already, so the rest of the
    estimate is compared with free RAM. Returns the estimate when it fits.
    """
    import comfy.model_management as mm

    estimate_for = training_estimator(model_patcher, clip, unet_adapters, text_adapters, images, family, device)
    estimate = estimate_for(settings, resolution)
    available = mm.get_free_memory(device) + (0 if device.type == "cpu" else _reclaimable_bytes(device))
    if estimate.total <= available:
        return estimate
    where = "system RAM" if device.type == "cpu" else f"memory on {mm.get_torch_device_name(device)}"
    options = fitting_changes(estimate_for, settings, resolution, available, device.type == "cuda")
    if options:
        advice = "These settings would fit: " + "; or ".join(" and ".join(map(str, changes)) for changes in options) + "."
    else:
        advice = ("No training setting makes it fit: close other programs or unload other models to free memory, "
                  "or train a smaller model.")
    raise OutOfMemory(f"Training would need about {estimate.describe()}, but only {gib(available)} of {where} "
                      f"is available. {advice} Nothing was trained.")
