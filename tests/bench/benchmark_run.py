"""One benchmark run in its own process: build the model, train with one tool, print timings and peak memory.

Run by benchmark_training.py as `python benchmark_run.py '<json RunConfig>'`; prints one line
`BENCH_RESULT {...}`. A process per run keeps each tool's peak memory its own.
"""
from __future__ import annotations

import functools
import json
import pathlib
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

TESTS = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

RESULT_PREFIX = "BENCH_RESULT "
SEED_TRAINING = 1  # both tools' own seed input (adapter init, noise)


@dataclass(frozen=True)
class RunConfig:
    tool: str  # "core" (ComfyUI's TrainLoraNode) or "ours" (LoraLabTrainLoRA)
    model: str  # a key of benchmark_models.BUILDERS
    device: str  # "cpu" or "cuda"
    resolution: int
    batch_size: int
    rank: int
    steps: int
    warmup: int  # step intervals left out of the median
    precision: str  # "fp32", or "default" for each tool's own default (bf16 for both)


class StepClock:
    """Timestamps at the end of every optimizer step (torch's global step hook: both tools use torch
    optimizers), and a count of diffusion-model forwards.

    Records wall time and this process's CPU time: on a shared machine the CPU seconds per step (with one
    thread) are what the step would take on an idle core, whatever the load. Forwards are counted on the
    diffusion model's class, so the private copy ComfyUI 0.33's core node builds is counted too; a
    checkpointed whole model runs forward twice per step.
    """

    def __init__(self, model_class: type, synchronize: Callable[[], None] | None) -> None:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self.stamps: list[tuple[float, float]] = []
        self.forwards = 0
        self.model_class = model_class
        self.original_forward = model_class.forward
        stamps, original, clock = self.stamps, self.original_forward, self

        def stamp(_optimizer: Any, _args: Any, _kwargs: Any) -> None:
            if synchronize is not None:
                synchronize()
            stamps.append((time.perf_counter(), time.process_time()))

        @functools.wraps(original)
        def forward(module: Any, *args: Any, **kwargs: Any) -> Any:
            clock.forwards += 1
            return original(module, *args, **kwargs)

        self.handle = register_optimizer_step_post_hook(stamp)
        model_class.forward = forward

    def stop(self) -> None:
        self.handle.remove()
        self.model_class.forward = self.original_forward

    def step_seconds(self, clock: int) -> list[float]:
        """Per-step durations on one clock: 0 wall, 1 process CPU time."""
        return [later[clock] - earlier[clock] for earlier, later in zip(self.stamps, self.stamps[1:])]


class PeakMemory:
    """Peak process RSS since `reset` (Linux VmHWM, reset through /proc/self/clear_refs), and on CUDA the
    peak of torch's allocated memory."""

    def __init__(self, device: str) -> None:
        import torch

        self.torch = torch
        self.cuda = device == "cuda"
        self.baseline_rss = 0

    @staticmethod
    def _status_kib(field: str) -> int:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise RuntimeError(f"/proc/self/status has no {field}")

    def reset(self) -> None:
        pathlib.Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak RSS to the current RSS
        self.baseline_rss = self._status_kib("VmRSS") * 1024
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()

    def read(self) -> dict[str, int | None]:
        peak_since_reset = self._status_kib("VmHWM") * 1024
        return {
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # whole process, model build included
            "rss_growth": peak_since_reset - self.baseline_rss,  # during training only
            "peak_cuda": self.torch.cuda.max_memory_allocated() if self.cuda else None,
        }


def training_pixels(image_path: pathlib.Path):
    """The image exactly as LoRA Lab's loader reads it, as a ComfyUI IMAGE for core's VAEEncode."""
    from harness import runtime

    images = runtime.pack("trainer.images")
    data = runtime.pack("trainer.data")
    return data.to_pixels(images.open_training_image(image_path))


def run_core(bundle, dataset, config: RunConfig) -> int:
    """ComfyUI's TrainLoraNode fed as a graph feeds it: a LIST of single-image LATENTs (a single batched
    LATENT crashes 0.3.75) and one CONDITIONING per image from CLIPTextEncode. Returns trainable parameters."""
    import torch
    from comfy_extras.nodes_train import TrainLoraNode
    from harness import runtime

    latents = [runtime.run_node("VAEEncode", pixels=training_pixels(image.path), vae=bundle.vae)[0] for image in dataset.images]
    positive = [runtime.run_node("CLIPTextEncode", clip=bundle.clip, text=image.caption)[0] for image in dataset.images]
    inputs = {item.id: item.default for item in TrainLoraNode.define_schema().inputs if getattr(item, "default", None) is not None}
    inputs.update(batch_size=config.batch_size, steps=config.steps, rank=config.rank, seed=SEED_TRAINING,
                  gradient_checkpointing=True)
    if config.precision == "fp32":
        inputs.update(training_dtype="fp32", lora_dtype="fp32")
    listed = {name: [value] for name, value in inputs.items()}  # is_input_list: every input is a list
    listed.update(model=[bundle.model], latents=latents, positive=positive)
    with torch.inference_mode():  # as ComfyUI's executor runs nodes
        output = TrainLoraNode.execute(**listed)
    lora = next(value for value in output.args if isinstance(value, dict))  # 0.3.75: (model, lora, ...); 0.33: (lora, ...)
    return sum(tensor.numel() for tensor in lora.values())


def run_ours(bundle, dataset, config: RunConfig) -> int:
    from harness import runtime

    required = runtime.boot().NODE_CLASS_MAPPINGS["LoraLabTrainLoRA"].INPUT_TYPES()["required"]
    inputs = {name: spec[1]["default"] for name, spec in required.items() if len(spec) > 1 and "default" in spec[1]}
    inputs.update(model=bundle.model, clip=bundle.clip, vae=bundle.vae, dataset=dataset, rank=config.rank,
                  resolution=config.resolution, batch_size=config.batch_size, epochs=1, gradient_checkpointing=True,
                  seed=SEED_TRAINING)
    if config.precision == "fp32":
        inputs.update(mixed_precision="fp32")
    lora = runtime.run_node("LoraLabTrainLoRA", **inputs)[2]
    return sum(tensor.numel() for name, tensor in lora.weights().items() if not name.endswith(".alpha"))


TOOLS = {"core": run_core, "ours": run_ours}


def images_for(config: RunConfig) -> tuple[int, int]:
    """(images, repeats) so that LoRA Lab's one epoch has at least `steps` steps at `batch_size`.

    At least two images: with one, core's node receives a single LATENT and crashes (pitfall 3).
    """
    count = max(2, config.batch_size)
    repeats = -(-config.steps * config.batch_size // count)
    return count, repeats


def steady_state(durations: list[float], warmup: int) -> list[float]:
    if not durations:
        raise RuntimeError("fewer than two optimizer steps ran: no step was timed")
    return durations[warmup:] or durations


def measure(config: RunConfig) -> dict[str, Any]:
    import benchmark_models
    from harness import runtime, training_data

    runtime.boot(cpu=config.device == "cpu")
    import comfy.model_management as mm
    import folder_paths
    import torch

    bundle = benchmark_models.build(config.model)
    with tempfile.TemporaryDirectory(prefix="loralab-bench-") as tmp:
        folder_paths.set_output_directory(str(pathlib.Path(tmp) / "output"))
        count, repeats = images_for(config)
        dataset = training_data.captioned_shapes(pathlib.Path(tmp) / "data", count=count, size=config.resolution, repeats=repeats)
        memory = PeakMemory(config.device)
        clock = StepClock(type(bundle.model.model.diffusion_model), torch.cuda.synchronize if config.device == "cuda" else None)
        memory.reset()
        started = time.perf_counter()
        trainable = TOOLS[config.tool](bundle, dataset, config)
        wall = time.perf_counter() - started
        clock.stop()
        peaks = memory.read()
    wall_steps, cpu_steps = (steady_state(clock.step_seconds(which), config.warmup) for which in (0, 1))
    median = statistics.median(wall_steps)
    return {
        "config": asdict(config), "steps_run": len(clock.stamps), "steps_timed": len(wall_steps),
        "forwards_per_step": clock.forwards / len(clock.stamps),
        "median_step_s": median, "median_step_cpu_s": statistics.median(cpu_steps),
        "samples_per_s": config.batch_size / median, "wall_s": wall,
        "trainable_params": trainable, **peaks, "device_name": mm.get_torch_device_name(mm.get_torch_device()),
    }


def main(argv: list[str]) -> None:
    config = RunConfig(**json.loads(argv[1]))
    print(RESULT_PREFIX + json.dumps(measure(config)), flush=True)


if __name__ == "__main__":
    main(sys.argv)
