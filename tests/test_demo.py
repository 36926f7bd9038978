"""`bash scripts/demo.sh` end to end: the toy-world demo trains a LoRA for the purple ring `zqx`, and the Strength
Sweep grid it saves shows the ring fading in as the strength grows (each cell judged by what it shows).
"""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest
from harness import image_metrics
from harness.runtime import REPO_ROOT, pack
from PIL import Image

CONCEPT = pack("trainer.toy_world.concept_dataset").CONCEPT
MOST_AT_STRENGTH_0 = 1 / 8  # the base model never draws the ring; one odd cell is tolerated
LEAST_AT_STRENGTH_1 = 0.6  # a clear majority of the final epoch's cells at full strength


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[pathlib.Path, subprocess.CompletedProcess]:
    base = tmp_path_factory.mktemp("demo")
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "demo.py"), "--base-directory", str(base)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)  # COMFYUI_PATH from test.sh
    print(f"demo wall time: {time.monotonic() - started:.0f} s")
    assert done.returncode == 0, done.stdout + done.stderr + (base / "comfyui.log").read_text()[-3000:]
    return base, done


def printed(done: subprocess.CompletedProcess, kind: str) -> list[str]:
    """The paths the demo printed as `  LoRA   <path>` / `  image  <path>` lines."""
    return [line.split(None, 1)[1] for line in done.stdout.splitlines() if line.strip().startswith(kind + " ")]


def concept_rates(grid: Image.Image, epoch: int) -> dict[float, float]:
    """Per strength, the fraction of the epoch's cells (prompts x seeds) that show a purple ring."""
    details = json.loads(grid.text["loralab_sweep"])
    scale = details["cell_scale"]
    shown: dict[float, list[bool]] = {}
    for cell in details["cells"]:
        if cell["epoch"] != epoch:
            continue
        pixels = np.asarray(grid.crop(tuple(cell["box"])).convert("RGB").reduce(scale))  # back to the sampled 32 px
        analysis = image_metrics.analyse(pixels)
        shown.setdefault(cell["strength"], []).append(
            (analysis.colour, analysis.shape) == (CONCEPT.colour, CONCEPT.shape))
    return {strength: float(np.mean(hits)) for strength, hits in sorted(shown.items())}


@pytest.mark.server
def test_demo_trains_the_toy_concept_and_its_grid_fades_the_ring_in(demo_run):
    base, done = demo_run
    dataset = base / "input" / "loralab_zqx" / f"10_{CONCEPT.trigger}"
    assert len(list(dataset.glob("*.png"))) == 20 and len(list(dataset.glob("*.txt"))) == 20

    (lora,) = printed(done, "LoRA")
    assert pathlib.Path(lora).name == "zqx.safetensors" and pathlib.Path(lora).is_file()
    images = printed(done, "image")
    charts = [image for image in images if "/charts/" in image]
    grids = [image for image in images if "/zqx_sweep_" in image]
    assert len(charts) == 1 and (base / charts[0]).is_file()
    assert len(grids) == 1, images

    grid = Image.open(base / grids[0])
    details = json.loads(grid.text["loralab_sweep"])
    assert details["cell_scale"] == 4, "32 px cells are shown at 128 px"
    final = max(details["epochs"])
    rates = concept_rates(grid, final)
    print("purple-ring rate per strength (final epoch):", rates)
    strengths = list(rates)
    assert strengths[0] == 0.0 and strengths[-1] == 1.0
    assert rates[0.0] <= MOST_AT_STRENGTH_0, rates
    assert rates[1.0] >= LEAST_AT_STRENGTH_1, rates
    cells_per_strength = len(details["prompts"]) * len(details["seeds"])
    for weaker, stronger in zip(strengths, strengths[1:]):  # fades in: no step back by more than one cell
        assert rates[stronger] >= rates[weaker] - 1 / cells_per_strength, rates
