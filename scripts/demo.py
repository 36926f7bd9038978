"""The demo: start ComfyUI headless with LoRA Lab, run an example pipeline, print where its files went.

By default it teaches LoRA Lab's built-in toy-world model (32x32 coloured shapes) a new concept, `zqx`, a purple
ring the model never drew, from 20 generated captioned images, with no download; the Strength Sweep grid shows
the ring fading in as the LoRA's strength grows. --model flow_toy_world does the same on the Flux-architecture
flow toy world (flow matching, T5 + CLIP-L). With --checkpoint it runs the SD1.5 pipeline on your checkpoint
instead (a GPU is recommended), on --dataset.

A rerun with the same dataset, options, model and LoRA Lab code trains nothing: it prints the files of the earlier
run (--retrain trains again; Save LoRA then picks the next free name, zqx_2.safetensors).
"""
from __future__ import annotations

import argparse
import functools
import os
import pathlib
import signal
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

from comfy_server import ComfyServer, comfyui_path, comfyui_version  # noqa: E402
from demo_reuse import DemoFile, earlier_run, remember_run, run_key  # noqa: E402
from loralab_cli.main import Outcome, build_parser, execute, listen_for_ctrl_c, prepare_runs  # noqa: E402
from loralab_cli.progress import ProgressDisplay, format_duration  # noqa: E402
from loralab_cli.workflow import CliError, Run, Workflow, is_link, load_workflow  # noqa: E402
from trainer.data.loading import load_dataset  # noqa: E402
from trainer.data.roots import ENVIRONMENT_VARIABLE as DATASET_ROOTS_VARIABLE  # noqa: E402
from trainer.errors import DatasetError  # noqa: E402
from trainer.toy_world.concept_dataset import write_concept_dataset  # noqa: E402  (generated data, no download)

EXAMPLES = REPO / "example_workflows" / "api"
TOY_WORKFLOWS = {"toy_world": EXAMPLES / "loralab_toy_world_demo.json",
                 "flow_toy_world": EXAMPLES / "loralab_flow_toy_world_demo.json"}
TOY_DESCRIPTIONS = {"toy_world": "the toy-world model", "flow_toy_world": "the flow toy world (Flux architecture)"}
SD15_WORKFLOW = EXAMPLES / "loralab_sd15_pipeline.json"
CONCEPT_FOLDER = "loralab_zqx"  # inside ComfyUI's input folder, as the toy-world example names it
SD15_DATASET_FOLDER = "lora_dataset"  # inside ComfyUI's input folder, as the SD1.5 example names it
AUTO_CAPTION = "LoraLabAutoCaption"
BAD_INPUT_EXIT = 2


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=list(TOY_WORKFLOWS), default="toy_world",
                        help="the built-in model the demo trains: toy_world (SD1.5 architecture) or flow_toy_world "
                             "(Flux.1 architecture, flow matching)")
    parser.add_argument("--checkpoint", type=pathlib.Path,
                        help="a real SD1.5 checkpoint: run the SD1.5 pipeline example on it (GPU recommended)")
    parser.add_argument("--dataset", type=pathlib.Path,
                        help="your own dataset folder instead of the generated zqx one (with --checkpoint: instead of "
                             f"ComfyUI/input/{SD15_DATASET_FOLDER})")
    parser.add_argument("--caption", action="store_true",
                        help="let Auto Caption caption the images that have no caption file (downloads the captioner "
                             "the workflow names on first use); without it such images stop the demo before it starts")
    parser.add_argument("--retrain", action="store_true",
                        help="train again even when an earlier run had the same dataset, options and code")
    parser.add_argument("--base-directory", type=pathlib.Path,
                        default=pathlib.Path(os.environ.get("LORALAB_HOME", pathlib.Path.home() / ".cache/comfyui-lora-lab")) / "demo")
    args = parser.parse_args()
    if args.checkpoint is not None and not args.checkpoint.is_file():
        parser.error(f"--checkpoint {args.checkpoint}: no such file")
    if args.checkpoint is not None and args.model != "toy_world":
        parser.error("--model picks a built-in model and --checkpoint your SD1.5 checkpoint: pass one of them")
    return args


def stop_on_termination() -> None:
    """SIGTERM and SIGHUP end the demo as Ctrl-C does, through the `with` that stops its ComfyUI server."""

    def leave(number: int, frame) -> None:
        raise SystemExit(128 + number)

    for number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, leave)
    listen_for_ctrl_c()


def dataset_folder(args: argparse.Namespace, base: pathlib.Path) -> pathlib.Path:
    """The folder the run trains on; the generated zqx dataset is written on the first run (never overwritten)."""
    if args.dataset is not None:
        return args.dataset.expanduser().resolve()
    if args.checkpoint is not None:
        return base / "input" / SD15_DATASET_FOLDER
    folder = base / "input" / CONCEPT_FOLDER
    if not folder.exists():
        print(f"Writing the generated zqx dataset (20 captioned pictures) to {folder}", flush=True)
        write_concept_dataset(folder, count=20)
    return folder


def cli_options(args: argparse.Namespace, base: pathlib.Path) -> list[str]:
    """loralab_cli's options (without --server): the SD1.5 example names the checkpoint; --dataset sets the folder."""
    options = []
    if args.checkpoint is not None:
        checkpoints = base / "models" / "checkpoints"
        checkpoints.mkdir(parents=True, exist_ok=True)
        if not (checkpoints / args.checkpoint.name).exists():
            (checkpoints / args.checkpoint.name).symlink_to(args.checkpoint.resolve())
        options += ["--set", f"Load Checkpoint.ckpt_name={args.checkpoint.name}"]
    if args.dataset is not None:
        options += ["--dataset", str(args.dataset.expanduser().resolve())]
    return options


def uncaptioned_images(args: argparse.Namespace, dataset: pathlib.Path, workflow: Workflow) -> list[pathlib.Path]:
    """Training images without a caption file, read as the workflow's Load Dataset reads the folder; without
    --caption there must be none (Auto Caption would download its model), and the error says what to do."""
    if args.checkpoint is not None and args.dataset is None and not dataset.is_dir():
        raise DatasetError(f"--checkpoint trains on your images: pass --dataset FOLDER (or put them in {dataset})")
    loader = next(node for node in workflow.values() if node["class_type"] == "LoraLabLoadDataset")
    extension = loader["inputs"].get("caption_extension", ".txt")
    images = load_dataset(dataset, repeats=1, caption_extension=extension).dataset.training_images
    missing = [image.path for image in images if not image.has_caption_file]
    if missing and not args.caption:
        shown = ", ".join(path.name for path in missing[:10]) + (", ..." if len(missing) > 10 else "")
        raise DatasetError(
            f"{len(missing)} image(s) in {dataset} have no caption file: {shown}.\n  Write one caption line next to "
            f"each image (for a.png: a.txt), or pass --caption to let Auto Caption write them with "
            f"{captioner_of(workflow)}, which is downloaded from Hugging Face into models/captioners on first use.")
    return missing


def captioner_of(workflow: Workflow) -> str:
    return next((node["inputs"].get("captioner", "?") for node in workflow.values()
                 if node["class_type"] == AUTO_CAPTION), "?")


def without_auto_caption(workflow: Workflow) -> Workflow:
    """The workflow with Auto Caption bypassed (its dataset input feeds what it fed), when nothing needs captioning."""
    result = {node_id: {**node, "inputs": dict(node["inputs"])} for node_id, node in workflow.items()}
    for caption_id in [node_id for node_id, node in workflow.items() if node["class_type"] == AUTO_CAPTION]:
        source = result[caption_id]["inputs"]["dataset"]
        del result[caption_id]
        for node in result.values():
            for name, value in node["inputs"].items():
                if is_link(value) and value[0] == caption_id:
                    if value[1] != 0:
                        return workflow  # its caption summary is used: keep the node
                    node["inputs"][name] = source
    return result


def file_label(image_path: str) -> str:
    if "/charts/" in image_path:
        return "loss chart"
    if "/samples/" in image_path:
        return "sample"
    return "sweep grid"


def outcome_files(outcome: Outcome, base: pathlib.Path) -> list[DemoFile]:
    """The run's files as absolute paths (ComfyUI reports images relative to its base folder)."""
    files = [DemoFile("LoRA", path) for path in outcome.loras]
    files += [DemoFile(file_label(image["path"]), str(base / image["path"])) for image in outcome.images]
    return sorted(files, key=lambda file: ["LoRA", "sweep grid", "loss chart", "sample"].index(file.label))


def print_files(files: list[DemoFile] | tuple[DemoFile, ...]) -> None:
    for file in files:
        print(f"  {file.label:<11} {file.path}")


def describe(args: argparse.Namespace, dataset: pathlib.Path) -> str:
    if args.checkpoint is not None:
        return f"LoRA Lab demo: the SD1.5 pipeline on {args.checkpoint.resolve()}, trained on the images in {dataset}"
    if args.dataset is not None:
        return f"LoRA Lab demo: {TOY_DESCRIPTIONS[args.model]} trained on the images in {dataset} (nothing is downloaded)"
    return (f"LoRA Lab demo: {TOY_DESCRIPTIONS[args.model]} learns `zqx`, a purple ring, from the 20 pictures in {dataset} "
            "(nothing is downloaded)")


def run_demo(args: argparse.Namespace, base: pathlib.Path) -> int:
    workflow_file = TOY_WORKFLOWS[args.model] if args.checkpoint is None else SD15_WORKFLOW
    workflow = load_workflow(workflow_file)
    options = cli_options(args, base)
    dataset = dataset_folder(args, base)
    try:
        missing = uncaptioned_images(args, dataset, workflow)
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return BAD_INPUT_EXIT
    key = functools.partial(run_key, REPO, comfyui_path(), workflow_file, options, dataset, args.checkpoint)
    if not args.retrain and (earlier := earlier_run(base, key())):
        print(f"Nothing changed since the demo run of {earlier.finished} (same dataset, workflow, model and LoRA Lab "
              "code), so its files are shown again and nothing was trained; --retrain trains again.")
        print_files(earlier.files)
        return 0

    print(describe(args, dataset))
    try:
        outcome = run_on_server(args, base, [str(workflow_file), *options], caption=bool(missing))
    except CliError as error:
        print(f"error: {error}\nComfyUI's log: {base / 'server.log'}", file=sys.stderr)
        return error.exit_code
    except (RuntimeError, TimeoutError) as error:  # ComfyServer: ComfyUI exited or never answered (log tail shown)
        print(f"error: {error}", file=sys.stderr)
        return 1
    took = format_duration(outcome.seconds or 0)
    if outcome.status != "success":
        print(f"{'Interrupted' if outcome.status == 'interrupted' else 'FAILED'} after {took}: {outcome.error}\n"
              f"ComfyUI's log: {base / 'server.log'}")
        return 1
    files = outcome_files(outcome, base)
    print(f"Finished in {took}. This run's files:")
    print_files(files)
    remember_run(base, key(), outcome.seconds or 0.0, files)  # the dataset as trained on (captions written)
    return 0


def run_on_server(args: argparse.Namespace, base: pathlib.Path, cli_argv: list[str], caption: bool) -> Outcome:
    """Start the demo's ComfyUI, queue the run through loralab_cli's code (progress on stderr), stop ComfyUI."""
    device = "on the CPU" if args.checkpoint is None else "on its default device"
    print(f"Starting ComfyUI {'.'.join(map(str, comfyui_version()))} {device}; its folders are under {base}, its log "
          f"is {base / 'server.log'}", flush=True)
    started = time.monotonic()
    if args.dataset is not None:  # the demo's ComfyUI is the user's own: their folder becomes one of its dataset roots
        declared = [os.environ.get(DATASET_ROOTS_VARIABLE, ""), str(args.dataset.expanduser().resolve())]
        os.environ[DATASET_ROOTS_VARIABLE] = os.pathsep.join(folder for folder in declared if folder)
    with ComfyServer(base, cpu=args.checkpoint is None) as server:  # the pack linked into its custom_nodes
        print(f"ComfyUI is ready at {server.url} ({time.monotonic() - started:.0f} s)", flush=True)
        client, runs = prepare_runs(build_parser().parse_args([*cli_argv, "--server", server.url]))
        if not caption:
            runs = [Run(run.name, without_auto_caption(run.workflow)) for run in runs]
        (outcome,) = execute(client, runs, ProgressDisplay(sys.stderr, interactive=sys.stderr.isatty()),
                             report=lambda finished: None)
    return outcome


def main() -> int:
    args = parse_arguments()
    stop_on_termination()
    return run_demo(args, args.base_directory.resolve())


if __name__ == "__main__":
    sys.exit(main())
