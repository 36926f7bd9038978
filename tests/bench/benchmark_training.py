"""Training speed and memory: ComfyUI core's TrainLoraNode against LoRA Lab's Train LoRA, same model and data.

Both tools train the same random-weight model (built through ComfyUI's classes with the same seed), on the
same generated images, at the same rank, batch size, resolution and precision, each with its own default
target layers. Runs alternate between the tools, one process per run, so each peak is that tool's own.
Step time is the interval between the ends of consecutive optimizer steps, median after warm-up.

    eval "$(bash scripts/provision.sh | sed 's/^/export /')"
    $PYTHON tests/bench/benchmark_training.py --mode cpu [--model full|tiny --resolution 64 --steps 6 --rounds 2]
    $PYTHON tests/bench/benchmark_training.py --mode gpu   # SD1.5 512 px batch 1 and 4, SDXL 1024 px batch 1

"CPU s/step" is the process's CPU time per step (all threads): with --threads 1 it is what a step takes
on an idle core, which makes figures from a busy machine comparable. Peak memory columns: "peak RSS" is the child process's maximum resident set (model build included);
"RSS growth" is the peak during training above the RSS just before it (model already built); on GPU,
"peak CUDA" is torch.cuda.max_memory_allocated over the training.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchmark_run import RESULT_PREFIX, RunConfig  # noqa: E402  (after the path set-up above)

TOOL_NAMES = {"core": "ComfyUI TrainLoraNode", "ours": "LoRA Lab Train LoRA"}
MIB = 1024 * 1024


def cpu_configs(args: argparse.Namespace) -> list[RunConfig]:
    common = dict(model=args.model, device="cpu", resolution=args.resolution, batch_size=args.batch_size,
                  rank=args.rank or 8, steps=args.steps, warmup=args.warmup, precision="fp32")
    return [RunConfig(tool="", **common)]


def gpu_configs(args: argparse.Namespace) -> list[RunConfig]:
    """Full SD1.5 at 512 px (batch 1 and 4) and full SDXL at 1024 px (batch 1, rank 16), each tool's default precision."""
    common = dict(tool="", device="cuda", steps=args.steps, warmup=args.warmup, precision="default")
    return [
        RunConfig(model="full", resolution=512, batch_size=1, rank=args.rank or 8, **common),
        RunConfig(model="full", resolution=512, batch_size=4, rank=args.rank or 8, **common),
        RunConfig(model="sdxl", resolution=1024, batch_size=1, rank=args.rank or 16, **common),
    ]


def run_child(config: RunConfig, timeout: float | None, threads: int) -> dict[str, Any]:
    """One run in a fresh process; returns its result, or {"error": ...} with the end of its output."""
    command = [sys.executable, str(HERE / "benchmark_run.py"), json.dumps(dataclasses.asdict(config))]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    try:
        finished = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in finished.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    tail = (finished.stderr or finished.stdout).strip().splitlines()[-15:]
    return {"error": f"exit {finished.returncode}: " + "\n    ".join(tail)}


def summarise(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Pool the steady-state step times of every round: median over rounds, peaks as the maximum."""
    good = [result for result in results if "error" not in result]
    if not good:
        return None
    median = statistics.median(result["median_step_s"] for result in good)
    cpu_median = statistics.median(result["median_step_cpu_s"] for result in good)
    batch = good[0]["config"]["batch_size"]
    peak_cuda = [result["peak_cuda"] for result in good if result["peak_cuda"] is not None]
    return {
        "median_step_s": median, "median_step_cpu_s": cpu_median, "samples_per_s": batch / median,
        "peak_rss": max(result["peak_rss"] for result in good),
        "rss_growth": max(result["rss_growth"] for result in good),
        "peak_cuda": max(peak_cuda) if peak_cuda else None,
        "trainable_params": good[0]["trainable_params"],
        "steps_timed": sum(result["steps_timed"] for result in good), "runs": len(good),
        "forwards_per_step": good[0]["forwards_per_step"],
        "device_name": good[0]["device_name"],
    }


def format_table(config: RunConfig, summaries: dict[str, dict[str, Any] | None], errors: dict[str, list[str]]) -> str:
    cuda = config.device == "cuda"
    header = ["tool", "s/step (median)", "CPU s/step", "samples/s", "peak RSS MiB", "RSS growth MiB"] + (["peak CUDA MiB"] if cuda else []) \
        + ["trainable params", "UNet fwd/step", "steps timed"]
    rows = [header]

    def mib(value: float | None) -> str:
        return "-" if value is None else f"{value / MIB:,.0f}"

    for tool in ("core", "ours"):
        summary = summaries[tool]
        if summary is None:
            rows.append([TOOL_NAMES[tool], "failed"] + [""] * (len(header) - 2))
            continue
        rows.append([TOOL_NAMES[tool], f"{summary['median_step_s']:.3f}", f"{summary['median_step_cpu_s']:.3f}",
                     f"{summary['samples_per_s']:.3f}",
                     mib(summary["peak_rss"]), mib(summary["rss_growth"])] + ([mib(summary["peak_cuda"])] if cuda else [])
                    + [f"{summary['trainable_params']:,}", f"{summary['forwards_per_step']:.1f}",
                       f"{summary['steps_timed']} ({summary['runs']} runs)"])
    core, ours = summaries["core"], summaries["ours"]
    if core and ours:
        def ratio(key: str) -> str:
            return f"{ours[key] / core[key]:.2f}x" if core[key] and ours[key] is not None else "-"

        rows.append(["ratio ours/theirs", ratio("median_step_s"), ratio("median_step_cpu_s"), ratio("samples_per_s"), ratio("peak_rss"),
                     ratio("rss_growth")] + ([ratio("peak_cuda")] if cuda else []) + [ratio("trainable_params"), "", ""])
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = ["  ".join(cell.ljust(width) if column == 0 else cell.rjust(width) for column, (cell, width) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    title = (f"{config.model} model, {config.resolution} px, batch {config.batch_size}, rank {config.rank}, "
             f"{'fp32' if config.precision == 'fp32' else 'each tool default precision (bf16)'}, gradient checkpointing on, "
             f"UNet only, {config.device}" + (f" ({(core or ours)['device_name']})" if (core or ours) else ""))
    failures = [f"  {TOOL_NAMES[tool]} run failed: {message}" for tool, messages in errors.items() for message in messages]
    return "\n".join([title, *lines, *failures])


def comfyui_version() -> str:
    path = pathlib.Path(os.environ.get("COMFYUI_PATH", "")) / "comfyui_version.py"
    if not path.is_file():
        raise SystemExit("COMFYUI_PATH is not set to a ComfyUI tree. Run: "
                         "eval \"$(bash scripts/provision.sh | sed 's/^/export /')\" and use $PYTHON.")
    return path.read_text().split('__version__ = "')[1].split('"')[0]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--model", choices=["full", "tiny"], default="full", help="CPU mode: SD1.5 architecture, full or toy size")
    parser.add_argument("--resolution", type=int, default=64, help="CPU mode: image size in pixels")
    parser.add_argument("--batch-size", type=int, default=1, help="CPU mode")
    parser.add_argument("--rank", type=int, default=0, help="0 = 8 (SD1.5), 16 (SDXL)")
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=1, help="step intervals left out of the median")
    parser.add_argument("--rounds", type=int, default=2, help="alternating core/ours rounds")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per run")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads per run (OMP_NUM_THREADS); 0 = torch's default. On a shared, oversubscribed "
                             "machine 1 avoids thread-barrier stalls that can slow both tools 100-fold")
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    version = comfyui_version()
    configs = cpu_configs(args) if args.mode == "cpu" else gpu_configs(args)
    threads = args.threads or "torch default"
    print(f"ComfyUI {version}, Python {platform.python_version()}, {os.cpu_count()} CPUs, threads per run: {threads}, "
          f"load average at start {' '.join(f'{value:.2f}' for value in os.getloadavg())}", flush=True)
    for config in configs:
        results: dict[str, list[dict[str, Any]]] = {"core": [], "ours": []}
        for _ in range(args.rounds):
            for tool in ("core", "ours"):
                results[tool].append(run_child(dataclasses.replace(config, tool=tool), args.timeout, args.threads))
        summaries = {tool: summarise(runs) for tool, runs in results.items()}
        errors = {tool: [run["error"] for run in runs if "error" in run] for tool, runs in results.items()}
        print("\n" + format_table(config, summaries, errors), flush=True)
    print(f"\nload average at end {' '.join(f'{value:.2f}' for value in os.getloadavg())}")


if __name__ == "__main__":
    main(sys.argv[1:])
