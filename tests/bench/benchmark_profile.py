"""Where a training step's time goes: one benchmark run under torch.profiler, top operators by self time.

    $PYTHON tests/bench/benchmark_profile.py --tool ours --model full --steps 4 [--threads 1] [--device cpu]

Profiles the steps after the first (warm-up) one: from the end of the first optimizer step to the end of
the last. Prints torch.profiler's table sorted by self CPU time (self CUDA time on a GPU).
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import benchmark_run  # noqa: E402  (after the path set-up above)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tool", choices=["core", "ours"], default="ours")
    parser.add_argument("--model", choices=sorted(["tiny", "full", "sdxl"]), default="full")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads; 0 = default")
    parser.add_argument("--rows", type=int, default=30)
    args = parser.parse_args(argv)
    config = benchmark_run.RunConfig(tool=args.tool, model=args.model, device=args.device, resolution=args.resolution,
                                     batch_size=args.batch_size, rank=args.rank, steps=args.steps, warmup=1,
                                     precision="fp32" if args.device == "cpu" else "default")
    from harness import runtime, training_data

    runtime.boot(cpu=args.device == "cpu")
    import benchmark_models
    import folder_paths
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    bundle = benchmark_models.build(args.model)
    window = benchmark_run.ProfileWindow(after=1, steps=args.steps - 1, cuda=args.device == "cuda")
    with tempfile.TemporaryDirectory(prefix="loralab-profile-") as tmp:
        folder_paths.set_output_directory(str(pathlib.Path(tmp) / "output"))
        count, repeats = benchmark_run.images_for(config)
        dataset = training_data.captioned_shapes(pathlib.Path(tmp) / "data", count=count, size=args.resolution, repeats=repeats)
        benchmark_run.TOOLS[args.tool](bundle, dataset, config)
    window.stop()
    print(f"{args.steps - 1 if window.profiled else 0} steps profiled")
    print(window.table(args.rows))


if __name__ == "__main__":
    main(sys.argv[1:])
