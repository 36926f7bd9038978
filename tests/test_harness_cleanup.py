"""A test stops what it started: a ComfyUI server, and a command (the demo) together with the server it started,
whether the test fails, times out or is interrupted."""
from __future__ import annotations

import pathlib
import sys
import time

import pytest
from harness.process_group import ProcessGroup, is_running, live_processes
from harness.runtime import REPO_ROOT
from harness.server import ComfyServer

DEMO = REPO_ROOT / "scripts" / "demo.py"


@pytest.mark.server
def test_a_server_is_stopped_when_the_block_raises(tmp_path):
    with pytest.raises(RuntimeError, match="a failing test"):
        with ComfyServer(tmp_path / "base") as server:
            pid = server.process.pid
            assert is_running(pid)
            raise RuntimeError("a failing test")
    assert not is_running(pid)


@pytest.mark.server
def test_a_server_that_is_not_ready_in_time_is_stopped(tmp_path):
    server = ComfyServer(tmp_path / "base", ready_timeout_s=0.5)  # ComfyUI needs seconds to import torch
    with pytest.raises(TimeoutError, match="did not answer within 0.5 s"):
        with server:
            pass
    assert server.process is not None and not is_running(server.process.pid)


def demo_server_pid(group: ProcessGroup, base: pathlib.Path, limit_s: float = 240) -> int:
    """The pid of the ComfyUI server the demo started, once it exists."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        for pid in live_processes(group.group_id):
            try:
                command = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"main.py" in command and str(base).encode() in command:
                return pid
        assert group.process.poll() is None, group.output()
        time.sleep(0.2)
    raise AssertionError(f"the demo started no ComfyUI server within {limit_s} s:\n{group.output()}")


@pytest.mark.server
@pytest.mark.parametrize("ending", [TimeoutError, KeyboardInterrupt])
def test_a_demo_that_hangs_or_is_interrupted_leaves_no_process_behind(tmp_path, ending):
    base = tmp_path / "demo"
    with pytest.raises(ending):
        with ProcessGroup([sys.executable, str(DEMO), "--base-directory", str(base)], tmp_path, cwd=REPO_ROOT) as group:
            server_pid = demo_server_pid(group, base)
            if ending is TimeoutError:
                group.wait(quiet_limit_s=0.5)  # the demo prints nothing while ComfyUI starts: taken for a hang
            raise ending()
    assert not is_running(server_pid), "the demo's ComfyUI server was stopped"
    assert not live_processes(group.group_id)
