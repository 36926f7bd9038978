"""The command: queue a workflow (once, or once per dataset folder), follow it, print what it produced."""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import websocket

from .client import UNREACHABLE_EXIT, ComfyClient
from .kohya_config import load_run
from .kohya_keys import KohyaConfigError
from .kohya_workflow import apply_kohya_run
from .progress import ProgressDisplay, format_duration
from .workflow import (CliError, Override, Run, Workflow, apply_overrides, check_choices, load_workflow, node_title,
                       runs_for_datasets)

DEFAULT_SERVER = "http://127.0.0.1:8188"
SILENCE_POLL_S = 15  # without websocket news for this long, ask /history (a message may have been missed)
HISTORY_WAIT_S = 10
FAILED_EXIT = 1
CANCELLED_EXIT = 130

EPILOG = """\
Run it from this pack's folder (ComfyUI/custom_nodes/<pack>), with any Python 3.10+ that has websocket-client
(ComfyUI's own Python has it once the pack's requirements are installed); the server may be another machine.

examples:
  python -m loralab_cli example_workflows/api/loralab_sd15_pipeline.json --dataset ~/datasets/ohwx
  python -m loralab_cli wf.json --server http://gpu-box:8188 --set 4.epochs=8 --set "Train LoRA.rank=16"
  python -m loralab_cli wf.json --dataset /data/cat --dataset /data/dog     (two LoRAs, queued back to back)
  python -m loralab_cli wf.json --kohya-config training_config.toml          (a kohya config's settings)
  python -m loralab_cli train --config training_config.toml                  (no server: see train --help)

--set NODE.INPUT=VALUE
  NODE is a node id, a node title (as shown in ComfyUI, _meta.title in the API file) or a node type.
  VALUE is converted to the input's type as the server declares it (INT, FLOAT, BOOLEAN, a choice, text).

--dataset FOLDER (repeatable)
  Queues the workflow once per folder: the Load Dataset node's path becomes FOLDER (absolute when it exists
  here, otherwise sent as typed: a path on the server or a folder inside ComfyUI's input folder), and every
  filename_prefix in the workflow gets _<folder name> appended so each LoRA and grid keeps its own name.
  All runs are queued at once, so the server trains them back to back in one session.

exit status: 0 every run succeeded; 1 a run failed or was interrupted; 2 bad workflow, option or input
(including ComfyUI refusing the workflow); 3 the server could not be reached; 130 cancelled with Ctrl-C
(queued runs are removed and the running one is interrupted; Train LoRA keeps a resumable state).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loralab_cli", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Queue an API-format workflow on a running ComfyUI, show its progress, wait, and print the "
                    "files it produced (LoRAs, images). Export the API format in ComfyUI with "
                    "Workflow -> Export (API); the examples' API twins are in example_workflows/api/.")
    parser.add_argument("workflow", type=pathlib.Path, help="API-format workflow JSON")
    parser.add_argument("--server", default=os.environ.get("COMFYUI_URL", DEFAULT_SERVER),
                        help=f"ComfyUI's address (default: $COMFYUI_URL or {DEFAULT_SERVER})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.INPUT=VALUE",
                        help="override a node input; repeatable")
    parser.add_argument("--dataset", dest="datasets", action="append", default=[], metavar="FOLDER",
                        help="run the workflow on this dataset folder; repeat for several LoRAs in one go")
    parser.add_argument("--dataset-node", metavar="NODE",
                        help="the node whose path --dataset sets, when the workflow has several Load Dataset nodes")
    parser.add_argument("--kohya-config", type=pathlib.Path, metavar="TOML",
                        help="set Train LoRA's, Load Dataset's and Save LoRA's inputs from a kohya --config_file "
                             "(before --set and --dataset)")
    parser.add_argument("--kohya-dataset-config", type=pathlib.Path, metavar="TOML",
                        help="with --kohya-config: a kohya dataset config ([[datasets.subsets]])")
    parser.add_argument("--dry-run", action="store_true",
                        help="check everything against the server and print the API JSON of each run; queue nothing")
    parser.add_argument("--json", action="store_true",
                        help="on stdout, one JSON object per run (status, error, loras, images) instead of text")
    return parser


@dataclass
class Outcome:
    run: Run
    status: str  # success, error or interrupted
    error: str = ""
    seconds: float | None = None
    loras: list[str] = field(default_factory=list)
    images: list[dict[str, str]] = field(default_factory=list)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    listen_for_ctrl_c()
    try:
        return run_command(args)
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code


def listen_for_ctrl_c() -> None:
    """Ctrl-C cancels the queued runs even when the command was started with SIGINT ignored (as a shell's `cmd &`
    starts it), which would otherwise leave them running on the server."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


def run_command(args: argparse.Namespace) -> int:
    client, runs = prepare_runs(args)
    if args.dry_run:
        for run in runs:
            print(json.dumps(run.workflow, indent=1))
        return 0
    display = ProgressDisplay(sys.stderr, interactive=sys.stderr.isatty())

    def report(outcome: Outcome) -> None:
        display.close()
        print(json.dumps(outcome_json(outcome)) if args.json else outcome_text(outcome), flush=True)

    outcomes = execute(client, runs, display, report)
    return 0 if all(outcome.status == "success" for outcome in outcomes) else FAILED_EXIT


def prepare_runs(args: argparse.Namespace) -> tuple[ComfyClient, list[Run]]:
    """The runs to queue, every value checked against the server's /object_info before anything is queued."""
    workflow = load_workflow(args.workflow)
    if args.kohya_config is not None:
        workflow = apply_kohya_config(workflow, args.kohya_config, args.kohya_dataset_config)
    overrides = [Override.parse(text) for text in args.overrides]
    client = ComfyClient(args.server)
    infos = client.node_infos(workflow)
    workflow = apply_overrides(workflow, overrides, infos)
    check_choices(workflow, infos, client.base)
    return client, runs_for_datasets(workflow, args.datasets, args.dataset_node)


def apply_kohya_config(workflow: Workflow, config: pathlib.Path, dataset_config: pathlib.Path | None) -> Workflow:
    """The workflow with a kohya config's settings (kohya_config's key table); its notes go to stderr."""
    try:
        run = load_run(config, dataset_config, {})
    except KohyaConfigError as error:
        raise CliError(str(error)) from None
    workflow, notes = apply_kohya_run(workflow, run)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return workflow


def execute(client: ComfyClient, runs: list[Run], display: ProgressDisplay,
            report: Callable[[Outcome], None]) -> list[Outcome]:
    """Queue every run at once (the server works through them back to back), then follow them to the end,
    reporting each run as it finishes."""
    client_id = uuid.uuid4().hex
    ws = client.connect(client_id)  # before queueing, so no message of ours is missed
    queued: dict[str, Run] = {}
    try:
        try:
            for index, run in enumerate(runs, start=1):
                prompt_id = client.queue(run.workflow, client_id)
                queued[prompt_id] = run
                display.add_run(prompt_id, run_label(run, index, len(runs)), run.workflow)
            display.queued(client.base)
        except CliError:
            cancel(client, list(queued))
            raise
        try:
            finished = follow(client, ws, queued, display, report)
        except KeyboardInterrupt:
            display.close()
            cancel(client, list(queued))
            raise CliError("cancelled: the queued runs were removed and the running one interrupted.",
                           CANCELLED_EXIT) from None
    finally:
        display.close()
        ws.close()
    return [finished[prompt_id] for prompt_id in queued]


def cancel(client: ComfyClient, prompt_ids: list[str]) -> None:
    if not prompt_ids:
        return
    client.cancel_queued(prompt_ids)
    for prompt_id in prompt_ids:
        client.interrupt(prompt_id)  # ignored by the server unless this prompt is the running one


def follow(client: ComfyClient, ws: websocket.WebSocket, queued: dict[str, Run], display: ProgressDisplay,
           report: Callable[[Outcome], None]) -> dict[str, Outcome]:
    finished: dict[str, Outcome] = {}
    started: dict[str, float] = {}
    ws.settimeout(SILENCE_POLL_S)
    while len(finished) < len(queued):
        try:
            raw = ws.recv()
        except websocket.WebSocketTimeoutException:
            for prompt_id in set(queued) - set(finished):
                history = client.history(prompt_id)
                if history and history.get("status", {}).get("completed") is not None:
                    finished[prompt_id] = outcome_from_history(client, queued[prompt_id], history, started.get(prompt_id))
                    report(finished[prompt_id])
            continue
        except (websocket.WebSocketException, OSError) as error:
            waiting = ", ".join(set(queued) - set(finished))
            raise CliError(f"lost the connection to ComfyUI ({error}). The queued runs go on on the server; "
                           f"their prompt ids: {waiting}.", UNREACHABLE_EXIT) from error
        if not isinstance(raw, str):
            continue  # binary live previews
        message = json.loads(raw)
        kind, data = message.get("type"), message.get("data") or {}
        display.handle(kind, data)
        prompt_id = data.get("prompt_id")
        if prompt_id not in queued or prompt_id in finished:
            continue
        if kind == "execution_start":
            started[prompt_id] = time.monotonic()
        elif kind == "executing" and data.get("node") is None:  # sent after the history entry is written
            history = wait_for_history(client, prompt_id)
            finished[prompt_id] = outcome_from_history(client, queued[prompt_id], history, started.get(prompt_id))
            report(finished[prompt_id])
    return finished


def wait_for_history(client: ComfyClient, prompt_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + HISTORY_WAIT_S
    while (history := client.history(prompt_id)) is None:
        if time.monotonic() > deadline:
            raise CliError(f"prompt {prompt_id} finished but ComfyUI kept no history of it.", FAILED_EXIT)
        time.sleep(0.2)
    return history


def outcome_from_history(client: ComfyClient, run: Run, history: dict[str, Any], started: float | None) -> Outcome:
    seconds = time.monotonic() - started if started is not None else None
    outcome = Outcome(run, "success" if history.get("status", {}).get("status_str") == "success" else "error",
                      seconds=seconds)
    for kind, data in history.get("status", {}).get("messages", []):
        if kind == "execution_error":
            where = _where(run.workflow, data.get("node_id"))
            exception = str(data.get("exception_type", "")).rsplit(".", 1)[-1]
            outcome.error = f"{where}: {exception}: {data.get('exception_message', '').strip()}"
        elif kind == "execution_interrupted":
            outcome.status = "interrupted"
            outcome.error = f"interrupted at {_where(run.workflow, data.get('node_id'))}"
    for output in history.get("outputs", {}).values():
        outcome.loras += [item["path"] for item in output.get("loras", []) if item.get("path")]
        outcome.images += [{"path": image_path(image), "url": client.view_url(image)}
                           for image in output.get("images", []) if image.get("type") == "output"]
    return outcome


def _where(workflow: Workflow, node_id: Any) -> str:
    node_id = str(node_id)
    return f"node {node_id} ({node_title(workflow, node_id)})" if node_id in workflow else f"node {node_id}"


def image_path(image: dict[str, Any]) -> str:
    """Where ComfyUI wrote an output image, relative to its base folder."""
    return "/".join(part for part in ("output", image.get("subfolder", ""), image.get("filename", "")) if part)


def run_label(run: Run, index: int, total: int) -> str:
    if total == 1:
        return f"[{run.name}] " if run.name else ""
    return f"[{index}/{total} {run.name}] " if run.name else f"[{index}/{total}] "


def outcome_text(outcome: Outcome) -> str:
    head = f"{outcome.run.name}: " if outcome.run.name else ""
    took = f" in {format_duration(outcome.seconds)}" if outcome.seconds is not None else ""
    if outcome.status == "success":
        lines = [f"{head}finished{took}"]
    else:
        lines = [f"{head}{'interrupted' if outcome.status == 'interrupted' else 'FAILED'}{took}: {outcome.error}"]
    lines += [f"  LoRA   {path}" for path in outcome.loras]
    lines += [f"  image  {image['path']}" for image in outcome.images]
    return "\n".join(lines)


def outcome_json(outcome: Outcome) -> dict[str, Any]:
    return {"dataset": outcome.run.name or None, "status": outcome.status, "error": outcome.error or None,
            "seconds": outcome.seconds, "loras": outcome.loras, "images": outcome.images}
