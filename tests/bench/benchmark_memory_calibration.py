"""Calibrate trainer/training/memory.py's activation constants: measured peak memory growth of real training steps.

For each model (the tiny and the full SD1.5 UNet), with gradient checkpointing on and off, and at several
resolutions, one process trains two steps (batch 1, fp32, rank 8) with LoRA Lab's trainer and records the
peak RSS growth from the first diffusion-model forward to the end (Linux VmHWM, reset at that forward). The
model is built before that point, so the growth is activations, gradients, optimizer state and workspace.

For each checkpointing mode, one least-squares fit over both models and all resolutions separates three
parts: a constant (workspace), a part linear in latent area (per value `memory.activation_profile` counts
in the layers) and a part quadratic in it (per self-attention score value: ComfyUI's CPU attention
materialises the scores). The tiny UNet, whose attention runs at full latent resolution, pins the quadratic
part; the full UNet at small sizes pins the linear one. The fitted multipliers are CALIBRATION's in
trainer/training/memory.py (rounded up); the script also prints each measurement against the current estimate.

    $PYTHON tests/bench/benchmark_memory_calibration.py [--models tiny full] [--tiny-resolutions ...]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import tempfile
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

RESULT_PREFIX = "CALIBRATION_RESULT "
MIB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Point:
    model: str
    checkpointing: bool
    resolution: int


def status_kib(field: str) -> int:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure(point: Point) -> dict[str, Any]:
    """Child process: train two steps and return the peak growth with the model's value counts."""
    import functools

    import benchmark_models
    from harness import runtime, training_data

    runtime.boot()
    import folder_paths
    import torch

    memory = runtime.pack("trainer.training.memory")
    families = runtime.pack("trainer.models.families")
    session = runtime.pack("trainer.training.session")
    loop = runtime.pack("trainer.training.loop")
    TrainingSettings = runtime.pack("trainer.training.settings").TrainingSettings
    from harness.observers import SilentObserver

    bundle = benchmark_models.build(point.model)
    diffusion_model = bundle.model.model.diffusion_model
    profile = memory.activation_profile(diffusion_model, session.checkpoint_blocks(diffusion_model))
    baseline: list[int] = []
    model_class = type(diffusion_model)
    original = model_class.forward

    @functools.wraps(original)
    def forward(module, *args, **kwargs):
        if not baseline:
            pathlib.Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
            baseline.append(status_kib("VmRSS") * 1024)
        return original(module, *args, **kwargs)

    model_class.forward = forward
    settings = TrainingSettings(rank=8, epochs=1, batch_size=1, resolution=point.resolution, mixed_precision="fp32",
                                gradient_checkpointing=point.checkpointing, seed=1)
    with tempfile.TemporaryDirectory(prefix="loralab-calibration-") as tmp:
        folder_paths.set_output_directory(str(pathlib.Path(tmp) / "output"))
        dataset = training_data.captioned_shapes(pathlib.Path(tmp) / "data", count=2, size=point.resolution)
        with torch.inference_mode(False):
            lora = loop.train_lora(bundle.model, bundle.clip, bundle.vae, dataset, settings, SilentObserver(),
                                   pathlib.Path(tmp) / "state").lora
    model_class.forward = original
    adapters = sum(t.numel() for name, t in lora.weights().items() if not name.endswith(".alpha"))
    return {"point": dataclasses.asdict(point), "growth": status_kib("VmHWM") * 1024 - baseline[0],
            "profile": dataclasses.asdict(profile), "adapter_parameters": adapters,
            "pixels": (point.resolution // families.SD15.latent_scale) ** 2}


def run_point(point: Point, threads: int) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    finished = subprocess.run([sys.executable, __file__, "--child", json.dumps(dataclasses.asdict(point))],
                              capture_output=True, text=True, env=env)
    for line in finished.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise RuntimeError(f"calibration run {point} failed:\n{finished.stderr[-3000:]}")


def design_row(result: dict[str, Any]) -> tuple[list[float], float]:
    """One measurement as a least-squares row: [linear values, score values, 1] (bytes, fp32) and the growth
    left after what is known exactly (adapters with gradients and AdamW state; block outputs kept once)."""
    profile, pixels = result["profile"], result["pixels"]
    if result["point"]["checkpointing"]:
        values, scores, known = profile["largest_block"], profile["largest_block_scores"], 4 * pixels * profile["block_outputs"]
    else:
        values, scores, known = profile["all_layers"], profile["all_scores"], 0.0
    known += result["adapter_parameters"] * 16
    return [4 * values * pixels, 4 * scores * pixels**2, 1.0], result["growth"] - known


def fit(results: list[dict[str, Any]]) -> tuple[float, float, float]:
    """(multiplier per layer value, multiplier per score value, constant bytes) by least squares."""
    import numpy

    rows, targets = zip(*(design_row(result) for result in results))
    (values, scores, constant), *_ = numpy.linalg.lstsq(numpy.array(rows), numpy.array(targets), rcond=None)
    return float(values), float(scores), float(constant)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child")
    parser.add_argument("--models", nargs="+", default=["tiny", "full"])
    parser.add_argument("--tiny-resolutions", nargs="+", type=int, default=[128, 256, 384, 512])
    parser.add_argument("--full-resolutions", nargs="+", type=int, default=[64, 128, 192, 256])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    args.resolutions = {"tiny": args.tiny_resolutions, "full": args.full_resolutions}
    if args.child:
        print(RESULT_PREFIX + json.dumps(measure(Point(**json.loads(args.child)))), flush=True)
        return
    from harness import runtime

    runtime.boot()
    memory = runtime.pack("trainer.training.memory")
    print(f"load average {os.getloadavg()}")
    for checkpointing in (True, False):
        results = [run_point(Point(model, checkpointing, resolution), args.threads)
                   for model in args.models for resolution in args.resolutions[model]]
        values, scores, constant = fit(results)
        print(f"\ngradient checkpointing {'on' if checkpointing else 'off'}: fitted multipliers {values:.2f} per layer value, "
              f"{scores:.2f} per score value, constant {constant / MIB:.0f} MiB")
        for result in results:
            profile = memory.ActivationProfile(**result["profile"])
            work = memory.Workload(weight_bytes=0, weight_count=0, weights_cast=False,
                                   adapter_parameters=result["adapter_parameters"], optimizer="AdamW",
                                   batches=((1, result["pixels"]),), gradient_checkpointing=checkpointing,
                                   compute_bytes=4, scores_materialised=True)
            predicted = memory.estimate_peak(profile, work).total
            print(f"  {result['point']['model']:>4} {result['point']['resolution']:>4} px: measured growth "
                  f"{result['growth'] / MIB:8.1f} MiB, estimate with CALIBRATION {predicted / MIB:8.1f} MiB "
                  f"({predicted / result['growth']:.2f}x)")


if __name__ == "__main__":
    main(sys.argv[1:])
