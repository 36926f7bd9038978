"""The training benchmark runs end to end in CI size and prints its comparison table."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from harness import runtime

SCRIPT = runtime.REPO_ROOT / "tests" / "bench" / "benchmark_training.py"
NUMBER = r"\d[\d,]*(?:\.\d+)?"
TOOLS = ("ComfyUI TrainLoraNode", "LoRA Lab Train LoRA")


def table_row(output: str, label: str) -> list[float]:
    line = next((line for line in output.splitlines() if line.startswith(label)), None)
    assert line is not None, f"no '{label}' row in:\n{output}"
    return [float(value.replace(",", "")) for value in re.findall(NUMBER, line[len(label):])]


def test_cpu_benchmark_prints_both_tools_and_the_ratio():
    finished = subprocess.run(
        [sys.executable, str(SCRIPT), "--mode", "cpu", "--model", "tiny", "--steps", "3", "--rounds", "1", "--threads", "1"],
        capture_output=True, text=True, timeout=600,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    output = finished.stdout
    assert "failed" not in output, output
    core, ours = (table_row(output, tool) for tool in TOOLS)
    # s/step, CPU s/step, samples/s, peak RSS, RSS growth, trainable params, forwards/step, steps timed, runs
    assert len(core) == len(ours) == 9, output
    for seconds, _, samples_per_second, peak_rss, _, trainable, *_ in (core, ours):
        assert seconds > 0 and samples_per_second == pytest.approx(1 / seconds, rel=0.02, abs=0.002)
        assert peak_rss > 100 and trainable > 0
    assert ours[5] < core[5]  # kohya's target layers, against every layer core adapts
    ratio = table_row(output, "ratio ours/theirs")
    assert ratio[0] == pytest.approx(ours[0] / core[0], rel=0.05, abs=0.006)
    assert "load average at end" in output
