"""The GPU check kit's driver: unpack the bundle, run each section in its own process under its own time
limit, and write the report (run.sh starts it; `--help` lists the options).

Sections, in order: the machine, the model files, then each family's cases on each ComfyUI tree (the newest
first). A section that fails, crashes or runs out of time is recorded with the end of its log, and the next
one starts; the whole run keeps within `--total` seconds.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

import bundle as bundle_format  # noqa: E402  (after the path set-up above)
import cases as case_table  # noqa: E402
import report  # noqa: E402

# Seconds per section: the machine, the model files, and a family's cases on one tree ("family": any other family).
# Flux.1 dev (12B) is a run of its own: --sections 'machine,fixtures,*/flux_dev' --budget fixtures=240 (README).
GPU_BUDGETS = {"machine": 45, "fixtures": 75, "sd15": 100, "sdxl": 130, "flux_dev": 200, "family": 130}
SMOKE_BUDGETS = {"machine": 60, "fixtures": 120, "sd15": 240, "sdxl": 240, "family": 240}  # caps on a loaded 2-core CPU
GPU_TOTAL, SMOKE_TOTAL = 480, 900
KILL_GRACE = 10  # seconds a section may overrun its own deadline (finishing a case) before it is killed
MIN_SECTION = 15  # seconds worth starting a section with
STANDINS = HERE / "standins"


@dataclass
class Section:
    name: str
    kind: str  # machine, fixtures, cases
    budget: float
    tree: pathlib.Path | None = None
    family: str | None = None
    families: tuple[str, ...] = ()  # fixtures: the families whose model files the selected sections need


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="CPU, toy-size models, the ComfyUI tree in $COMFYUI_PATH")
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="report folder (default $OUT, else test-artifacts/gpu in the repository)")
    parser.add_argument("--bundle", type=pathlib.Path, default=REPO / ".gpu-bundle",
                        help="from prepare.sh; without one (smoke), the tree in $COMFYUI_PATH")
    parser.add_argument("--sections", default="*", help="comma-separated name patterns, e.g. 'machine,0.33*/sd15'")
    parser.add_argument("--budget", action="append", default=[], metavar="NAME=SECONDS",
                        help=f"a section kind's or family's time limit (defaults {GPU_BUDGETS}; smoke {SMOKE_BUDGETS})")
    parser.add_argument("--total", type=float, default=None, help=f"whole run's limit (default {GPU_TOTAL} s; smoke {SMOKE_TOTAL} s)")
    parser.add_argument("--grace", type=float, default=KILL_GRACE,
                        help=f"seconds a section may overrun its limit to finish a case before it is killed (default {KILL_GRACE})")
    parser.add_argument("--work", type=pathlib.Path, default=None, help="scratch folder (default: a new temporary one)")
    return parser.parse_args(argv)


def budgets(args: argparse.Namespace) -> dict[str, float]:
    values: dict[str, float] = dict(SMOKE_BUDGETS if args.smoke else GPU_BUDGETS)
    for item in args.budget:
        name, _, seconds = item.partition("=")
        values[name] = float(seconds)
    return values


def trees(args: argparse.Namespace, work: pathlib.Path, env: dict[str, str]) -> tuple[list[tuple[str, pathlib.Path]], dict | None]:
    """(label, root) of each ComfyUI tree, newest first: the bundle's, else COMFYUI_PATH's."""
    if bundle_format.read_manifest(args.bundle) is not None:
        unpacked = bundle_format.unpack(args.bundle, work / "bundle")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(unpacked.site), env.get("PYTHONPATH")]))
        return unpacked.trees, unpacked.manifest
    path = env.get("COMFYUI_PATH")
    if not path:
        raise SystemExit(f"No bundle at {args.bundle} and COMFYUI_PATH is not set: run tests/gpu/prepare.sh, or set "
                         "COMFYUI_PATH to a ComfyUI tree (scripts/provision.sh prints one).")
    root = pathlib.Path(path).resolve()
    return [(bundle_format.tree_version(root), root)], None


def add_standins(env: dict[str, str]) -> list[str]:
    """Import-only stand-ins (standins/) for packages the machine lacks and the kit never uses."""
    used = []
    for name in sorted(path.name for path in STANDINS.iterdir() if path.is_dir()):
        found = subprocess.run([sys.executable, "-c", f"import {name}"], env=env, capture_output=True).returncode == 0
        if not found:
            used.append(name)
    if used:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(STANDINS)]))
    return used


def plan(tree_list: list[tuple[str, pathlib.Path]], limits: dict[str, float], pattern: str) -> list[Section]:
    """The selected sections; the fixtures section writes the model files of the selected families only (all
    families when no family's section is selected), so an SD run never waits for Flux's 12 GB file."""
    wanted = [item.strip() for item in pattern.split(",") if item.strip()]

    def selected(name: str) -> bool:
        return any(fnmatch.fnmatch(name, item) for item in wanted)

    cases = [Section(f"{label}/{family}", "cases", limits.get(family, limits["family"]), root, family)
             for label, root in tree_list for family in case_table.families(case_table.CASES)]
    cases = [section for section in cases if selected(section.name)]
    families = tuple(dict.fromkeys(section.family for section in cases)) or tuple(case_table.families(case_table.CASES))
    fixed = [Section("machine", "machine", limits["machine"]),
             Section("fixtures", "fixtures", limits["fixtures"], tree_list[0][1], families=families)]
    return [section for section in fixed if selected(section.name)] + cases


def tail(path: pathlib.Path, lines: int = 30) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").strip().splitlines()[-lines:])


def run_section(section: Section, seconds: float, grace: float, smoke: bool, work: pathlib.Path, env: dict[str, str]) -> dict[str, Any]:
    """Run one section's process; returns its status and records."""
    results = work / "results" / (section.name.replace("/", "_") + ".jsonl")
    log = work / "logs" / (section.name.replace("/", "_") + ".log")
    results.parent.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    spec = {"kind": section.kind, "results": str(results), "deadline": started + seconds, "smoke": smoke,
            "work": str(work / "sections" / section.name.replace("/", "_")), "family": section.family,
            "families": list(section.families)}
    section_env = dict(env, COMFYUI_PATH=str(section.tree)) if section.tree else env
    with open(log, "w") as stream:
        process = subprocess.Popen([sys.executable, str(HERE / "section.py"), json.dumps(spec)], stdout=stream,
                                   stderr=subprocess.STDOUT, env=section_env, cwd=REPO, start_new_session=True)
        try:
            code = process.wait(timeout=seconds + grace)
            status = "ok" if code == 0 else f"failed (exit {code})"
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            status = f"timed out after {seconds + grace:.0f} s"
    return {"name": section.name, "status": status, "seconds": time.time() - started, "budget": seconds,
            "log_tail": "" if status == "ok" else tail(log), "records": read_records(results), "log": str(log)}


def read_records(path: pathlib.Path) -> list[dict[str, Any]]:
    """The section's results; a line cut off by a kill is noted, not fatal."""
    records = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            records.append({"kind": "note", "detail": f"an unreadable result line (cut off?): {line[:200]}"})
    return records


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    started = time.time()
    total = args.total or (SMOKE_TOTAL if args.smoke else GPU_TOTAL)
    out = args.out or pathlib.Path(os.environ.get("OUT") or REPO / "test-artifacts" / "gpu")
    out.mkdir(parents=True, exist_ok=True)
    work = args.work or pathlib.Path(tempfile.mkdtemp(prefix="loralab-gpu-kit-"))
    meta: dict[str, Any] = {"mode": "smoke" if args.smoke else "gpu", "total_budget_s": total, "work": str(work),
                            "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
                            "note": case_table.SMOKE_NOTE if args.smoke else ""}
    done: list[dict[str, Any]] = []
    try:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        tree_list, meta["bundle"] = trees(args, work, env)
        meta["trees"] = [label for label, _ in tree_list]
        meta["standins"] = add_standins(env)
        sections = plan(tree_list, budgets(args), args.sections)
        print(f"[kit] {meta['mode']} run: ComfyUI {', '.join(meta['trees'])}; {len(sections)} sections within {total:.0f} s; "
              f"set up in {time.time() - started:.0f} s", flush=True)
        for section in sections:
            left = total - (time.time() - started) - args.grace
            if left < MIN_SECTION:
                result = {"name": section.name, "status": f"skipped: {max(0.0, left):.0f} s of the run's {total:.0f} s left",
                          "seconds": 0.0, "budget": 0.0, "log_tail": "", "records": []}
            else:
                result = run_section(section, min(section.budget, left), args.grace, args.smoke, work, env)
            done.append(result)
            print(f"[kit] {section.name}: {result['status']} in {result['seconds']:.0f} s", flush=True)
    except Exception:  # noqa: BLE001  (the report says what broke; an unattended run must still leave one)
        done.append({"name": "setup", "status": "failed", "seconds": time.time() - started, "budget": 0.0,
                     "log_tail": traceback.format_exc(), "records": []})
    meta["wall_s"] = time.time() - started
    paths = report.write(out, meta, done)
    print(report.summary(meta, done), flush=True)
    print(f"[kit] report: {', '.join(str(path) for path in paths)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
