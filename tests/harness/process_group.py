"""A command run in its own process group, stopped together with everything it started, however the test ends.

`subprocess.run(..., timeout=...)` kills only the command it started: a ComfyUI server that the command started
lives on, orphaned. Here the command leads a new session, and leaving the `with` block (normally, on a failed
assertion, a timeout or Ctrl-C) sends SIGTERM to the whole group, then SIGKILL to whatever is left.
"""
from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import time
from typing import Sequence

STOP_GRACE_S = 20  # after SIGTERM, how long the group may take to exit before SIGKILL


def live_processes(group_id: int) -> list[int]:
    """Process ids in the group that are still running (zombies, which hold no resources, are not counted)."""
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (name) ": state, ppid, pgrp, ...
        if fields[0] != "Z" and int(fields[2]) == group_id:
            found.append(int(entry.name))
    return found


def is_running(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


class ProcessGroup:
    """`with ProcessGroup(command, output_dir) as group: group.wait(quiet_limit_s)`; stdout and stderr go to files."""

    def __init__(self, command: Sequence[str], output_dir: pathlib.Path, cwd: pathlib.Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.command = list(command)
        self.cwd = cwd
        self.env = env
        self.stdout_path = output_dir / "stdout.txt"
        self.stderr_path = output_dir / "stderr.txt"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "ProcessGroup":
        with open(self.stdout_path, "w") as stdout, open(self.stderr_path, "w") as stderr:
            self.process = subprocess.Popen(self.command, cwd=self.cwd, env=self.env, stdout=stdout, stderr=stderr,
                                            start_new_session=True)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def group_id(self) -> int:
        return self.process.pid  # a session leader's process group has its pid

    def wait(self, quiet_limit_s: float) -> int:
        """The command's exit status; TimeoutError if it writes nothing for `quiet_limit_s` seconds (it hangs)."""
        last_size, last_change = -1, time.monotonic()
        while (status := self.process.poll()) is None:
            size = self.stdout_path.stat().st_size + self.stderr_path.stat().st_size
            if size != last_size:
                last_size, last_change = size, time.monotonic()
            elif time.monotonic() - last_change > quiet_limit_s:
                raise TimeoutError(f"{self.command[:3]} wrote nothing for {quiet_limit_s:.0f} s:\n{self.output()[-3000:]}")
            time.sleep(0.2)
        return status

    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM to the whole group, SIGKILL after STOP_GRACE_S to what is left; returns when none is running."""
        if self.process is None:
            return
        self._signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while self._running() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self._running():
            self._signal(signal.SIGKILL)
            while self._running():
                time.sleep(0.1)

    def _running(self) -> bool:
        self.process.poll()  # reap the leader once it exits
        return bool(live_processes(self.group_id))

    def _signal(self, number: int) -> None:
        try:
            os.killpg(self.group_id, number)
        except ProcessLookupError:
            pass  # every member has exited already
