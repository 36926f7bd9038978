"""The GPU check kit's --smoke run: the same sections, cases, checks and report as on the GPU machine, on CPU at
toy sizes, as that machine's Python would run it (no package beyond its own, the bundle's and the kit's stand-ins)."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from harness import runtime

GPU = runtime.REPO_ROOT / "tests" / "gpu"
sys.path[:0] = [str(GPU), str(runtime.REPO_ROOT / "tests" / "bench")]

import benchmark_run  # noqa: E402  (tests/gpu and tests/bench are not packages)
import bundle  # noqa: E402
import cases  # noqa: E402

CHECKS = {"finite_losses", "adapters_changed", "lora_loader_reproduces", "base_unchanged"}


def bare_machine_env(tmp_path: pathlib.Path) -> dict[str, str]:
    """This Python, restricted to the GPU machine's packages plus the bundle's required parts."""
    carried = tmp_path / "carried.txt"
    carried.write_text("\n".join(requirement for part in bundle.PARTS if not part.optional for requirement in part.requirements))
    allowed = [GPU / "machine_packages.txt", GPU / "bare_machine" / "newer_here.txt", carried]
    return dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(GPU / "bare_machine"),
                LORALAB_BARE_ALLOWED=os.pathsep.join(map(str, allowed)))


def run_kit(env: dict[str, str], tmp_path: pathlib.Path, *arguments: str) -> subprocess.CompletedProcess:
    """run.sh --smoke on the ComfyUI tree of this test session (never a bundle prepare.sh may have left)."""
    return subprocess.run(["bash", str(GPU / "run.sh"), "--smoke", "--bundle", str(tmp_path / "no-bundle"),
                           "--work", str(tmp_path / "work"), *arguments], env=env, capture_output=True, text=True, timeout=900)


def test_smoke_run_trains_checks_and_compares_every_case(tmp_path):
    env = bare_machine_env(tmp_path)
    env["OUT"] = str(tmp_path / "out")  # as the device tool sets it
    finished = run_kit(env, tmp_path)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu_report.json").read_text())
    sections = {section["name"]: section for section in report["sections"]}
    version = ".".join(map(str, runtime.comfyui_version()))
    assert list(sections) == ["machine", "fixtures"] + [f"{version}/{family}" for family in cases.families(cases.CASES)]
    failed = {name: (section["status"], section["log_tail"]) for name, section in sections.items() if section["status"] != "ok"}
    assert not failed, failed
    assert report["meta"]["standins"] == ["av"]  # PyAV is not on the machine: the kit's import stand-in served

    records = [record for section in report["sections"] for record in section["records"]]
    by_case = {record["case"]: record for record in records if record["kind"] == "case"}
    assert list(by_case) == [case.name for case in cases.CASES]
    for case in cases.CASES:
        record = by_case[case.name]
        assert "error" not in record, record["error"]
        assert set(record["checks"]) == CHECKS
        assert all(check["ok"] for check in record["checks"].values()), record["checks"]
        ours = record["ours"]
        assert ours["median_step_s"] > 0 and ours["samples_per_s"] > 0 and ours["steps_timed"] >= 1
        assert ours["memory_estimate"]["total"] > 0 and ours["rss_growth"] > 0
        assert ours["loaded_at_first_step"], "the models ComfyUI held during training were not recorded"
        if case.compare:
            core = record["core"]
            assert "error" not in core, core
            assert core["median_step_s"] > 0 and core["trainable_params"] > ours["trainable_params"]
            assert ours["profiled"] and core["profiled"]  # the profiler window closed inside both runs
        else:
            assert "core" not in record
    fp8 = by_case["sd15-fp8-base"]["checks"]["lora_loader_reproduces"]["detail"]
    assert "on the default-storage model" in fp8 and "on the fp8-stored model itself" in fp8
    models = [record for record in records if record["kind"] == "model"]
    assert {(model["family"], model["weight_dtype"]) for model in models} == \
        {(case.family, case.weight_dtype) for case in cases.CASES} | {(case.family, "default") for case in cases.CASES}
    sd15 = [model for model in models if model["family"] == "sd15"]
    assert {model["storage"] for model in sd15} >= {"torch.float8_e4m3fn"}  # Load Diffusion Model's fp8_e4m3fn

    markdown = (tmp_path / "out" / "gpu_report.md").read_text()
    for case in cases.CASES:
        assert f"| {version} | {case.name} | {case.weight_dtype} |" in markdown
    assert "| LoRA Lab |" in markdown and "| ComfyUI core |" in markdown and "## Failures (0)" in markdown
    assert "[kit] smoke run" in finished.stdout and "failures listed in the report" in finished.stdout


def test_gpu_busy_time_counts_overlapping_kernels_once():
    """The profiler's busy time (GPU only, so checked here on its own): kernels on two streams overlap."""
    assert benchmark_run.union_length([(5.0, 6.0), (0.0, 2.0), (1.0, 3.0), (3.0, 3.5)]) == 4.5
    assert benchmark_run.union_length([]) == 0.0


def test_a_section_that_overruns_its_limit_is_killed_and_recorded_and_the_next_one_runs(tmp_path):
    finished = run_kit(dict(os.environ, PYTHON=sys.executable), tmp_path, "--sections", "machine,fixtures",
                       "--budget", "machine=1", "--grace", "0", "--out", str(tmp_path / "out"))
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu_report.json").read_text())
    machine, fixtures = report["sections"]
    assert machine["name"] == "machine" and machine["status"] == "timed out after 1 s"
    assert fixtures["status"] == "ok" and [record["family"] for record in fixtures["records"]] == cases.families(cases.CASES)
    assert all("error" not in record for record in fixtures["records"])
    markdown = (tmp_path / "out" / "gpu_report.md").read_text()
    assert "## Failures (1)" in markdown and "### machine" in markdown and "timed out after 1 s" in markdown


def test_a_broken_bundle_still_leaves_a_report_saying_what_broke(tmp_path):
    broken = tmp_path / "bundle"
    broken.mkdir()
    (broken / bundle.MANIFEST).write_text(json.dumps({"python": "3.12", "trees": [{"label": "0.33.0", "version": "0.33.0",
                                                      "archive": "comfyui-0.33.0.tar.xz"}], "parts": []}))
    finished = subprocess.run(["bash", str(GPU / "run.sh"), "--bundle", str(broken), "--out", str(tmp_path / "out"),
                               "--work", str(tmp_path / "work")], env=dict(os.environ, PYTHON=sys.executable),
                              capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu_report.json").read_text())
    assert [(section["name"], section["status"]) for section in report["sections"]] == [("setup", "failed")]
    assert "comfyui-0.33.0.tar.xz" in report["sections"][0]["log_tail"]  # the missing archive, named
    assert "## Failures (1)" in (tmp_path / "out" / "gpu_report.md").read_text()
