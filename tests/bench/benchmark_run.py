"""One benchmark run in its own process: build the model, train with one tool, print timings and peak memory.

Run by benchmark_training.py as `python benchmark_run.py '<json RunConfig>'`; prints one line
`BENCH_RESULT {...}`. A process per run keeps each tool's peak memory its own. The GPU check kit
(tests/gpu) calls `measure_run` in-process on models it loaded, after releasing the previous run's memory.
"""
from __future__ import annotations

import functools
import json
import pathlib
import resource
import statistics
import sys
import tempfile
import threading
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
    precision: str  # "fp32", "bf16", "fp16" (LoRA Lab only), or "default" for each tool's own default (bf16 for both)
    optimizer: str = "AdamW"
    learning_rate: float = 0.0  # 0 = each tool's default
    text_encoder_lr: float = 0.0  # LoRA Lab only; core's node trains the diffusion model only
    profile_steps: int = 0  # the last steps run under torch.profiler, left out of the step times


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


class DeviceMemorySampler:
    """Peak GPU memory in use on the whole device (NVML), sampled every few milliseconds by a thread.

    torch.cuda.max_memory_allocated counts torch's allocator only; weights that current ComfyUI's dynamic
    VRAM keeps in its own (comfy-aimdo) buffers, the CUDA context and cuBLAS/cuDNN workspaces are not in it.
    NVML sees them all. Where NVML is missing or refuses (some sandboxes), the figures are None and
    `unavailable` says why.
    """

    def __init__(self, device_index: int = 0, interval: float = 0.003) -> None:
        self.interval = interval
        self.peak = self.baseline = 0
        self.unavailable: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
            self._read: Callable[[], int] = lambda: pynvml.nvmlDeviceGetMemoryInfo(handle).used
            self._read()
        except Exception as error:  # noqa: BLE001  (recorded with the figures, which stay missing, not guessed)
            self.unavailable = f"NVML: {type(error).__name__}: {error}"

    def start(self) -> None:
        if self.unavailable:
            return
        self.baseline = self.peak = self._read()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._read())

    def stop(self) -> dict[str, int | str | None]:
        if self._thread is None:
            return {"device_used_before": None, "device_peak_used": None, "device_memory_unavailable": self.unavailable}
        self._stop.set()
        self._thread.join()
        self._thread = None
        return {"device_used_before": self.baseline, "device_peak_used": max(self.peak, self._read()),
                "device_memory_unavailable": None}


class PeakMemory:
    """Peak process RSS since `reset` (Linux VmHWM, reset through /proc/self/clear_refs), and on CUDA the
    peak of torch's allocated memory and of the whole device's used memory."""

    def __init__(self, device: str) -> None:
        import torch

        self.torch = torch
        self.cuda = device == "cuda"
        self.baseline_rss = 0
        self.device_memory = DeviceMemorySampler() if self.cuda else None

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
            self.device_memory.start()

    def read(self) -> dict[str, int | None]:
        peak_since_reset = self._status_kib("VmHWM") * 1024
        device = self.device_memory.stop() if self.cuda else {"device_used_before": None, "device_peak_used": None,
                                                              "device_memory_unavailable": "CPU run"}
        return {
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # whole process, model build included
            "rss_growth": peak_since_reset - self.baseline_rss,  # during training only
            "peak_cuda": self.torch.cuda.max_memory_allocated() if self.cuda else None,
            **device,
        }


class ProfileWindow:
    """torch.profiler over a window of optimizer steps: from the end of step `after` to the end of step
    `after + steps` (torch's global optimizer hook, so it works for both tools).

    `busy()` is the time the GPU spent in kernels and copies (the union of their intervals, so work on
    several streams is not counted twice) against the window's wall time. With `cpu_ops` off on a GPU only
    device activity is recorded, which keeps a large model's trace quick to read back.
    """

    def __init__(self, after: int, steps: int, cuda: bool, cpu_ops: bool = True) -> None:
        import torch
        from torch.optim.optimizer import register_optimizer_step_post_hook

        activities = ([torch.profiler.ProfilerActivity.CPU] if cpu_ops or not cuda else []) + \
            ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
        self.profiler = torch.profiler.profile(activities=activities)
        self.synchronize = torch.cuda.synchronize if cuda else (lambda: None)
        self.cuda = cuda
        self.steps_seen = 0
        self.window: list[float] = []
        first, last = after, after + steps

        def on_step(_optimizer: Any, _args: Any, _kwargs: Any) -> None:
            self.steps_seen += 1
            if self.steps_seen in (first, last):
                self.synchronize()
                self.window.append(time.perf_counter())
                (self.profiler.start if self.steps_seen == first else self.profiler.stop)()

        self.handle = register_optimizer_step_post_hook(on_step)

    def stop(self) -> None:
        self.handle.remove()
        if len(self.window) == 1:  # the run ended inside the window
            self.synchronize()
            self.window.append(time.perf_counter())
            self.profiler.stop()

    @property
    def profiled(self) -> bool:
        return len(self.window) == 2

    def busy(self) -> dict[str, Any] | None:
        """GPU busy time over wall time in the window, with the kernels that took longest; None on CPU."""
        if not (self.cuda and self.profiled):
            return None
        from torch.autograd import DeviceType

        device_events = [event for event in self.profiler.events() if event.device_type == DeviceType.CUDA]
        busy_us = union_length([(event.time_range.start, event.time_range.end) for event in device_events])
        totals: dict[str, float] = {}
        for event in device_events:
            totals[event.name] = totals.get(event.name, 0.0) + event.time_range.elapsed_us()  # microseconds
        wall = self.window[1] - self.window[0]
        return {"wall_s": wall, "busy_s": busy_us / 1e6, "busy_fraction": busy_us / 1e6 / wall if wall > 0 else None,
                "device_events": len(device_events),
                "top": [[name[:80], total / 1e6] for name, total in sorted(totals.items(), key=lambda item: -item[1])[:5]]}

    def table(self, rows: int) -> str:
        sort = "self_cuda_time_total" if self.cuda else "self_cpu_time_total"
        return self.profiler.key_averages().table(sort_by=sort, row_limit=rows)


def union_length(intervals: list[tuple[float, float]]) -> float:
    """Total length covered by possibly overlapping intervals."""
    total, current_start, current_end = 0.0, None, None
    for start, end in sorted(intervals):
        if current_end is None or start > current_end:
            if current_end is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    return total + (current_end - current_start if current_end is not None else 0.0)


def training_pixels(image_path: pathlib.Path):
    """The image exactly as LoRA Lab's loader reads it, as a ComfyUI IMAGE for core's VAEEncode."""
    from harness import runtime

    images = runtime.pack("trainer.data.images")
    data = runtime.pack("trainer.training.batches")
    return data.to_pixels(images.open_training_image(image_path))


@dataclass
class ToolRun:
    trainable_params: int
    outputs: tuple  # the node's outputs: LoRA Lab (model, clip, lora, summary, chart); core its own


def run_core(bundle, dataset, config: RunConfig) -> ToolRun:
    """ComfyUI's TrainLoraNode fed as a graph feeds it: a LIST of single-image LATENTs (a single batched
    LATENT crashes 0.3.75) and one CONDITIONING per image from CLIPTextEncode."""
    import torch
    from comfy_extras.nodes_train import TrainLoraNode
    from harness import runtime

    if config.precision == "fp16" or config.optimizer != "AdamW":
        raise ValueError(f"core's TrainLoraNode has no {config.precision} training / {config.optimizer}: compare in bf16 or fp32 with AdamW")
    latents = [runtime.run_node("VAEEncode", pixels=training_pixels(image.path), vae=bundle.vae)[0] for image in dataset.images]
    positive = [runtime.run_node("CLIPTextEncode", clip=bundle.clip, text=image.caption)[0] for image in dataset.images]
    inputs = {item.id: item.default for item in TrainLoraNode.define_schema().inputs if getattr(item, "default", None) is not None}
    inputs.update(batch_size=config.batch_size, steps=config.steps, rank=config.rank, seed=SEED_TRAINING,
                  gradient_checkpointing=True)
    if config.learning_rate:
        inputs.update(learning_rate=config.learning_rate)
    if config.precision == "fp32":
        inputs.update(training_dtype="fp32", lora_dtype="fp32")
    listed = {name: [value] for name, value in inputs.items()}  # is_input_list: every input is a list
    listed.update(model=[bundle.model], latents=latents, positive=positive)
    with torch.inference_mode():  # as ComfyUI's executor runs nodes
        output = TrainLoraNode.execute(**listed)
    lora = next(value for value in output.args if isinstance(value, dict))  # 0.3.75: (model, lora, ...); 0.33: (lora, ...)
    return ToolRun(sum(tensor.numel() for tensor in lora.values()), tuple(output.args))


def run_ours(bundle, dataset, config: RunConfig) -> ToolRun:
    from harness import runtime

    required = runtime.boot().NODE_CLASS_MAPPINGS["LoraLabTrainLoRA"].INPUT_TYPES()["required"]
    inputs = {name: spec[1]["default"] for name, spec in required.items() if len(spec) > 1 and "default" in spec[1]}
    inputs.update(model=bundle.model, clip=bundle.clip, vae=bundle.vae, dataset=dataset, rank=config.rank,
                  resolution=config.resolution, batch_size=config.batch_size, epochs=1, gradient_checkpointing=True,
                  seed=SEED_TRAINING, optimizer=config.optimizer, text_encoder_lr=config.text_encoder_lr,
                  keep_training_state=True)  # the GPU kit's LoraLoader check reads the exact adapter back from it
    if config.learning_rate:
        inputs.update(unet_lr=config.learning_rate)
    if config.precision != "default":
        inputs.update(mixed_precision=config.precision)
    outputs = runtime.run_node("LoraLabTrainLoRA", **inputs)
    lora = outputs[2]
    return ToolRun(sum(tensor.numel() for name, tensor in lora.weights().items() if not name.endswith(".alpha")), tuple(outputs))


TOOLS = {"core": run_core, "ours": run_ours}


def images_for(config: RunConfig) -> tuple[int, int]:
    """(images, repeats) so that LoRA Lab's one epoch has at least `steps` steps at `batch_size`.

    At least two images: with one, core's node receives a single LATENT and crashes (pitfall 3).
    """
    count = max(2, config.batch_size)
    repeats = -(-config.steps * config.batch_size // count)
    return count, repeats


def steady_state(durations: list[float], warmup: int, end: int | None = None) -> list[float]:
    """Step durations after the warm-up, up to index `end` (the profiled steps come after it)."""
    if not durations:
        raise RuntimeError("fewer than two optimizer steps ran: no step was timed")
    return durations[warmup:end] or durations


def measure_run(bundle, dataset, config: RunConfig) -> tuple[dict[str, Any], ToolRun, ProfileWindow | None]:
    """Train with `config.tool` on a model already built, and measure step times, peaks and (optionally) the
    GPU's busy time over the last `profile_steps` steps."""
    import comfy.model_management as mm
    import torch

    cuda = config.device == "cuda"
    memory = PeakMemory(config.device)
    clock = StepClock(type(bundle.model.model.diffusion_model), torch.cuda.synchronize if cuda else None)
    window = (ProfileWindow(config.steps - config.profile_steps, config.profile_steps, cuda, cpu_ops=not cuda)
              if config.profile_steps else None)
    memory.reset()
    started = time.perf_counter()
    try:
        run = TOOLS[config.tool](bundle, dataset, config)
    finally:
        wall = time.perf_counter() - started
        clock.stop()
        if window is not None:
            window.stop()
        peaks = memory.read()
    # durations[i] is step i + 2; the profiled window starts after step `steps - profile_steps`.
    end = config.steps - config.profile_steps - 1 if config.profile_steps else None
    wall_steps, cpu_steps = (steady_state(clock.step_seconds(which), config.warmup, end) for which in (0, 1))
    median = statistics.median(wall_steps)
    result = {
        "config": asdict(config), "steps_run": len(clock.stamps), "steps_timed": len(wall_steps),
        "forwards_per_step": clock.forwards / len(clock.stamps),
        "median_step_s": median, "median_step_cpu_s": statistics.median(cpu_steps),
        "samples_per_s": config.batch_size / median, "wall_s": wall,
        "trainable_params": run.trainable_params, **peaks, "device_name": mm.get_torch_device_name(mm.get_torch_device()),
    }
    return result, run, window


def measure(config: RunConfig) -> dict[str, Any]:
    import benchmark_models
    from harness import runtime, training_data

    runtime.boot(cpu=config.device == "cpu")
    import folder_paths

    bundle = benchmark_models.build(config.model)
    with tempfile.TemporaryDirectory(prefix="loralab-bench-") as tmp:
        folder_paths.set_output_directory(str(pathlib.Path(tmp) / "output"))
        count, repeats = images_for(config)
        dataset = training_data.captioned_shapes(pathlib.Path(tmp) / "data", count=count, size=config.resolution, repeats=repeats)
        return measure_run(bundle, dataset, config)[0]


def main(argv: list[str]) -> None:
    config = RunConfig(**json.loads(argv[1]))
    print(RESULT_PREFIX + json.dumps(measure(config)), flush=True)


if __name__ == "__main__":
    main(sys.argv)
