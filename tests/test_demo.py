"""`bash scripts/demo.sh` end to end: the toy-world demo trains a LoRA for the purple ring `zqx`, and the Strength
Sweep grid it saves shows the ring fading in as the strength grows (each cell judged by what it shows). What it
prints is what a newcomer reads: where it starts, the steps that do something, the sweep counted in images, and
the files as absolute paths; a rerun with nothing changed shows the same files without training again.

The demo runs in its own process group, stopped with its ComfyUI server however the test ends. There is no
fixed time limit (a loaded machine is slow, not broken): the demo fails when it prints nothing for QUIET_LIMIT_S.
"""
from __future__ import annotations

import json
import pathlib
import re
import shutil
import signal
import sys
import time
from dataclasses import dataclass

import numpy as np
import pytest
from harness import image_metrics
from harness.datasets import draw_shape
from harness.process_group import ProcessGroup, live_processes
from harness.runtime import REPO_ROOT, pack
from PIL import Image

CONCEPT = pack("trainer.toy_world.concept_dataset").CONCEPT
DEMO = REPO_ROOT / "scripts" / "demo.py"
MOST_AT_STRENGTH_0 = 1 / 8  # the base model never draws the ring; one odd cell is tolerated
LEAST_AT_STRENGTH_1 = 0.6  # a clear majority of the final epoch's cells at full strength
QUIET_LIMIT_S = 600  # the demo prints each tenth of training and of the sweep; this long without a line is a hang
FILE_LINE = re.compile(r"^  (LoRA|sweep grid|loss chart|sample)\s+(/.+)$")

pytestmark = [pytest.mark.server, pytest.mark.timeout(0)]  # the quiet limit above replaces a fixed limit


@dataclass
class DemoRun:
    status: int
    stdout: str
    stderr: str
    seconds: float

    def files(self, label: str) -> list[pathlib.Path]:
        """The paths the demo listed under `label` (LoRA, sweep grid, loss chart, sample)."""
        found = [FILE_LINE.match(line) for line in self.stdout.splitlines()]
        return [pathlib.Path(match.group(2)) for match in found if match and match.group(1) == label]


def run_demo(output_dir: pathlib.Path, *options: str) -> DemoRun:
    output_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with ProcessGroup([sys.executable, str(DEMO), *options], output_dir, cwd=REPO_ROOT) as group:  # COMFYUI_PATH from test.sh
        status = group.wait(QUIET_LIMIT_S)
    return DemoRun(status, group.stdout_path.read_text(), group.stderr_path.read_text(), time.monotonic() - started)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[pathlib.Path, DemoRun]:
    base = tmp_path_factory.mktemp("demo")
    done = run_demo(base / "run1", "--base-directory", str(base))
    print(f"demo wall time: {done.seconds:.0f} s")
    assert done.status == 0, done.stdout + done.stderr + (base / "server.log").read_text()[-3000:]
    return base, done


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


def test_demo_trains_the_toy_concept_and_its_grid_fades_the_ring_in(demo):
    base, done = demo
    dataset = base / "input" / "loralab_zqx" / f"10_{CONCEPT.trigger}"
    assert len(list(dataset.glob("*.png"))) == 20 and len(list(dataset.glob("*.txt"))) == 20

    (lora,) = done.files("LoRA")
    assert lora == base / "models" / "loras" / "loralab" / "zqx.safetensors" and lora.is_file()
    (grid_path,) = done.files("sweep grid")
    assert grid_path.parent == base / "output" / "loralab" and grid_path.name.startswith("zqx_sweep_")
    grid = Image.open(grid_path)
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


def test_demo_output_says_where_it_starts_what_runs_and_where_the_files_are(demo, artifacts_dir):
    base, done = demo
    lines = done.stdout.splitlines()
    assert any(line.startswith("LoRA Lab demo: the toy-world model learns `zqx`") and str(base / "input") in line
               for line in lines), done.stdout
    assert any(line.startswith("Starting ComfyUI ") and str(base) in line and str(base / "server.log") in line
               for line in lines), done.stdout
    assert any(line.startswith("Finished in ") for line in lines), done.stdout
    files = [match for match in map(FILE_LINE.match, lines) if match]
    assert files and all(pathlib.Path(match.group(2)).is_absolute() and pathlib.Path(match.group(2)).is_file()
                         for match in files), done.stdout
    assert len(done.files("loss chart")) == 1 and len(done.files("sample")) == 3  # samples after epochs 2, 4, 6
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    for label in ("LoRA", "sweep grid"):  # the README names the files the user sees
        assert f"`{done.files(label)[0].relative_to(base).as_posix()}`" in readme, label
    shutil.copy(done.files("loss chart")[0], artifacts_dir / "demo_loss_chart.png")

    steps = [line for line in done.stderr.splitlines() if "[" not in line and not line.startswith("epoch ")]
    assert "Auto Caption" not in done.stderr, "every image has a caption: the step that would do nothing is left out"
    assert {"Load Demo Model (toy world)", "Load Dataset", "Train LoRA", "Save LoRA", "Strength Sweep"} <= set(steps)
    sweep = [line for line in done.stderr.splitlines() if line.startswith("Strength Sweep [")]
    assert sweep and all(line.endswith("/78 images") for line in sweep), sweep  # 2 prompts x 3 seeds x 13 renders
    assert sweep[-1].endswith(" 78/78 images")
    assert "SQLite objects created in a thread" not in (base / "server.log").read_text()


def test_the_flow_toy_world_demo_trains_a_kohya_flux_lora_that_draws_the_ring(tmp_path):
    """`--model flow_toy_world`: the same demo on the Flux-architecture toy world (about a minute on 2 cores)."""
    import safetensors

    done = run_demo(tmp_path / "run", "--model", "flow_toy_world", "--base-directory", str(tmp_path))
    print(f"flow demo wall time: {done.seconds:.0f} s")
    assert done.status == 0, done.stdout + done.stderr + (tmp_path / "server.log").read_text()[-3000:]
    assert any(line.startswith("LoRA Lab demo: the flow toy world (Flux architecture) learns `zqx`")
               for line in done.stdout.splitlines()), done.stdout
    (lora,) = done.files("LoRA")
    assert lora == tmp_path / "models" / "loras" / "loralab" / "zqx_flow.safetensors"
    with safetensors.safe_open(str(lora), "pt") as file:
        metadata, keys = file.metadata(), set(file.keys())
    assert (metadata["ss_base_model_version"], metadata["modelspec.architecture"]) == ("flux1", "flux-1-dev/lora")
    assert "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight" in keys
    assert "lora_unet_single_blocks_1_linear2.lora_up.weight" in keys
    grid = Image.open(done.files("sweep grid")[0])
    rates = concept_rates(grid, max(json.loads(grid.text["loralab_sweep"])["epochs"]))
    print("flow toy world: purple-ring rate per strength (final epoch):", rates)
    assert rates[0.0] <= MOST_AT_STRENGTH_0, rates
    assert rates[1.0] >= 0.5, rates  # measured 5 of 6 cells; its prompts are shorter than the training captions


def test_the_demo_refuses_a_built_in_model_with_a_checkpoint(tmp_path):
    checkpoint = tmp_path / "sd15.safetensors"
    checkpoint.write_bytes(b"")
    done = run_demo(tmp_path / "run", "--model", "flow_toy_world", "--checkpoint", str(checkpoint),
                    "--base-directory", str(tmp_path))
    assert done.status == 2 and "--model picks a built-in model and --checkpoint your SD1.5 checkpoint" in done.stderr


def test_a_rerun_with_nothing_changed_shows_the_same_files_without_training(demo, tmp_path):
    base, first = demo
    log_written = (base / "server.log").stat().st_mtime_ns
    again = run_demo(tmp_path, "--base-directory", str(base))
    assert again.status == 0, again.stdout + again.stderr
    assert again.stdout.startswith("Nothing changed since the demo run of ")
    for label in ("LoRA", "sweep grid", "loss chart", "sample"):
        assert again.files(label) == first.files(label), label
    assert (base / "server.log").stat().st_mtime_ns == log_written, "no ComfyUI was started"
    assert not list((base / "models" / "loras" / "loralab").glob("zqx_2*"))


def test_uncaptioned_images_stop_the_demo_before_it_starts_with_what_to_do(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    for index, colour in enumerate(("red", "blue", "green")):
        draw_shape((32, 32), "circle", colour, "white", index).save(folder / f"{colour}.png")
    (folder / "red.txt").write_text("zqx, a red circle")
    base = tmp_path / "base"
    done = run_demo(tmp_path / "out", "--base-directory", str(base), "--dataset", str(folder))
    assert done.status == 2, done.stdout + done.stderr
    assert f"2 image(s) in {folder} have no caption file: blue.png, green.png" in done.stderr
    assert "--caption" in done.stderr and "Florence-2-base" in done.stderr
    assert not (base / "server.log").exists() and not (base / "models" / "captioners").exists(), "nothing started"


def test_an_interrupted_demo_names_no_files_and_stops_its_server(tmp_path):
    base = tmp_path / "base"
    with ProcessGroup([sys.executable, str(DEMO), "--base-directory", str(base)], tmp_path, cwd=REPO_ROOT) as group:
        deadline = time.monotonic() + QUIET_LIMIT_S
        while "Train LoRA [" not in group.stderr_path.read_text() and time.monotonic() < deadline:
            assert group.process.poll() is None, group.output()
            time.sleep(0.5)
        group.process.send_signal(signal.SIGINT)  # Ctrl-C
        status = group.wait(QUIET_LIMIT_S)
        assert not live_processes(group.group_id), "the demo stopped its ComfyUI server itself"
    assert status == 130, group.output()
    assert "cancelled: the queued runs were removed and the running one interrupted" in group.output()
    assert f"ComfyUI's log: {base / 'server.log'}" in group.output()
    assert "This run's files" not in group.output()
    assert not any(FILE_LINE.match(line) for line in group.output().splitlines())
