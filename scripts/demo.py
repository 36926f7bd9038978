"""The demo: start ComfyUI headless with LoRA Lab, run an example pipeline, print where its files went.

By default it teaches LoRA Lab's built-in toy-world model (32x32 coloured shapes) a new concept, `zqx`, a purple
ring the model never drew, from 20 generated captioned images: the whole run takes about a minute on a CPU, with
no download, and the Strength Sweep grid shows the ring fading in as the LoRA's strength grows.
With --checkpoint it runs the SD1.5 pipeline on your checkpoint instead (a GPU is recommended), on --dataset.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from harness.server import ComfyServer  # noqa: E402
from loralab_cli.main import main as cli_main  # noqa: E402
from trainer.toy_world.concept_dataset import write_concept_dataset  # noqa: E402  (generated data, no download)

EXAMPLES = REPO / "example_workflows" / "api"
TOY_WORKFLOW = EXAMPLES / "loralab_toy_world_demo.json"
SD15_WORKFLOW = EXAMPLES / "loralab_sd15_pipeline.json"
CONCEPT_FOLDER = "loralab_zqx"  # inside ComfyUI's input folder, as the toy-world example names it


def concept_dataset(base: pathlib.Path) -> pathlib.Path:
    """The generated zqx dataset in ComfyUI's input folder, written on the first run and reused (never overwritten)."""
    folder = base / "input" / CONCEPT_FOLDER
    if not folder.exists():
        print(f"writing the generated zqx dataset (20 captioned images) to {folder}", flush=True)
        write_concept_dataset(folder, count=20)
    return folder


def cli_arguments(args: argparse.Namespace, base: pathlib.Path, url: str) -> list[str]:
    """The command line for loralab_cli: the toy-world example, or the SD1.5 one on the given checkpoint."""
    server = ["--server", url]
    if args.checkpoint is None:
        if args.dataset is None:  # the example's Load Dataset already names this folder of the input folder
            concept_dataset(base)
            return [str(TOY_WORKFLOW), *server]
        return [str(TOY_WORKFLOW), *server, "--dataset", str(args.dataset)]
    checkpoints = base / "models" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    if not (checkpoints / args.checkpoint.name).exists():
        (checkpoints / args.checkpoint.name).symlink_to(args.checkpoint.resolve())
    command = [str(SD15_WORKFLOW), *server, "--set", f"Load Checkpoint.ckpt_name={args.checkpoint.name}"]
    return command + (["--dataset", str(args.dataset)] if args.dataset else [])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=pathlib.Path,
                        help="a real SD1.5 checkpoint: run the SD1.5 pipeline example on it (GPU recommended)")
    parser.add_argument("--dataset", type=pathlib.Path,
                        help="your own dataset folder instead of the generated zqx one (with --checkpoint: instead of "
                             "ComfyUI/input/lora_dataset)")
    parser.add_argument("--base-directory", type=pathlib.Path,
                        default=pathlib.Path(os.environ.get("LORALAB_HOME", pathlib.Path.home() / ".cache/comfyui-lora-lab")) / "demo")
    args = parser.parse_args()
    if args.checkpoint is not None and not args.checkpoint.is_file():
        parser.error(f"--checkpoint {args.checkpoint}: no such file")
    base = args.base_directory.resolve()
    if args.checkpoint is not None and args.dataset is None and not (base / "input" / "lora_dataset").is_dir():
        parser.error(f"--checkpoint trains on your images: pass --dataset FOLDER (or put them in "
                     f"{base / 'input' / 'lora_dataset'})")
    with ComfyServer(base, cpu=args.checkpoint is None) as server:  # the pack linked into its custom_nodes
        status = cli_main(cli_arguments(args, base, server.url))
    print(f"\nComfyUI's folders for this demo are under {base} (LoRAs in models/loras, grids and charts in output).")
    return status


if __name__ == "__main__":
    sys.exit(main())
