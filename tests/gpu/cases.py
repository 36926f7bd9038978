"""What the GPU check kit trains: one table row per case, the same rows at toy size for `--smoke`.

Every case trains LoRA Lab's Train LoRA on a random-weight model at its full architecture and checks the
result (finite losses, adapters changed, the graph's model untouched, LoraLoader on the saved file giving the
trained adapter), timing its steps and recording its peak memory against the memory estimate. Cases with
`compare` also train ComfyUI core's TrainLoraNode on the same model and settings, and profile the last steps
of both. Each family's cases run in one section (one process, one model load) per ComfyUI tree.

To add a family: a fixture builder in fixtures.FAMILIES and its rows here.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

SMOKE_RESOLUTION = 64  # the harness's tiny models
SMOKE_MAX_BATCH = 2  # batching is still exercised; core's bf16 steps at batch 4 take ~40 s each on a 2-core CPU


@dataclass(frozen=True)
class Case:
    name: str
    family: str  # a key of fixtures.FAMILIES
    resolution: int
    batch_size: int
    rank: int
    weight_dtype: str  # base storage, as Load Diffusion Model's weight_dtype: "default" or "fp8_e4m3fn"
    mixed_precision: str  # Train LoRA's mixed_precision: bf16 or fp16 (fp16 trains with a gradient scaler)
    optimizer: str  # AdamW or AdamW8bit (bitsandbytes)
    text_encoder: bool = False  # train the text encoder(s) too
    compare: bool = False  # also train core's TrainLoraNode (bf16, AdamW only) and profile both
    memory_target_gib: float | None = None  # the peak this case should stay within (torch allocator)


CASES: tuple[Case, ...] = (
    # SD1.5: the memory target (512 px within 6 GB), batch 4, then fp16 + 8-bit, fp8-stored weights.
    Case("sd15-512-b1", "sd15", 512, 1, 16, "default", "bf16", "AdamW", compare=True, memory_target_gib=6),
    Case("sd15-512-b4", "sd15", 512, 4, 16, "default", "bf16", "AdamW", compare=True),
    Case("sd15-fp16-8bit-te", "sd15", 512, 1, 16, "default", "fp16", "AdamW8bit", text_encoder=True),
    Case("sd15-fp8-base", "sd15", 512, 1, 16, "fp8_e4m3fn", "bf16", "AdamW8bit"),
    # SDXL: the memory target (1024 px, batch 1, rank 16 within 10 GB), then the same precision spread.
    Case("sdxl-1024-b1", "sdxl", 1024, 1, 16, "default", "bf16", "AdamW", compare=True, memory_target_gib=10),
    Case("sdxl-fp16-8bit-te", "sdxl", 1024, 1, 16, "default", "fp16", "AdamW8bit", text_encoder=True),
    Case("sdxl-fp8-base", "sdxl", 1024, 1, 16, "fp8_e4m3fn", "bf16", "AdamW"),
    # Flux.1 dev as a 24 GB card trains it (kohya's fp8_base): fp8 storage, bf16, 1024 px, batch 1, rank 16; the
    # estimate says 21.2 GB. Then CLIP-L trained too, at 512 px (the 16 GB card's size).
    Case("flux-1024-fp8", "flux_dev", 1024, 1, 16, "fp8_e4m3fn", "bf16", "AdamW", compare=True, memory_target_gib=24),
    Case("flux-512-fp8-te", "flux_dev", 512, 1, 16, "fp8_e4m3fn", "bf16", "AdamW8bit", text_encoder=True,
         memory_target_gib=16),
)


@dataclass(frozen=True)
class Steps:
    """Optimizer steps per run: warm-up (untimed), timed, and profiled at the end (compare cases only)."""

    warmup: int
    timed: int
    profiled: int

    def total(self, profile: bool) -> int:
        return self.warmup + self.timed + (self.profiled if profile else 0)


GPU_STEPS = Steps(warmup=2, timed=6, profiled=2)
SMOKE_STEPS = Steps(warmup=1, timed=2, profiled=1)
LEARNING_RATE = 1e-3  # both tools: high enough that a few steps move the outputs well past rounding


SMOKE_NOTE = ("toy-size models of each family at 64 px, rank 4, batch at most 2, on CPU; AdamW stands in for AdamW8bit "
              "(bitsandbytes needs CUDA); no memory targets")


def for_smoke(case: Case) -> Case:
    """The same case on the harness's tiny models (SMOKE_NOTE)."""
    optimizer = "AdamW" if case.optimizer == "AdamW8bit" else case.optimizer
    return replace(case, resolution=SMOKE_RESOLUTION, rank=4, batch_size=min(case.batch_size, SMOKE_MAX_BATCH),
                   optimizer=optimizer, memory_target_gib=None)


def families(cases: tuple[Case, ...]) -> list[str]:
    return list(dict.fromkeys(case.family for case in cases))
