"""`python -m loralab_cli` against a real ComfyUI server: the example pipeline over two dataset folders, typed
overrides, and the exit status and message of each way a run can fail.
"""
from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import sys
import time

import pytest
from harness.datasets import make_sample_dataset, stock_server_base
from harness.runtime import REPO_ROOT
from harness.server import ComfyServer, free_port

PIPELINE = REPO_ROOT / "example_workflows" / "api" / "loralab_sd15_pipeline.json"
CHECKPOINT = "v1-5-pruned-emaonly.safetensors"  # the name the example asks for, holding the random test model
TINY = ["Load Dataset.repeats=1", "Auto Caption.max_tags=8", "Train LoRA.epochs=1", "Train LoRA.rank=4",
        "Train LoRA.resolution=64", "Train LoRA.mixed_precision=fp32", "Train LoRA.text_encoder_lr=0",
        "Strength Sweep.width=64", "Strength Sweep.height=64", "Strength Sweep.steps=1",
        "Strength Sweep.strengths=1", "Strength Sweep.seeds=1", "Strength Sweep.prompts=ohwx, a red circle"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = stock_server_base(tmp_path_factory.mktemp("cli"), CHECKPOINT)
    with ComfyServer(base) as running:
        yield running


def cli(*args: str, server: ComfyServer | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "loralab_cli", *args]
    if server is not None:
        command += ["--server", server.url]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)


def with_sets(*sets: str) -> list[str]:
    return [part for text in sets for part in ("--set", text)]


@pytest.mark.server
def test_one_command_trains_a_lora_per_dataset_and_prints_the_files(server, tmp_path):
    folders = []
    for name in ("cat", "dog"):
        folder = tmp_path / name
        make_sample_dataset(folder, count=1, size=64, repeats=1, with_captions=False)
        folders += ["--dataset", str(folder)]
    done = cli(str(PIPELINE), *folders, *with_sets(*TINY), server=server)
    assert done.returncode == 0, done.stdout + done.stderr + server.log_tail()

    assert "Train LoRA [" in done.stderr and "epoch 1/1" in done.stderr  # the progress bar and its figures
    assert "Strength Sweep [" in done.stderr and "] 1/1 images" in done.stderr  # counted in images, not sampler steps
    assert f"Queued 2 runs on ComfyUI at {server.url}; progress follows." in done.stderr.splitlines()
    loras = [line.split(None, 1)[1] for line in done.stdout.splitlines() if line.strip().startswith("LoRA ")]
    assert [pathlib.Path(path).name for path in loras] == ["ohwx_cat.safetensors", "ohwx_dog.safetensors"]
    assert all(pathlib.Path(path).is_file() for path in loras)
    images = [line.split(None, 1)[1] for line in done.stdout.splitlines() if line.strip().startswith("image ")]
    grids = [image for image in images if "/ohwx_sweep_" in image]
    assert len(grids) == 2 and "ohwx_sweep_cat_" in grids[0] and "ohwx_sweep_dog_" in grids[1]
    assert all((server.base_dir / image).read_bytes().startswith(b"\x89PNG") for image in grids)
    for name in ("cat", "dog"):  # Auto Caption wrote the captions, trigger word first
        captions = sorted((tmp_path / name).rglob("*.txt"))
        assert captions and all(path.read_text().startswith("ohwx") for path in captions)


@pytest.mark.server
def test_a_failing_node_exits_1_naming_the_node_and_the_error(server, tmp_path):
    missing = tmp_path / "no such folder"
    done = cli(str(PIPELINE), "--dataset", str(missing), *with_sets(*TINY), "--json", server=server)
    assert done.returncode == 1, done.stdout + done.stderr
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["status"] == "error" and outcome["loras"] == []
    # The server names the folder relative to its dataset root, never by its absolute path.
    assert outcome["error"].startswith("node 2 (Load Dataset): ") and "no such folder does not exist" in outcome["error"]


@pytest.mark.server
def test_ctrl_c_interrupts_the_running_training_and_exits_130(server, tmp_path):
    make_sample_dataset(tmp_path / "set", count=1, size=64, repeats=1, with_captions=False)
    command = [sys.executable, "-m", "loralab_cli", str(PIPELINE), "--server", server.url,
               "--dataset", str(tmp_path / "set"), *with_sets(*TINY, "Train LoRA.epochs=500")]
    before = set(server.get_json("/history"))
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        for line in process.stderr:  # without a terminal the bar is printed as lines
            seen.append(line)
            if "Train LoRA [" in line:
                break
        process.send_signal(signal.SIGINT)
        rest = process.communicate(timeout=300)[1]
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, "".join(seen) + rest
    assert "cancelled: the queued runs were removed and the running one interrupted" in rest
    deadline = time.monotonic() + 300  # the interrupt lands at the next training step
    while not (new := set(server.get_json("/history")) - before) and time.monotonic() < deadline:
        time.sleep(1)
    prompt_id = new.pop()
    history = server.get_json(f"/history/{prompt_id}")[prompt_id]
    assert history["status"]["status_str"] == "error"
    assert any(kind == "execution_interrupted" for kind, _ in history["status"]["messages"])


@pytest.mark.server
def test_overrides_are_typed_by_the_server_and_shown_by_dry_run(server):
    done = cli(str(PIPELINE), "--dry-run", *with_sets("Train LoRA.epochs=3", "4.unet_lr=2e-4",
                                                      "Save LoRA.overwrite=yes", "LoraLabStrengthSweep.seeds=7"),
               server=server)
    assert done.returncode == 0, done.stderr
    queued = json.loads(done.stdout)
    assert queued["4"]["inputs"]["epochs"] == 3 and queued["4"]["inputs"]["unet_lr"] == 2e-4
    assert queued["5"]["inputs"]["overwrite"] is True and queued["6"]["inputs"]["seeds"] == "7"


@pytest.mark.server
@pytest.mark.parametrize(("override", "expected"), [
    ("Train LoRA.epoch=3", "has no input 'epoch'. Its inputs: model, clip, vae, dataset, network"),
    ("Train LoRA.optimizer=Adam", "'Adam' is not one of the choices: AdamW"),
    ("Train LoRA.rank=big", "expects a whole number"),
    ("Train LoRA.dataset=x", "connected to node 3 (Auto Caption)"),
    ("Train Lora.rank=4", "no node has the id, title or type 'Train Lora'"),
])
def test_a_bad_override_exits_2_before_queueing(server, override, expected):
    done = cli(str(PIPELINE), *with_sets(override), server=server)
    assert done.returncode == 2 and expected in done.stderr, done.stderr
    assert server.get_json("/queue") == {"queue_running": [], "queue_pending": []}


@pytest.mark.server
def test_a_workflow_comfyui_refuses_exits_2_with_its_reasons(server):
    done = cli(str(PIPELINE), *with_sets("Train LoRA.rank=0"), server=server)
    assert done.returncode == 2
    assert "ComfyUI refused the workflow" in done.stderr and "node 4 (Train LoRA): Value 0 smaller than min of 1" in done.stderr


@pytest.mark.server
def test_a_checkpoint_the_server_lacks_is_named_with_the_set_that_picks_one_it_has(server, tmp_path):
    workflow = json.loads(PIPELINE.read_text())
    workflow["1"]["inputs"]["ckpt_name"] = "sd15-not-here.safetensors"
    (tmp_path / "wf.json").write_text(json.dumps(workflow))
    done = cli(str(tmp_path / "wf.json"), server=server)
    assert done.returncode == 2, done.stderr
    assert (f"node 1 (Load Checkpoint): ckpt_name 'sd15-not-here.safetensors' is not on the server at {server.url} "
            f"(it has {CHECKPOINT}). Put the file in that ComfyUI's models/checkpoints folder, or name a file it has "
            f'with --set "Load Checkpoint.ckpt_name={CHECKPOINT}".') in done.stderr, done.stderr
    assert server.get_json("/queue") == {"queue_running": [], "queue_pending": []}


@pytest.mark.server
def test_the_readme_example_on_a_server_without_checkpoints_says_where_the_file_goes(tmp_path):
    with ComfyServer(tmp_path / "bare") as bare:
        done = cli(str(PIPELINE), server=bare)
    assert done.returncode == 2, done.stderr
    assert (f"node 1 (Load Checkpoint): ckpt_name 'v1-5-pruned-emaonly.safetensors' is not on the server at {bare.url} "
            "(its checkpoints list is empty). Put the file in that ComfyUI's models/checkpoints folder, or name a file "
            'it has with --set "Load Checkpoint.ckpt_name=NAME".') in done.stderr, done.stderr


def test_a_ui_file_exits_2_pointing_to_its_api_twin():
    done = cli(str(REPO_ROOT / "example_workflows" / "loralab_sd15_pipeline.json"))
    assert done.returncode == 2 and "Workflow -> Export (API)" in done.stderr and str(PIPELINE) in done.stderr


def test_no_server_exits_3_with_the_address_it_tried():
    address = f"http://127.0.0.1:{free_port()}"
    done = cli(str(PIPELINE), "--server", address)
    assert done.returncode == 3 and f"cannot reach ComfyUI at {address}" in done.stderr
