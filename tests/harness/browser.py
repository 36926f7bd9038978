"""Headless Chromium (Debian's `chromium` package) driven over the Chrome DevTools Protocol with websocket-client.

No browser download and no Node toolchain: the system browser, a fresh profile per test, and a few CDP calls
(navigate, evaluate JavaScript, screenshot) are all the browser tests need.
"""
from __future__ import annotations

import base64
import itertools
import json
import pathlib
import shutil
import subprocess
import tempfile
import time
import urllib.request
from typing import Any

import websocket

from .server import stop_process

CHROMIUM_NAMES = ("chromium", "chromium-browser")
LAUNCH_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--remote-debugging-port=0")


def chromium_path() -> str | None:
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


class JavaScriptError(RuntimeError):
    pass


class Page:
    """One tab: `evaluate` runs an expression (awaiting promises) and returns its JSON value."""

    def __init__(self, ws_url: str) -> None:
        self.ws = websocket.create_connection(ws_url, timeout=120, suppress_origin=True)
        self.ids = itertools.count(1)
        self.console: list[str] = []
        self.exceptions: list[str] = []
        self.send("Runtime.enable")
        self.send("Page.enable")

    def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 120) -> dict[str, Any]:
        message_id = next(self.ids)
        self.ws.send(json.dumps({"id": message_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.ws.settimeout(max(1.0, deadline - time.monotonic()))
            message = json.loads(self.ws.recv())
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._event(message)
        raise TimeoutError(f"{method} got no answer within {timeout} s")

    def _event(self, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", []))
            self.console.append(f"{params.get('type')}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.exceptions.append(details.get("exception", {}).get("description") or details.get("text", ""))

    def evaluate(self, expression: str, timeout: float = 120) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True}, timeout=timeout)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise JavaScriptError(details.get("exception", {}).get("description") or details.get("text"))
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float, what: str) -> Any:
        """Poll a JavaScript expression until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.5)
        raise TimeoutError(f"{what}: not seen within {timeout} s. Browser console:\n" + "\n".join(self.console[-30:]))

    def navigate(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})

    def screenshot(self, path: pathlib.Path, clip: dict[str, float] | None = None, quality: int | None = None) -> None:
        params: dict[str, Any] = {"format": "jpeg" if quality else "png"}
        if quality:
            params["quality"] = quality
        if clip:
            params["clip"] = {**clip, "scale": 1}
        data = self.send("Page.captureScreenshot", params)["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        self.ws.close()


class Chromium:
    """`with Chromium(width, height) as browser: page = browser.page()`; the profile is deleted on exit."""

    def __init__(self, width: int = 1600, height: int = 1000) -> None:
        executable = chromium_path()
        if executable is None:
            raise RuntimeError("chromium is not installed (Debian: apt-get install chromium)")
        self.executable = executable
        self.size = (width, height)
        self.profile = pathlib.Path(tempfile.mkdtemp(prefix="loralab-chromium-"))
        self.process: subprocess.Popen | None = None
        self.port = 0

    def __enter__(self) -> Chromium:
        command = [self.executable, *LAUNCH_FLAGS, f"--user-data-dir={self.profile}",
                   f"--window-size={self.size[0]},{self.size[1]}", "about:blank"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.is_file() or not port_file.read_text().strip():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start (exit code {self.process.poll()})")
            time.sleep(0.1)
        self.port = int(port_file.read_text().split()[0])
        return self

    def page(self) -> Page:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=30) as response:
            targets = json.loads(response.read())
        target = next(target for target in targets if target.get("type") == "page")
        page = Page(target["webSocketDebuggerUrl"])
        page.send("Emulation.setDeviceMetricsOverride",
                  {"width": self.size[0], "height": self.size[1], "deviceScaleFactor": 1, "mobile": False})
        return page

    def __exit__(self, *exc_info: object) -> None:
        stop_process(self.process)
        shutil.rmtree(self.profile, ignore_errors=True)
