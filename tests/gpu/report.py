"""The GPU check kit's report: gpu_report.json (everything), gpu_report.md (the tables a person reads) and
gpu_logs.txt (the end of each section's log). Three files, well inside the device tool's limits on what comes
back (8 files, 16 MiB each)."""
from __future__ import annotations

import json
import pathlib
from typing import Any

GIB = 1024**3
LOG_LINES = 400  # per section in gpu_logs.txt
CHECKS = ("finite_losses", "adapters_changed", "lora_loader_reproduces", "base_unchanged")


def records(sections: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [record for section in sections for record in section["records"] if record.get("kind") == kind]


def gib(value: float | None) -> str:
    return "-" if value is None else f"{value / GIB:.2f}"


def number(value: float | None, digits: str = ".3f") -> str:
    return "-" if value is None else format(value, digits)


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(row) + " |" for row in rows]


def failures(sections: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(where, what, traceback or log tail) for every failed section, case, check and core run."""
    found = []
    for section in sections:
        if section["status"] != "ok":
            found.append((section["name"], section["status"], section["log_tail"]))
        for record in section["records"]:
            where = f"{section['name']} {record.get('case') or record.get('kind')}"
            if "error" in record:
                found.append((where, record["error"]["detail"], record["error"]["traceback"]))
            for name, check in (record.get("checks") or {}).items():
                if not check["ok"]:
                    found.append((f"{where} check {name}", check["detail"], check.get("traceback", "")))
            core = record.get("core") or {}
            if "error" in core:
                found.append((f"{where} core TrainLoraNode", core["error"]["detail"], core["error"]["traceback"]))
    return found


def dynamic_vram(tree: dict[str, Any]) -> str:
    return str(tree["dynamic_vram"]) + (f" ({tree['dynamic_vram_failure']})" if tree.get("dynamic_vram_failure") else "")


def mark(check: dict[str, Any] | None) -> str:
    if check is None:
        return "-"
    return ("PASS " if check["ok"] else "FAIL ") + check["detail"].replace("|", "/")


def speed_rows(cases: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for record in cases:
        for tool, label in (("ours", "LoRA Lab"), ("core", "ComfyUI core")):
            run = record.get(tool)
            if not run or "error" in run:
                continue
            estimate = (run.get("memory_estimate") or {}).get("total")
            measured = run.get("peak_cuda") if run.get("peak_cuda") is not None else run.get("rss_growth")
            device = None
            if run.get("device_peak_used") is not None:
                device = run["device_peak_used"] - run["device_used_before"]
            target = record["settings"].get("memory_target_gib")
            busy = (run.get("busy") or {}).get("busy_fraction")
            rows.append([record["tree"], record["case"], label, number(run["median_step_s"]), number(run["samples_per_s"], ".2f"),
                         gib(measured), gib(device), gib(estimate) if tool == "ours" else "-",
                         number(estimate / measured, ".2f") if tool == "ours" and estimate and measured else "-",
                         "-" if target is None else (f"{target} ({'met' if measured is not None and measured <= target * GIB else 'MISSED'})"),
                         "-" if busy is None else f"{busy:.0%}", f"{run['trainable_params']:,}"])
    return rows


def markdown(meta: dict[str, Any], sections: list[dict[str, Any]]) -> str:
    machine = next(iter(records(sections, "machine")), {})
    lines = [f"# LoRA Lab GPU check ({meta['mode']}), {meta['started']}", ""]
    if machine:
        lines.append(f"Machine: {machine.get('gpu') or 'CPU'} ({machine.get('nvidia_smi') or 'no nvidia-smi'}), torch "
                     f"{machine['packages']['torch']['version']} (CUDA {machine['torch_cuda']}), Python {machine['python']}, "
                     f"{machine['cpus']} CPUs.")
    lines.append(f"Run took {meta['wall_s']:.0f} s of its {meta['total_budget_s']:.0f} s budget." +
                 (f" Smoke run: {meta['note']}." if meta.get("note") else ""))
    if meta.get("trees"):
        lines.append(f"ComfyUI trees: {', '.join(meta['trees'])}.")
    if meta.get("bundle"):
        bundle = meta["bundle"]
        lines.append(f"Bundle: ComfyUI {', '.join(tree['version'] for tree in bundle['trees'])}; parts "
                     f"{', '.join(part['name'] for part in bundle['parts'])}"
                     + "".join(f"; left out {item['name']} ({item['reason']})" for item in bundle.get("left_out", [])) + ".")
    if meta.get("standins"):
        lines.append(f"Import stand-ins (packages missing here, never used by the kit): {', '.join(meta['standins'])}.")
    lines += ["", "## Sections", ""]
    lines += table(["section", "status", "seconds", "limit"],
                   [[s["name"], s["status"], f"{s['seconds']:.0f}", f"{s['budget']:.0f}"] for s in sections])
    trees = records(sections, "tree")
    if trees:
        lines += ["", "## ComfyUI trees", ""]
        lines += table(["tree", "family section", "dynamic VRAM", "CoreModelPatcher", "allocator", "attention", "VRAM state", "device"],
                       [[t["version"], t["family"], dynamic_vram(t), t["core_model_patcher"], t["allocator"], t["attention"],
                         t["vram_state"], t["device"]] for t in trees])
    loaded = records(sections, "model")
    if loaded:
        lines += ["", "Models as loaded (the graph's MODEL):", ""]
        lines += table(["tree", "family", "weight_dtype", "patcher", "storage", "load s"],
                       [[m["tree"], m["family"], m["weight_dtype"], m["patcher"], m["storage"], f"{m['load_s']:.1f}"] if "error" not in m
                        else [m["tree"], m["family"], m["weight_dtype"], "FAILED to load", "", ""] for m in loaded])
    cases = records(sections, "case")
    lines += ["", "## Correctness (LoRA Lab Train LoRA)", ""]
    rows = []
    for record in cases:
        settings = record["settings"]
        what = [record["tree"], record["case"], settings["weight_dtype"], settings["mixed_precision"], settings["optimizer"],
                "yes" if settings["text_encoder"] else "no"]
        if "skipped" in record:
            rows.append(what + [f"skipped: {record['skipped']}"] + [""] * (len(CHECKS) - 1))
        elif "error" in record:
            rows.append(what + [f"FAILED: {record['error']['detail'][:200]}"] + [""] * (len(CHECKS) - 1))
        else:
            rows.append(what + [mark(record["checks"].get(name)) for name in CHECKS])
    lines += table(["tree", "case", "base", "precision", "optimizer", "text enc.", *CHECKS], rows)
    lines += ["", "## Speed and memory (same model, settings and data for both tools)", "",
              "Peak allocated: torch.cuda.max_memory_allocated (RSS growth on CPU). Device peak: NVML used memory "
              "above the run's start (includes dynamic VRAM's own buffers, the CUDA context, workspaces). GPU busy: "
              "kernel and copy time over wall time in the profiled steady-state steps.", ""]
    lines += table(["tree", "case", "tool", "s/step", "samples/s", "peak allocated GiB", "device peak GiB", "estimate GiB",
                    "estimate/peak", "target GiB", "GPU busy", "trainable params"], speed_rows(cases))
    reasons = {run["device_memory_unavailable"] for record in cases for run in (record.get("ours"), record.get("core"))
               if run and run.get("device_memory_unavailable")}
    if reasons:
        lines += ["", f"No device peak: {'; '.join(sorted(reasons))}."]
    loaded_at_step = [(record["tree"], record["case"], record["ours"].get("loaded_at_first_step")) for record in cases
                      if record.get("ours")]
    if loaded_at_step:
        lines += ["", "Models ComfyUI held on the device at the first optimizer step (LoRA Lab):", ""]
        lines += table(["tree", "case", "loaded"], [[tree, case, ", ".join(f"{m['model']} ({m['patcher']}, {gib(m['loaded_bytes'])} GiB)"
                                                                            for m in models or [])] for tree, case, models in loaded_at_step])
    found = failures(sections)
    lines += ["", f"## Failures ({len(found)})", ""]
    for where, what, trace in found:
        lines += [f"### {where}", "", what, ""] + (["```", trace, "```", ""] if trace else [])
    if machine:
        lines += ["## Packages on the machine", ""]
        lines += table(["package", "version", "imports"], [[name, str(info.get("version")), "yes" if info["imports"] else f"no: {info.get('error', '')}"]
                                                          for name, info in machine["packages"].items()])
        if "bitsandbytes_step" in machine:
            lines += ["", f"bitsandbytes AdamW8bit step on the GPU: {machine['bitsandbytes_step']}"]
    return "\n".join(lines) + "\n"


def summary(meta: dict[str, Any], sections: list[dict[str, Any]]) -> str:
    """A few lines for the console: sections, checks passed, failures, the speed table."""
    cases = records(sections, "case")
    checks = [check for record in cases for check in (record.get("checks") or {}).values()]
    lines = [f"[kit] {meta['mode']} run in {meta['wall_s']:.0f} s: "
             f"{sum(s['status'] == 'ok' for s in sections)}/{len(sections)} sections ok, {len(cases)} cases "
             f"({sum('error' in r for r in cases)} failed, {sum('skipped' in r for r in cases)} skipped), "
             f"{sum(c['ok'] for c in checks)}/{len(checks)} checks passed, {len(failures(sections))} failures listed in the report"]
    for row in speed_rows(cases):
        lines.append("[kit]   " + "  ".join(row[:8]))
    return "\n".join(lines)


def logs(sections: list[dict[str, Any]]) -> str:
    parts = []
    for section in sections:
        path = pathlib.Path(section.get("log", ""))
        text = path.read_text(errors="replace").splitlines()[-LOG_LINES:] if section.get("log") and path.is_file() else []
        parts.append(f"===== {section['name']}: {section['status']} =====\n" + "\n".join(text))
    return "\n\n".join(parts) + "\n"


def write(out: pathlib.Path, meta: dict[str, Any], sections: list[dict[str, Any]]) -> list[pathlib.Path]:
    paths = [out / "gpu_report.json", out / "gpu_report.md", out / "gpu_logs.txt"]
    paths[0].write_text(json.dumps({"meta": meta, "sections": sections}, indent=1, default=str))
    paths[1].write_text(markdown(meta, sections))
    paths[2].write_text(logs(sections))
    return paths
