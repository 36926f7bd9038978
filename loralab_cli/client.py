"""A ComfyUI server seen from outside: POST /prompt, the websocket, /history, /object_info, /interrupt."""
from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import websocket

from .workflow import CliError, NodeInfos, Workflow, describe_node

UNREACHABLE_EXIT = 3


class ServerRefused(CliError):
    """An HTTP error answer; `body` keeps ComfyUI's explanation (POST /prompt puts its node errors there)."""

    def __init__(self, url: str, code: int, body: bytes) -> None:
        super().__init__(f"ComfyUI answered {code} to {url}: {body.decode(errors='replace')[:500]}")
        self.body = body


class ComfyClient:
    def __init__(self, server: str, timeout: float = 60) -> None:
        server = server.strip().rstrip("/")
        self.base = server if "://" in server else f"http://{server}"
        self.timeout = timeout

    def _request(self, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                text = response.read()
        except urllib.error.HTTPError as error:
            raise ServerRefused(self.base + path, error.code, error.read()) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise CliError(f"cannot reach ComfyUI at {self.base} ({reason}). Start ComfyUI, or pass its address "
                           "with --server http://HOST:PORT.", UNREACHABLE_EXIT) from error
        return json.loads(text) if text.strip() else None

    def node_infos(self, workflow: Workflow) -> NodeInfos:
        """/object_info for each node type the workflow uses; a type the server lacks is an error naming the node."""
        infos: NodeInfos = {}
        for node_id, node in workflow.items():
            class_type = node["class_type"]
            if class_type not in infos:
                found = self._request("/object_info/" + urllib.parse.quote(class_type, safe=""))
                if class_type not in (found or {}):
                    raise CliError(f"{describe_node(workflow, node_id)}: the server at {self.base} has no node type "
                                   f"{class_type}. Install the custom node pack that provides it (for LoraLab* nodes: "
                                   "this pack in ComfyUI's custom_nodes) and check ComfyUI's console for import errors.")
                infos[class_type] = found[class_type]
        return infos

    def queue(self, workflow: Workflow, client_id: str) -> str:
        """Queue a workflow; one ComfyUI refuses, wholly or in part, raises CliError with its reasons per node.

        ComfyUI queues a workflow whose output nodes are only partly valid and skips the invalid ones; a run
        missing its training or saving is not what was asked for, so such a prompt is withdrawn at once.
        """
        try:
            answer = self._request("/prompt", {"prompt": workflow, "client_id": client_id})
        except ServerRefused as refused:
            raise CliError(rejection_message(_json_or_text(refused.body), workflow)) from None
        if answer.get("node_errors"):
            self.cancel_queued([answer["prompt_id"]])
            self.interrupt(answer["prompt_id"])
            raise CliError(rejection_message({"error": {"message": "some nodes failed validation"},
                                              "node_errors": answer["node_errors"]}, workflow))
        return answer["prompt_id"]

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        return (self._request(f"/history/{prompt_id}") or {}).get(prompt_id)

    def interrupt(self, prompt_id: str) -> None:
        self._request("/interrupt", {"prompt_id": prompt_id})

    def cancel_queued(self, prompt_ids: list[str]) -> None:
        self._request("/queue", {"delete": prompt_ids})

    def connect(self, client_id: str) -> websocket.WebSocket:
        scheme, rest = self.base.split("://", 1)
        url = f"{'wss' if scheme == 'https' else 'ws'}://{rest}/ws?clientId={client_id}"
        try:
            return websocket.create_connection(url, timeout=self.timeout)
        except (OSError, websocket.WebSocketException) as error:
            raise CliError(f"cannot open ComfyUI's websocket at {url} ({error}).", UNREACHABLE_EXIT) from error

    def view_url(self, image: dict[str, Any]) -> str:
        query = urllib.parse.urlencode({"filename": image.get("filename", ""), "subfolder": image.get("subfolder", ""),
                                        "type": image.get("type", "output")})
        return f"{self.base}/view?{query}"


def _json_or_text(body: bytes) -> Any:
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        return body.decode(errors="replace")[:500]


def rejection_message(answer: Any, workflow: Workflow) -> str:
    """ComfyUI's answer to a refused POST /prompt, as one line per problem and node."""
    if not isinstance(answer, dict):
        return f"ComfyUI refused the workflow: {answer}"
    error = answer.get("error") or {}
    lines = [f"ComfyUI refused the workflow: {_error_text(error) if isinstance(error, dict) else error}"]
    for node_id, problem in (answer.get("node_errors") or {}).items():
        where = describe_node(workflow, node_id) if node_id in workflow else f"node {node_id}"
        lines += [f"  {where}: {_error_text(item)}" for item in problem.get("errors", [])]
    return "\n".join(lines)


def _error_text(error: dict[str, Any]) -> str:
    message, details = error.get("message", ""), error.get("details", "")
    return f"{message}: {details}" if details else message
