"""The models the GPU check kit trains, by family: full architectures on a GPU, toy ones for --smoke.

A UNet that ComfyUI can detect is written once as a diffusion-model file (random weights, drawn on the GPU
when there is one) and loaded by ComfyUI's Load Diffusion Model node with the case's weight_dtype, as a user's
model arrives: detected from its weights, memory-mapped, and managed by dynamic VRAM on current ComfyUI. The
full SD1.5 and SDXL UNets, Flux.1 dev's transformer (stored in fp8, as its fp8 releases), and the smallest SD1.5
ComfyUI detects (the SD1.5 smoke), go that way. A toy SDXL or Flux is too small to detect from a file unaided, so
their smokes build the test suite's tiny models in memory.

To add a family: a full-size builder in tests/bench/benchmark_models.py (a UNETS/CLIPS entry, or its own file
writer for a DiT such as Flux), a tiny one in tests/harness/models.py, and an entry here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import benchmark_models
from harness import flow_models, models

STORAGE_DTYPES = {"default": "float32", "fp8_e4m3fn": "float8_e4m3fn"}  # Load Diffusion Model's weight_dtype as a torch dtype


@dataclass(frozen=True)
class Fixture:
    full: str  # benchmark_models model name: the real architecture, loaded from its file
    smoke: str | None = None  # a benchmark_models name ComfyUI detects from a file, for --smoke
    tiny: Callable[..., models.ModelBundle] | None = None  # else a harness builder taking weight_dtype=, built in memory


FAMILIES: dict[str, Fixture] = {
    "sd15": Fixture(full="full", smoke="min"),
    "sdxl": Fixture(full="sdxl", tiny=models.tiny_sdxl),
    "flux_dev": Fixture(full="flux", tiny=flow_models.tiny_flux_dev),
}


def file_model(family: str, smoke: bool) -> str | None:
    fixture = FAMILIES[family]
    return fixture.smoke if smoke else fixture.full


def prepare(family: str, smoke: bool, device: str) -> str:
    """Write (or find cached) the family's model file, or build its tiny model; says what, for the report."""
    name = file_model(family, smoke)
    if name is None:
        tiny(family, "default")
        return f"tiny {family}, in memory (cached weights)"
    path = benchmark_models.unet_file(name, device)
    return f"{path.name} ({path.stat().st_size / 1024**3:.2f} GiB)"


def tiny(family: str, weight_dtype: str) -> models.ModelBundle:
    import torch

    return FAMILIES[family].tiny(weight_dtype=getattr(torch, STORAGE_DTYPES[weight_dtype]))


def tiny_model(family: str, weight_dtype: str, disable_dynamic: bool = False):
    """MODEL again, as a loader's `cached_patcher_init` rebuilds it (core's node on 0.33 copies the model so)."""
    return tiny(family, weight_dtype).model


def load(family: str, weight_dtype: str, smoke: bool, device: str) -> models.ModelBundle:
    name = file_model(family, smoke)
    if name is not None:
        return benchmark_models.load(name, weight_dtype, device)
    bundle = tiny(family, weight_dtype)
    bundle.model.cached_patcher_init = (tiny_model, (family, weight_dtype))
    return bundle
