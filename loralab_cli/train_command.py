"""`python -m loralab_cli train --config training_config.toml`: kohya configs trained without a ComfyUI server.

ComfyUI's runtime runs in this process (its loaders, model classes and memory management) and the pack's own
nodes do the work (Load Dataset, Train LoRA, Save LoRA), so a headless run writes what a workflow writes.
Paths in a config or flag are the user's own, given on their own command line: they are trusted (any folder the
user can read and write), unlike a node's inputs on a server, which stay inside ComfyUI's folders.
Under `accelerate launch` or `torchrun` every process runs this command and they train each LoRA data-parallel
(trainer/training/data_parallel.py), each on its own GPU; the main process prints and writes, the others wait.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import os
import pathlib
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

from . import comfy_runtime
from .headless_progress import EventPrinter, cost_text
from .kohya_config import load_run, parse_flags
from .kohya_keys import COMMAND, DATASET, NODE_TYPES, SAVE, TRAIN, KohyaConfigError, KohyaRun
from .progress import format_duration
from .workflow import CliError, convert_value

PRICE_VARIABLE = "LORALAB_GPU_PRICE"
FAILED_EXIT, USAGE_EXIT, CANCELLED_EXIT = 1, 2, 130
REPORT_SUFFIX = "_dataset_report.txt"
SWEEP_NODE = "LoraLabStrengthSweep"

EPILOG = f"""\
Any other --flag is a kohya flag (--network_dim 32, --learning_rate 1e-4, --network_args "algo=loha" ...): it
applies to every config and wins over the files, as on kohya's command line. See the README's kohya key table.

examples:
  python -m loralab_cli train --config training_config.toml
  accelerate launch --num_processes 4 -m loralab_cli train --config training_config.toml   (4 GPUs, one LoRA)
  python -m loralab_cli train --config a.toml --config b.toml --gpu-price 0.79    (two LoRAs, one model load)
  python -m loralab_cli train --config cfg.toml --dataset_config dataset.toml --network_dim 16
  python -m loralab_cli train --config cfg.toml --sweep "sks dog on a beach" --sweep-set seeds=1,2,3

Paths in the configs are the user's own and are read and written as given (relative to this folder, as kohya
reads them). Outputs go to output_dir: OUTPUT_NAME.safetensors (and -00000N per kept epoch), the dataset report,
and loralab/ (loss chart, training state, samples); an existing file is never replaced (a _2 name is used).
The GPU price per hour may also come from ${PRICE_VARIABLE}.
exit status: 0 every LoRA trained; 1 a run failed; 2 a config or flag was refused; 130 cancelled with Ctrl-C
(the run's resumable state is kept and named).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loralab_cli train", epilog=EPILOG, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="Train LoRAs from kohya sd-scripts config files, without a server.")
    parser.add_argument("--config", "--config_file", dest="configs", action="append", type=pathlib.Path, default=[],
                        metavar="TOML", help="a kohya --config_file; repeat to train several LoRAs back to back")
    parser.add_argument("--dataset_config", "--dataset-config", type=pathlib.Path, metavar="TOML",
                        help="a kohya dataset config ([general], [[datasets]], [[datasets.subsets]]) for every config")
    parser.add_argument("--gpu-price", type=float, metavar="PER_HOUR",
                        default=_price_from_environment(), help=f"rental price per hour, for the cost (or ${PRICE_VARIABLE})")
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even where a GPU is present")
    parser.add_argument("--sweep", dest="sweep_prompts", action="append", default=[], metavar="PROMPT",
                        help="after training, render a Strength Sweep grid of this prompt (repeatable: one block of "
                             "rows per prompt) at the training resolution, into output_dir/loralab/sweeps")
    parser.add_argument("--sweep-set", dest="sweep_sets", action="append", default=[], metavar="INPUT=VALUE",
                        help="a Strength Sweep input for --sweep, e.g. --sweep-set strengths=0,0.5,1 --sweep-set steps=20")
    return parser


def _price_from_environment() -> float | None:
    text = os.environ.get(PRICE_VARIABLE, "").strip()
    try:
        return float(text) if text else None
    except ValueError:
        raise SystemExit(f"error: {PRICE_VARIABLE}={text!r} is not a price per hour such as 0.79.") from None


@dataclass
class Trained:
    """One LoRA's outcome for the final summary."""

    name: str
    files: list[str]
    seconds: float
    steps: int
    samples: int


def main(argv: list[str]) -> int:
    args, kohya_words = build_parser().parse_known_args(argv)
    if not args.configs and not kohya_words:
        build_parser().print_usage(sys.stderr)
        print("error: give at least one --config (or kohya flags such as --pretrained_model_name_or_path).", file=sys.stderr)
        return USAGE_EXIT
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1  # set by accelerate launch and torchrun
    try:
        flags = parse_flags(kohya_words)
        nodes = comfy_runtime.boot(comfy_runtime.find_comfyui(), cpu=args.cpu,
                                   gpu=int(os.environ.get("LOCAL_RANK", "0")) if launched else None)
        import comfy.model_management as mm

        device = mm.get_torch_device()
        configs = args.configs or [None]
        runs = [load_run(config, args.dataset_config, flags, device.type) for config in configs]
        for run in runs:
            _require(run)
        sweep = sweep_inputs(nodes, args.sweep_prompts, args.sweep_sets)
        data_parallel = _pack_module(nodes, "trainer.training.data_parallel")
        parallel = join_launch(data_parallel, device)
    except (KohyaConfigError, CliError, comfy_runtime.ComfyNotFound) as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE_EXIT
    # One process prints: the others' progress would repeat it (their errors still show, named by rank).
    stream = sys.stderr if parallel.is_main else open(os.devnull, "w")
    printer = EventPrinter(stream, stream.isatty(), args.gpu_price)
    try:
        return train_all(nodes, runs, printer, args.gpu_price, sweep, parallel)
    finally:
        data_parallel.leave()


def join_launch(data_parallel: Any, device: Any) -> Any:
    """This process's DataParallel: under a launcher, it joins the launch's process group first."""
    try:
        launch = data_parallel.launched()
    except ValueError as error:  # trainer.errors.SettingsError: a launch without its variables
        raise CliError(str(error)) from error
    if launch is not None:
        data_parallel.join(launch, device)
    return data_parallel.current()


def _require(run: KohyaRun) -> None:
    needed = {(COMMAND, "checkpoint"): "pretrained_model_name_or_path", (DATASET, "path"): "train_data_dir (or a dataset config)"}
    missing = [key for target, key in needed.items() if target not in run.inputs]
    if missing:
        raise KohyaConfigError(f"{run.name}: {' and '.join(missing)} not set.")


def sweep_inputs(nodes: Any, prompts: list[str], sets: list[str]) -> dict[str, Any] | None:
    """Strength Sweep's inputs for `--sweep` (None without it): its defaults, the prompts, then `--sweep-set`s typed as
    the node declares them."""
    if not prompts:
        if sets:
            raise CliError("--sweep-set needs --sweep PROMPT (the prompt to render).")
        return None
    declared = nodes.NODE_CLASS_MAPPINGS[SWEEP_NODE].INPUT_TYPES()
    specs = {**declared["required"], **declared.get("optional", {})}
    inputs = {**_defaults(nodes, SWEEP_NODE), "prompts": "\n".join(prompts)}
    for text in sets:
        name, equals, value = text.partition("=")
        if not equals or name.strip() not in specs:
            raise CliError(f"--sweep-set {text!r}: expected INPUT=VALUE with one of Strength Sweep's inputs: "
                           f"{', '.join(specs)}.")
        inputs[name.strip()] = convert_value(value, list(specs[name.strip()]), f"--sweep-set {name.strip()}")
    return inputs


def train_all(nodes: Any, runs: list[KohyaRun], printer: EventPrinter, price: float | None,
              sweep: dict[str, Any] | None = None, parallel: Any = None) -> int:
    """Train each run in turn, loading each distinct checkpoint once; returns the exit status."""
    import comfy.model_management as mm

    parallel = parallel or _pack_module(nodes, "trainer.training.loop").SingleProcess()

    def failed(text: str) -> None:  # every process's own failure is shown, the main one's as any other line
        if parallel.is_main:
            printer.print(text)
        else:
            print(f"process {parallel.rank}: {text}", file=sys.stderr)

    started = time.monotonic()
    loaded: dict[str, Any] = {}
    trained: list[Trained] = []
    with _headless_server(printer), _cancel_on_ctrl_c(launched=parallel.world_size > 1):
        for index, run in enumerate(runs, start=1):
            printer.start_run(f"[{index}/{len(runs)} {run.name}] " if len(runs) > 1 else "")
            for note in run.notes + parallel_notes(run, parallel):
                printer.print(f"note: {note}")
            try:
                model = models_for(run, loaded, printer)
                check_model_type(run, model[0])
                trained.append(train_one(nodes, run, model, printer, sweep, parallel))
            except KeyboardInterrupt:
                failed("cancelled.")
                return CANCELLED_EXIT
            except mm.InterruptProcessingException as error:  # a BaseException in current ComfyUI
                state = getattr(error.__cause__, "state_dir", None)  # Train LoRA's TrainingCancelled
                failed("cancelled." if not parallel.is_main else  # the main process saved the state and names it
                       f"cancelled: continue with --resume {state}" if state else
                       "cancelled before the first step ended: nothing to resume")
                return CANCELLED_EXIT
            except Exception as error:  # noqa: BLE001  (the user sees the node's message, as ComfyUI shows it)
                failed(f"error: {run.name}: {error}")
                return FAILED_EXIT
    print_summary(trained, time.monotonic() - started, price, printer)
    return 0


def parallel_notes(run: KohyaRun, parallel: Any) -> list[str]:
    """Under a launcher, the global batch; learning rates stay as set, as in kohya."""
    if parallel.world_size == 1:
        return []
    batch = run.get(TRAIN, "batch_size", 1)
    return [f"{parallel.world_size} processes train data-parallel: each step's global batch is {batch * parallel.world_size} "
            f"(batch_size {batch} x {parallel.world_size} processes); learning rates are used as set, not scaled."]


def models_for(run: KohyaRun, loaded: dict[str, Any], printer: EventPrinter) -> tuple[Any, Any, Any]:
    """MODEL, CLIP and VAE for a run; each file (checkpoint, separate VAE) is loaded once for all runs."""
    checkpoint, vae_file = run.get(COMMAND, "checkpoint"), run.get(COMMAND, "vae")
    if checkpoint not in loaded:
        loaded[checkpoint] = load_checkpoint(checkpoint, printer)
    model, clip, vae = loaded[checkpoint]
    if vae_file is not None:
        if vae_file not in loaded:
            loaded[vae_file] = load_vae(vae_file, printer)
        vae = loaded[vae_file]
    return model, clip, vae


def load_vae(path: str, printer: EventPrinter) -> Any:
    """A VAE file, as VAELoader loads one."""
    import comfy.sd
    import comfy.utils

    if not pathlib.Path(path).is_file():
        raise KohyaConfigError(f"vae {path} does not exist.")
    printer.print(f"Loading VAE {path}")
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(path, safe_load=True))
    vae.throw_exception_if_invalid()
    return vae


def load_checkpoint(path: str, printer: EventPrinter) -> tuple[Any, Any, Any]:
    """MODEL, CLIP and VAE of a single-file checkpoint, as CheckpointLoaderSimple loads one."""
    import comfy.sd
    import folder_paths

    if not pathlib.Path(path).is_file():
        raise KohyaConfigError(f"pretrained_model_name_or_path {path} does not exist.")
    printer.print(f"Loading checkpoint {path}")
    loaded = comfy.sd.load_checkpoint_guess_config(path, output_vae=True, output_clip=True,
                                                   embedding_directory=folder_paths.get_folder_paths("embeddings"))
    model, clip, vae = loaded[:3]
    if clip is None or vae is None:
        raise KohyaConfigError(f"{path} holds no text encoder or VAE; LoRA Lab's command needs a full checkpoint.")
    return model, clip, vae


def check_model_type(run: KohyaRun, model: Any) -> None:
    """kohya's v2 / v_parameterization say what the user believes the checkpoint is; ComfyUI read what it is."""
    import comfy.model_sampling

    sampling = model.get_model_object("model_sampling")
    is_v = isinstance(sampling, comfy.model_sampling.V_PREDICTION)
    is_v2 = type(model.model.model_config).__name__.startswith("SD2")
    for key, actual in (("v_parameterization", is_v), ("v2", is_v2)):
        said = run.get(COMMAND, key)
        if said is not None and said != actual:
            raise KohyaConfigError(f"{key} = {str(said).lower()}, but ComfyUI reads the checkpoint as "
                                   f"{type(model.model.model_config).__name__} ({key} {str(actual).lower()}); "
                                   "fix the setting or the checkpoint path.")


def train_one(nodes: Any, run: KohyaRun, model: tuple[Any, Any, Any], printer: EventPrinter,
              sweep: dict[str, Any] | None, parallel: Any) -> Trained:
    """Load Dataset, Train LoRA, Save LoRA (and Strength Sweep when asked) for one config, writing into its output_dir.

    In a data-parallel run every process trains; the main one writes, and the others wait for it at a barrier.
    """
    import torch

    started = time.monotonic()
    output_dir = pathlib.Path(run.get(COMMAND, "output_dir") or pathlib.Path.cwd() / "output")
    if parallel.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
    with _comfy_folders(output_dir), _dataset_roots(run), torch.inference_mode():
        dataset, report = _node(nodes, DATASET)(**_dataset_inputs(nodes, run, model))["result"]
        dataset = with_subset_flips(dataset, run)
        if parallel.is_main:
            printer.print(f"dataset report: {write_report(nodes, output_dir, run.get(SAVE, 'filename_prefix'), report)}")
        train_inputs = {**_defaults(nodes, TRAIN), **run.node_inputs(TRAIN)}
        result = _node(nodes, TRAIN)(model=model[0], clip=model[1], vae=model[2], dataset=dataset,
                                     unique_id="headless", **train_inputs)
        printer.print(result["ui"]["text"][0])
        lora = result["result"][2]
        files, images = [], list(result["ui"]["images"])
        if parallel.is_main:
            saved = _node(nodes, SAVE)(lora=lora, **{**_defaults(nodes, SAVE), **run.node_inputs(SAVE),
                                                    "overwrite": False})
            files = saved["ui"]["text"]
            if sweep is not None:
                side = train_inputs["resolution"] or lora.dataset_summary["resolution"]  # 0: the model's native size
                grid = _node(nodes, SWEEP_NODE)(model=model[0], clip=model[1], vae=model[2], lora=lora,
                                                **{"width": side, "height": side, **sweep})
                images += grid["ui"]["images"]
        parallel.barrier()
    files += [str(output_dir / image["subfolder"] / image["filename"]) for image in images]
    for path in files:
        printer.print(f"wrote {path}")
    steps = len(lora.loss_history)
    return Trained(run.name, files, time.monotonic() - started, steps,
                   steps * train_inputs["batch_size"] * parallel.world_size)


def with_subset_flips(dataset: Any, run: KohyaRun) -> Any:
    """kohya's per-subset flip_aug (a dataset config flipping only its regularization or only its training subset):
    those images are mirrored at random, the others never."""
    flips = {False: run.get(COMMAND, "flip_training"), True: run.get(COMMAND, "flip_regularization")}
    if flips == {False: None, True: None}:
        return dataset
    images = tuple(dataclasses.replace(image, flip_augment=bool(flips[image.is_regularization]))
                   for image in dataset.images)
    return dataclasses.replace(dataset, images=images)


def _node(nodes: Any, node: str) -> Callable[..., Any]:
    """A new instance's FUNCTION, as ComfyUI's executor calls a node."""
    instance = nodes.NODE_CLASS_MAPPINGS[NODE_TYPES.get(node, node)]()
    return getattr(instance, instance.FUNCTION)


def _defaults(nodes: Any, node: str) -> dict[str, Any]:
    """Every widget input of a node at its default (a choice without one at its first), as a new node in ComfyUI starts."""
    spec = nodes.NODE_CLASS_MAPPINGS[NODE_TYPES.get(node, node)].INPUT_TYPES()
    sections = {**spec.get("required", {}), **spec.get("optional", {})}
    defaults = {name: entry[1]["default"] for name, entry in sections.items()
                if len(entry) > 1 and isinstance(entry[1], dict) and "default" in entry[1]}
    choices = {name: entry[0][0] for name, entry in sections.items() if isinstance(entry[0], list) and entry[0]}
    return {**choices, **defaults}


def _dataset_inputs(nodes: Any, run: KohyaRun, model: tuple[Any, Any, Any]) -> dict[str, Any]:
    return {**_defaults(nodes, DATASET), **run.node_inputs(DATASET), "model": model[0], "clip": model[1]}


def write_report(nodes: Any, output_dir: pathlib.Path, output_name: str, report: str) -> pathlib.Path:
    """The dataset report beside the LoRA, under a free name (never replacing a file)."""
    atomic_files = _pack_module(nodes, "trainer.files.atomic_files")
    stem = output_dir / f"{output_name}{REPORT_SUFFIX.removesuffix('.txt')}"
    for counter in range(1, 10000):
        path = stem.with_name(f"{stem.name}{'' if counter == 1 else f'_{counter}'}.txt")
        try:
            atomic_files.write_atomically(path, report.encode("utf-8"), overwrite=False)
            return path
        except FileExistsError:
            continue
    raise KohyaConfigError(f"{output_dir}: no free name for the dataset report.")


def _pack_module(nodes: Any, name: str) -> Any:
    """A module of this pack as ComfyUI imported it (under a name derived from the pack's path)."""
    package = nodes.NODE_CLASS_MAPPINGS[NODE_TYPES[TRAIN]].__module__.split(".nodes.")[0]
    return importlib.import_module(f"{package}.{name}")


@contextlib.contextmanager
def _comfy_folders(output_dir: pathlib.Path):
    """ComfyUI's output folder and first loras folder become output_dir, so the nodes write there."""
    import folder_paths

    saved_output = folder_paths.get_output_directory()
    saved_loras = folder_paths.folder_names_and_paths["loras"]
    folder_paths.set_output_directory(str(output_dir))
    folder_paths.folder_names_and_paths["loras"] = ([str(output_dir)] + list(saved_loras[0]), saved_loras[1])
    try:
        yield
    finally:
        folder_paths.set_output_directory(saved_output)
        folder_paths.folder_names_and_paths["loras"] = saved_loras


@contextlib.contextmanager
def _dataset_roots(run: KohyaRun):
    """The config's dataset folders are the user's own: declared as dataset roots for this run."""
    variable = "LORALAB_DATASET_ROOTS"
    saved = os.environ.get(variable)
    folders = [run.get(DATASET, name) for name in ("path", "regularization_path") if run.get(DATASET, name)]
    os.environ[variable] = os.pathsep.join(([saved] if saved else []) + [str(folder) for folder in folders])
    try:
        yield
    finally:
        if saved is None:
            del os.environ[variable]
        else:
            os.environ[variable] = saved


@contextlib.contextmanager
def _headless_server(printer: EventPrinter):
    """The nodes report to PromptServer.instance; in this process that is the printer."""
    import server

    saved = getattr(server.PromptServer, "instance", None)
    server.PromptServer.instance = printer
    try:
        yield
    finally:
        server.PromptServer.instance = saved


@contextlib.contextmanager
def _cancel_on_ctrl_c(launched: bool = False):
    """Ctrl-C asks ComfyUI to interrupt, as its Cancel button does: Train LoRA saves its state and stops. Under a
    launcher, its SIGTERM to each process (on Ctrl-C, or when another process failed) does the same."""
    import comfy.model_management as mm

    def interrupt(signum, frame) -> None:
        mm.interrupt_current_processing(True)

    numbers = [signal.SIGINT] + ([signal.SIGTERM] if launched else [])
    saved = {number: signal.signal(number, interrupt) for number in numbers}
    try:
        yield
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)
        mm.interrupt_current_processing(False)


def print_summary(trained: list[Trained], seconds: float, price: float | None, printer: EventPrinter) -> None:
    """Wall time, steps, samples/s and cost, per LoRA and for the whole command (model loads included)."""
    for item in trained:
        rate = item.samples / item.seconds if item.seconds else 0.0
        cost = f", cost {cost_text(price, item.seconds)}" if price is not None else ""
        printer.print(f"{item.name}: {format_duration(item.seconds)}, {item.steps} steps, {rate:.2f} samples/s{cost}")
    total = f"done: {len(trained)} LoRA{'s' if len(trained) != 1 else ''} in {format_duration(seconds)}"
    if price is not None and trained:
        total += (f", cost {cost_text(price, seconds)} at ${price:g}/h "
                  f"({cost_text(price, seconds / len(trained))} per LoRA, model loading included)")
    printer.print(total)
