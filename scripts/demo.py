"""The demo: start ComfyUI headless with LoRA Lab, run the example pipeline, print where its files went.

Without --checkpoint it trains on a small random-weight SD1.5-architecture model (so it runs anywhere, in a
few minutes on a CPU) and the bundled generated dataset; with --checkpoint and a GPU it trains for real.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import time
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from harness.datasets import make_sample_dataset  # noqa: E402  (generated data, no download)
from harness.server import free_port  # noqa: E402
from loralab_cli.main import main as cli_main  # noqa: E402

WORKFLOW = REPO / "example_workflows" / "api" / "loralab_sd15_pipeline.json"
CPU_SETTINGS = ["Train LoRA.epochs=2", "Train LoRA.resolution=64", "Train LoRA.rank=4", "Train LoRA.mixed_precision=fp32",
                "Train LoRA.unet_lr=0.001", "Train LoRA.text_encoder_lr=0", "Train LoRA.sample_every_n_epochs=1",
                "Train LoRA.caption_shuffle=false", "Load Dataset.repeats=2", "Load Dataset.epochs=2",
                "Save LoRA.epochs=all", "Strength Sweep.width=64", "Strength Sweep.height=64", "Strength Sweep.steps=4",
                "Strength Sweep.strengths=0, 0.5, 1.0", "Strength Sweep.epochs=all",
                "Strength Sweep.prompts=ohwx, red circle, white background"]


def start_comfyui(base: pathlib.Path, port: int, cpu: bool) -> subprocess.Popen:
    (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / "comfyui-lora-lab"
    if not link.exists():
        link.symlink_to(REPO, target_is_directory=True)
    command = [sys.executable, "main.py", "--listen", "127.0.0.1", "--port", str(port), "--base-directory", str(base),
               "--database-url", "sqlite:///:memory:", "--disable-api-nodes"] + (["--cpu"] if cpu else [])
    log = open(base / "comfyui.log", "w")
    process = subprocess.Popen(command, cwd=os.environ["COMFYUI_PATH"], stdout=log, stderr=subprocess.STDOUT)
    for _ in range(600):
        if process.poll() is not None:
            sys.exit(f"ComfyUI exited; see {base / 'comfyui.log'}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/object_info/LoraLabTrainLoRA", timeout=2)
            return process
        except OSError:
            time.sleep(0.5)
    sys.exit(f"ComfyUI did not start; see {base / 'comfyui.log'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=pathlib.Path, help="a real SD1.5 checkpoint to train on (GPU recommended)")
    parser.add_argument("--dataset", type=pathlib.Path, help="your own dataset folder instead of the generated one")
    parser.add_argument("--base-directory", type=pathlib.Path,
                        default=pathlib.Path(os.environ.get("LORALAB_HOME", pathlib.Path.home() / ".cache/comfyui-lora-lab")) / "demo")
    args = parser.parse_args()
    base = args.base_directory
    checkpoints = base / "models" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    if args.checkpoint:
        name = args.checkpoint.name
        if not (checkpoints / name).exists():
            (checkpoints / name).symlink_to(args.checkpoint.resolve())
    else:
        name = "loralab-demo-random-sd15.safetensors"
        if not (checkpoints / name).exists():
            print("building a random-weight SD1.5-architecture checkpoint (once, about 1 GB)...", flush=True)
            script = "from harness import runtime, models; runtime.boot(); print(models.detectable_sd15_checkpoint())"
            built = subprocess.run([sys.executable, "-c", script], cwd=REPO / "tests", capture_output=True, text=True, check=True)
            shutil.copyfile(built.stdout.strip().splitlines()[-1], checkpoints / name)
    dataset = args.dataset or make_sample_dataset(base / "input" / "loralab_demo_dataset", count=6, size=64, repeats=2)
    port = free_port()
    server = start_comfyui(base, port, cpu=args.checkpoint is None)
    try:
        settings = [] if args.checkpoint else CPU_SETTINGS
        cli_args = [str(WORKFLOW), "--server", f"http://127.0.0.1:{port}", "--set", f"Load Checkpoint.ckpt_name={name}",
                    "--dataset", str(dataset)]
        for setting in settings:
            cli_args += ["--set", setting]
        status = cli_main(cli_args)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"\nComfyUI's folders for this demo are under {base} (LoRAs in models/loras, grids and charts in output).")
    return status


if __name__ == "__main__":
    sys.exit(main())
