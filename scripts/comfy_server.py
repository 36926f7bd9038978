"""A real ComfyUI server on a free loopback port, with this pack linked into its custom_nodes.

Workflows go in through POST /prompt, progress comes back over the websocket, results from /history
and files from /view: the path a headless user's script takes. The demo runs on it, and so do the tests
(tests/harness/server.py).
"""
from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any


REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
NODE_IDS = ("LoraLabLoadDataset", "LoraLabAutoCaption", "LoraLabTrainLoRA", "LoraLabSaveLoRA", "LoraLabStrengthSweep",
            "LoraLabLoadLoRA", "LoraLabLoadDemoModel", "LoraLabEmptyLatent")
PACK_LINK_NAME = "comfyui-lora-lab"


def comfyui_path() -> pathlib.Path:
    value = os.environ.get("COMFYUI_PATH")
    if not value:
        raise RuntimeError("COMFYUI_PATH is not set: run the tests through scripts/test.sh, which provisions ComfyUI.")
    path = pathlib.Path(value).resolve()
    if not (path / "comfyui_version.py").is_file():
        raise RuntimeError(f"COMFYUI_PATH={path} is not a ComfyUI tree (no comfyui_version.py).")
    return path


def comfyui_version() -> tuple[int, ...]:
    text = (comfyui_path() / "comfyui_version.py").read_text()
    version = text.split('__version__ = "')[1].split('"')[0]
    return tuple(int(part) for part in version.split("."))


def stop_process(process: subprocess.Popen | None) -> None:
    """Terminate a child process, killing it if it does not exit within 20 s."""
    if process and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class PromptRun:
    """What one queued workflow produced: its /history entry and every websocket message it caused."""

    prompt_id: str
    history: dict[str, Any]
    messages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> str:
        return self.history.get("status", {}).get("status_str", "unknown")

    def outputs(self, node_id: str) -> dict[str, Any]:
        return self.history.get("outputs", {}).get(str(node_id), {})

    def events(self, event_type: str) -> list[dict[str, Any]]:
        return [m["data"] for m in self.messages if m.get("type") == event_type]


class ComfyServer:
    """Start with `with ComfyServer(base_dir) as server:`; the process is stopped when the block is left, and when
    the server fails to get ready within `ready_timeout_s`."""

    def __init__(self, base_dir: pathlib.Path, extra_args: tuple[str, ...] = (), cpu: bool = True,
                 ready_timeout_s: float = 240) -> None:
        self.base_dir = base_dir
        self.cpu = cpu
        self.ready_timeout_s = ready_timeout_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_args = extra_args
        self.log_path = base_dir / "server.log"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "ComfyServer":
        for folder in ("custom_nodes", "input", "output", "temp", "user", "models/loras", "models/checkpoints"):
            (self.base_dir / folder).mkdir(parents=True, exist_ok=True)
        link = self.base_dir / "custom_nodes" / PACK_LINK_NAME
        if not link.exists():
            link.symlink_to(REPO_ROOT, target_is_directory=True)
        # The database is a file of this base folder: ComfyUI's default is in its code folder whatever the base, and
        # 0.3.75 logs a thread error traceback for an in-memory one.
        command = [
            sys.executable, "main.py", *(["--cpu"] if self.cpu else []), "--listen", "127.0.0.1", "--port", str(self.port),
            "--base-directory", str(self.base_dir), "--database-url", f"sqlite:///{self.base_dir / 'user' / 'comfyui.db'}",
            "--disable-api-nodes", *self.extra_args,
        ]
        self._log = open(self.log_path, "w")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(command, cwd=comfyui_path(), stdout=self._log, stderr=subprocess.STDOUT, env=env)
        try:
            self._wait_ready(timeout=self.ready_timeout_s)
        except BaseException:  # a `with` block never exits a context whose __enter__ raised: stop it here
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        stop_process(self.process)
        self._log.close()

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def _wait_ready(self, timeout: float) -> None:
        # --quick-test-for-ci exits 0 even when a pack fails to import, so readiness means our nodes exist.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                info = self.get_json(f"/object_info/{NODE_IDS[0]}")
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
                continue
            if NODE_IDS[0] in info:
                return
            raise RuntimeError(f"ComfyUI started without LoRA Lab's nodes (import failed?):\n{self.log_tail()}")
        raise TimeoutError(f"ComfyUI did not answer within {timeout} s:\n{self.log_tail()}")

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.loads(response.read())

    def post_json(self, path: str, body: Any) -> Any:
        request = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
        return json.loads(text) if text else None

    def view(self, filename: str, subfolder: str = "", folder_type: str = "output") -> bytes:
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": folder_type})
        with urllib.request.urlopen(f"{self.url}/view?{query}", timeout=30) as response:
            return response.read()

    def run(self, prompt: dict[str, Any], timeout: float = 600, on_message=None) -> PromptRun:
        """Queue an API-format workflow, follow it over the websocket until it ends, return its history."""
        client_id = uuid.uuid4().hex
        import websocket  # here, not at import: the GPU kit's bare machine boots the runtime without it

        ws = websocket.create_connection(f"ws://127.0.0.1:{self.port}/ws?clientId={client_id}", timeout=timeout)
        try:
            try:
                queued = self.post_json("/prompt", {"prompt": prompt, "client_id": client_id})
            except urllib.error.HTTPError as error:
                raise RuntimeError(f"/prompt refused the workflow: {error.read().decode(errors='replace')}") from error
            prompt_id = queued["prompt_id"]
            messages = self._follow(ws, prompt_id, timeout, on_message)
        finally:
            ws.close()
        history = self.get_json(f"/history/{prompt_id}").get(prompt_id, {})
        return PromptRun(prompt_id=prompt_id, history=history, messages=messages)

    def _follow(self, ws: "websocket.WebSocket", prompt_id: str, timeout: float, on_message) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ws.settimeout(max(1.0, deadline - time.monotonic()))
            raw = ws.recv()
            if isinstance(raw, bytes):  # binary live previews
                continue
            message = json.loads(raw)
            messages.append(message)
            if on_message:
                on_message(self, message)
            data = message.get("data", {})
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            kind = message.get("type")
            if kind == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                return messages
            if kind in ("execution_error", "execution_interrupted", "execution_success") and data.get("prompt_id") == prompt_id:
                if kind != "execution_success":
                    return messages
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout} s:\n{self.log_tail()}")
