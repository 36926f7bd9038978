"""One section of the GPU check kit in its own process, run by kit.py with a time limit:

    python tests/gpu/section.py '<json: kind, results, deadline, smoke, work, family>'

kinds: "machine" (the machine and its packages), "fixtures" (writes the model files), "cases" (one family's
cases on the ComfyUI tree in COMFYUI_PATH). Each result is appended to the JSON-lines file as soon as it
exists, so a section stopped at its limit still reports what it finished; a failing case is recorded with
its traceback and the next case runs.
"""
from __future__ import annotations

import dataclasses
import gc
import json
import os
import pathlib
import sys
import time
import traceback
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parent / "bench")]

import cases as case_table  # noqa: E402  (after the path set-up above; imports no torch: ComfyUI must start first)
import environment  # noqa: E402

MIN_CASE_SECONDS = {True: 2.0, False: 20.0}  # by smoke: time a case needs at least to be worth starting


class Results:
    """Appends one JSON object per line, flushed to disk at once."""

    def __init__(self, path: str) -> None:
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(record, default=str) + "\n")
            stream.flush()
            os.fsync(stream.fileno())


def failure(error: BaseException) -> dict[str, str]:
    return {"detail": f"{type(error).__name__}: {error}"[:2000], "traceback": "\n".join(traceback.format_exc().strip().splitlines()[-25:])}


class LoadedAtFirstStep:
    """The models ComfyUI holds on the device at the end of the first optimizer step (was the VAE unloaded?)."""

    def __init__(self) -> None:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self.models: list[dict[str, Any]] | None = None
        self.handle = register_optimizer_step_post_hook(self._record)

    def _record(self, _optimizer: Any, _args: Any, _kwargs: Any) -> None:
        import comfy.model_management as mm

        if self.models is None:
            self.models = [{"model": type(loaded.model.model).__name__, "patcher": type(loaded.model).__name__,
                            "loaded_bytes": loaded.model_loaded_memory() if hasattr(loaded, "model_loaded_memory") else None}
                           for loaded in mm.current_loaded_models if loaded.model is not None]

    def stop(self) -> list[dict[str, Any]] | None:
        self.handle.remove()
        return self.models


def release_memory() -> None:
    """Unload everything and free the allocator's cache, so the next run's peak is its own."""
    import comfy.model_management as mm
    import torch

    mm.unload_all_models()
    gc.collect()
    mm.soft_empty_cache()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def use_folders(work: pathlib.Path) -> None:
    """ComfyUI's input/output/temp/loras folders inside this run's work folder (as the tests' comfy_dirs)."""
    import folder_paths

    folders = {name: work / name for name in ("input", "output", "temp", "loras")}
    for path in folders.values():
        path.mkdir(parents=True, exist_ok=True)
    folder_paths.set_input_directory(str(folders["input"]))
    folder_paths.set_output_directory(str(folders["output"]))
    folder_paths.set_temp_directory(str(folders["temp"]))
    folder_paths.folder_names_and_paths["loras"] = ([str(folders["loras"])], folder_paths.supported_pt_extensions)


def run_config(case: case_table.Case, steps: case_table.Steps, device: str, tool: str = "ours"):
    from benchmark_run import RunConfig

    return RunConfig(tool=tool, model=case.family, device=device, resolution=case.resolution, batch_size=case.batch_size,
                     rank=case.rank, steps=steps.total(case.compare), warmup=steps.warmup, precision=case.mixed_precision,
                     optimizer=case.optimizer, learning_rate=case_table.LEARNING_RATE,
                     text_encoder_lr=case_table.LEARNING_RATE if case.text_encoder and tool == "ours" else 0.0,
                     profile_steps=steps.profiled if case.compare else 0)


def measured(result: dict[str, Any], window: Any) -> dict[str, Any]:
    return {**result, "busy": window.busy() if window is not None else None,
            "profiled": window.profiled if window is not None else False}


def run_case(case: case_table.Case, bundle: Any, before: dict, reference_bundle: Any | None, work: pathlib.Path,
             steps: case_table.Steps, device: str) -> dict[str, Any]:
    import checks
    from benchmark_run import images_for, measure_run
    from harness import training_data

    config = run_config(case, steps, device)
    count, repeats = images_for(config)
    dataset = training_data.captioned_shapes(work / "datasets" / f"{case.resolution}-{count}x{repeats}", count=count,
                                             size=case.resolution, repeats=repeats)
    record: dict[str, Any] = {}
    loaded = LoadedAtFirstStep()
    try:
        result, run, window = measure_run(bundle, dataset, config)
    finally:
        loaded_models = loaded.stop()
    lora = run.outputs[2]
    record["ours"] = {**measured(result, window), "memory_estimate": lora.memory_estimate, "loaded_at_first_step": loaded_models}
    del run
    release_memory()
    record["checks"] = checks.run_all(bundle, lora, config.steps, case.text_encoder, before, reference_bundle)
    release_memory()
    if case.compare:
        try:
            core_result, core_run, core_window = measure_run(bundle, dataset, run_config(case, steps, device, tool="core"))
            record["core"] = measured(core_result, core_window)
            del core_run
        except Exception as error:  # noqa: BLE001  (recorded; our own figures stand)
            record["core"] = {"error": failure(error)}
        release_memory()
    return record


def run_cases(spec: dict[str, Any], results: Results) -> None:
    from harness import runtime

    runtime.boot(cpu=spec["smoke"])
    import comfy.model_management as mm

    smoke, family = spec["smoke"], spec["family"]
    device = mm.get_torch_device().type
    work = pathlib.Path(spec["work"])
    use_folders(work / "comfy")
    tree = environment.comfyui_tree()
    results.write({"kind": "tree", "family": family, **tree})
    steps = case_table.SMOKE_STEPS if smoke else case_table.GPU_STEPS
    selected = [case_table.for_smoke(case) if smoke else case for case in case_table.CASES if case.family == family]
    bundles: dict[str, tuple[Any, dict] | str] = {}  # by weight_dtype: (bundle, snapshot), or why it failed to load
    for case in selected:
        base = {"kind": "case", "tree": tree["version"], "case": case.name, "settings": dataclasses.asdict(case)}
        left = spec["deadline"] - time.time()
        if left < MIN_CASE_SECONDS[smoke]:
            results.write({**base, "skipped": f"section time left {max(0.0, left):.0f} s"})
            continue
        started = time.time()
        try:
            # An fp8-stored base's LoRA is also judged on the same model at default storage (checks.lora_loader_reproduces).
            storages = [case.weight_dtype] + (["default"] if case.weight_dtype != "default" else [])
            for storage in storages:
                if storage not in bundles:
                    bundles[storage] = load_model(family, storage, smoke, device, tree["version"], results)
                if isinstance(bundles[storage], str):
                    raise RuntimeError(f"the {storage} model did not load: {bundles[storage]}")
            bundle, before = bundles[case.weight_dtype]
            reference_bundle = bundles["default"][0] if case.weight_dtype != "default" else None
            record = run_case(case, bundle, before, reference_bundle, work, steps, device)
        except Exception as error:  # noqa: BLE001  (the case is recorded as failed and the next one runs)
            record = {"error": failure(error)}
            release_memory()
        results.write({**base, **record, "seconds": time.time() - started})


def load_model(family: str, weight_dtype: str, smoke: bool, device: str, tree: str, results: Results) -> tuple[Any, dict] | str:
    """The graph's MODEL/CLIP/VAE for a family and base storage, with a snapshot of its weights; on failure
    the reason, so the family's other cases with this storage report it without loading again."""
    import checks
    import fixtures

    started = time.time()
    try:
        bundle = fixtures.load(family, weight_dtype, smoke, device)
        loaded = (bundle, checks.snapshot(bundle))
    except Exception as error:  # noqa: BLE001  (recorded with the case that needed the model)
        results.write({"kind": "model", "tree": tree, "family": family, "weight_dtype": weight_dtype, "error": failure(error)})
        return f"{type(error).__name__}: {error}"[:500]
    results.write({"kind": "model", "tree": tree, "family": family, "weight_dtype": weight_dtype,
                   "patcher": type(bundle.model).__name__, "storage": str(next(bundle.model.model.diffusion_model.parameters()).dtype),
                   "load_s": time.time() - started})
    return loaded


def prepare_fixtures(spec: dict[str, Any], results: Results) -> None:
    from harness import runtime

    runtime.boot(cpu=spec["smoke"])
    import comfy.model_management as mm

    import fixtures

    device = mm.get_torch_device().type
    for family in spec["families"]:
        started = time.time()
        try:
            built = fixtures.prepare(family, spec["smoke"], device)
            results.write({"kind": "fixture", "family": family, "built": built, "seconds": time.time() - started})
        except Exception as error:  # noqa: BLE001  (recorded; that family's sections will fail to load it)
            results.write({"kind": "fixture", "family": family, "error": failure(error), "seconds": time.time() - started})


SECTIONS = {
    "machine": lambda spec, results: results.write({"kind": "machine", **environment.machine()}),
    "fixtures": prepare_fixtures,
    "cases": run_cases,
}


def main(argv: list[str]) -> None:
    spec = json.loads(argv[0])
    SECTIONS[spec["kind"]](spec, Results(spec["results"]))


if __name__ == "__main__":
    main(sys.argv[1:])
