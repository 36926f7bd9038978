"""The GPU check kit's bundle: ComfyUI source trees and the Python packages the GPU machine lacks, packed to
fit the device tool's 64 MiB transfer limit beside the repository, and unpacked there.

    python tests/gpu/bundle.py build --out .gpu-bundle --tree <ComfyUI> --tree <ComfyUI> [--python-version 3.12]

(prepare.sh runs this.) The machine has Python 3.12 with torch 2.11 (CUDA 13.0), transformers, peft,
safetensors, accelerate... (machine_packages.txt) but no package registry. The packages here are installed for
its platform on this machine with pip's cross-platform `--target` install, trimmed of libraries for other
GPUs, and packed with xz. Optional parts (for example comfy-kitchen's 176 MB CUDA extension) go in while the
budget allows; the manifest says what was left out, and the report repeats it.
"""
from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field

REPO = pathlib.Path(__file__).resolve().parents[2]
MANIFEST = "manifest.json"
TRANSFER_LIMIT = 64 * 1024**2  # the device tool's limit on what travels: repository + carried paths
GROWTH_MARGIN = 2 * 1024**2  # room for the repository to grow before the bundle must be rebuilt
PLATFORMS = ("manylinux_2_35_x86_64", "manylinux_2_34_x86_64", "manylinux_2_31_x86_64", "manylinux_2_28_x86_64",
             "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux2010_x86_64", "manylinux_2_12_x86_64", "manylinux1_x86_64")
TREE_EXCLUDES = (".git", "models", "input", "output", "temp", "user", "custom_nodes", "tests", "tests-unit", ".github",
                 ".ci", "script_examples")


@dataclass(frozen=True)
class Part:
    """Packages installed together into one archive, unpacked into the same site folder on the machine."""

    name: str
    why: str
    requirements: tuple[str, ...]  # "name==version", or a bare name pinned by the newest tree's requirements.txt
    drop: tuple[str, ...] = ()  # fnmatch patterns of installed files to leave out
    keep_only: tuple[str, ...] = ()  # if set: only these installed files (an optional piece of another part)
    optional: bool = False


PARTS: tuple[Part, ...] = (
    Part("comfyui-deps", "imported by ComfyUI at start: samplers (torchsde), current ComfyUI's dynamic VRAM "
         "(comfy-aimdo) and attention (comfy-kitchen, without its compiled backends: eager and triton remain)",
         ("torchsde==0.2.6", "trampoline==0.1.2", "comfy-aimdo", "comfy-kitchen"),
         drop=("comfy_kitchen/backends/cuda/_C*", "comfy_kitchen/backends/hip/_C*")),
    Part("optimizers", "LoRA Lab's optimizers: AdamW8bit (bitsandbytes, CUDA 13 library only), Prodigy, Lion",
         ("bitsandbytes==0.50.2", "prodigyopt==1.1.2", "lion-pytorch==0.2.5"),
         drop=("bitsandbytes/libbitsandbytes_cuda1[0-2]*", "bitsandbytes/libbitsandbytes_rocm*",
               "bitsandbytes/libbitsandbytes_xpu*", "bitsandbytes/libbitsandbytes_mps*")),
    Part("comfy-kitchen-cuda", "comfy-kitchen's CUDA kernels, as current ComfyUI uses them on NVIDIA",
         ("comfy-kitchen",), keep_only=("comfy_kitchen/backends/cuda/_C*",), optional=True),
    Part("pydantic", "lets more of ComfyUI's core node files load (none of them is used by the kit)",
         ("pydantic==2.14.4", "pydantic-core==2.50.5", "annotated-types==0.8.0", "typing-inspection==0.4.5"), optional=True),
)


@dataclass
class Manifest:
    python: str
    trees: list[dict[str, str]]  # label, version, archive
    parts: list[dict[str, str]]  # name, archive, why
    left_out: list[dict[str, str]] = field(default_factory=list)  # name, why, reason
    size: int = 0
    budget: int = 0
    created: str = ""


# ------------------------------------------------------------------ building (a CPU machine with a registry)


def tree_version(tree: pathlib.Path) -> str:
    text = (tree / "comfyui_version.py").read_text()
    return re.search(r'__version__ = "([^"]+)"', text).group(1)


def pinned(requirement: str, newest_tree: pathlib.Path) -> str:
    """A bare name gets the pin of the newest tree's requirements.txt (comfy-aimdo==0.4.13 ...)."""
    if "==" in requirement:
        return requirement
    for line in (newest_tree / "requirements.txt").read_text().splitlines():
        if re.match(rf"{re.escape(requirement)}\s*==", line.strip(), re.IGNORECASE):
            return line.split("#")[0].strip().replace(" ", "")
    raise SystemExit(f"{newest_tree}/requirements.txt pins no version of {requirement}: pin it in tests/gpu/bundle.py PARTS.")


def travelling_size(repo: pathlib.Path) -> int:
    """What the device tool sends besides carried paths: tracked and untracked-not-ignored files, and shared/."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                            capture_output=True, check=True).stdout.split(b"\0")
    files = {repo / name.decode() for name in listed if name}
    shared = repo / "shared"
    if shared.is_dir():
        files.update(path for path in shared.rglob("*") if path.is_file())
    return sum(path.lstat().st_size for path in files if path.exists())


def tree_keeps(relative: str, is_dir: bool) -> bool:
    """A ComfyUI tree without its user folders, tests and caches (custom_nodes is recreated empty on unpacking)."""
    parts = relative.split("/")
    return parts[0] not in TREE_EXCLUDES and "__pycache__" not in parts and not relative.endswith(".pyc")


def pack(source: pathlib.Path, archive: pathlib.Path, arcname: str, keep) -> int:
    """tar.xz `source` as `arcname`, with the entries `keep(relative path, is_dir)` accepts."""
    def select(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        relative = "/".join(pathlib.PurePosixPath(info.name).parts[1:])
        return info if not relative or keep(relative, info.isdir()) else None

    with tarfile.open(archive, "w:xz", preset=6) as tar:
        tar.add(source, arcname=arcname, filter=select)
    return archive.stat().st_size


def install_part(part: Part, target: pathlib.Path, python_version: str, newest_tree: pathlib.Path) -> None:
    command = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", "--no-compile",
               "--only-binary=:all:", "--implementation", "cp", "--python-version", python_version, "--target", str(target)]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    subprocess.run(command + [pinned(requirement, newest_tree) for requirement in part.requirements], check=True)


def part_keeps(part: Part):
    def keep(relative: str, is_dir: bool) -> bool:
        if "__pycache__" in relative.split("/"):
            return False
        if is_dir:
            return True
        if part.keep_only:
            return any(fnmatch.fnmatch(relative, pattern) for pattern in part.keep_only)
        return not any(fnmatch.fnmatch(relative, pattern) for pattern in part.drop)

    return keep


def build(out: pathlib.Path, trees: list[pathlib.Path], python_version: str, repo: pathlib.Path) -> Manifest:
    budget = TRANSFER_LIMIT - travelling_size(repo) - GROWTH_MARGIN
    trees = sorted(trees, key=lambda tree: tuple(int(part) for part in tree_version(tree).split(".")), reverse=True)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    manifest = Manifest(python=python_version, trees=[], parts=[], budget=budget, created=time.strftime("%Y-%m-%d %H:%M:%S"))
    with tempfile.TemporaryDirectory(prefix="loralab-bundle-") as tmp:
        for tree in trees:
            version = tree_version(tree)
            archive = f"comfyui-{version}.tar.xz"
            manifest.size += pack(tree, out / archive, f"comfyui-{version}", tree_keeps)
            manifest.trees.append({"label": version, "version": version, "archive": archive})
            print(f"[bundle] ComfyUI {version}: {manifest.size / 1024**2:.1f} MiB so far", flush=True)
        for part in PARTS:
            target = pathlib.Path(tmp) / part.name
            install_part(part, target, python_version, trees[0])
            archive = out / f"part-{part.name}.tar.xz"
            size = pack(target, archive, "site", keep=part_keeps(part))
            if manifest.size + size <= budget:
                manifest.size += size
                manifest.parts.append({"name": part.name, "archive": archive.name, "why": part.why})
                print(f"[bundle] {part.name}: {size / 1024**2:.1f} MiB", flush=True)
                continue
            archive.unlink()
            reason = f"{size / 1024**2:.1f} MiB does not fit the {(budget - manifest.size) / 1024**2:.1f} MiB left"
            if not part.optional:
                raise SystemExit(f"The GPU bundle does not fit: {part.name} ({reason}) of a {budget / 1024**2:.1f} MiB "
                                 "budget (64 MiB minus the repository). Free space in the repository or trim PARTS in tests/gpu/bundle.py.")
            manifest.left_out.append({"name": part.name, "why": part.why, "reason": reason})
            print(f"[bundle] left out {part.name}: {reason}", flush=True)
    (out / MANIFEST).write_text(json.dumps(dataclasses.asdict(manifest), indent=2))
    return manifest


# ------------------------------------------------------------------ unpacking (the GPU machine)


@dataclass(frozen=True)
class Unpacked:
    trees: list[tuple[str, pathlib.Path]]  # (label, ComfyUI root), newest first
    site: pathlib.Path  # put on PYTHONPATH
    manifest: dict


def read_manifest(bundle: pathlib.Path) -> dict | None:
    path = bundle / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def extract(archive: pathlib.Path, into: pathlib.Path) -> None:
    with tarfile.open(archive, "r:xz") as tar:
        tar.extractall(into, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(into)


def unpack(bundle: pathlib.Path, work: pathlib.Path) -> Unpacked:
    manifest = read_manifest(bundle)
    if manifest is None:
        raise FileNotFoundError(f"{bundle} has no {MANIFEST}: run tests/gpu/prepare.sh first.")
    trees = []
    for tree in manifest["trees"]:
        extract(bundle / tree["archive"], work)
        root = work / f"comfyui-{tree['version']}"
        (root / "custom_nodes").mkdir(exist_ok=True)  # current ComfyUI requires the folder
        trees.append((tree["label"], root))
    for part in manifest["parts"]:
        extract(bundle / part["archive"], work)
    return Unpacked(trees, work / "site", manifest)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    building = commands.add_parser("build")
    building.add_argument("--out", type=pathlib.Path, default=REPO / ".gpu-bundle")
    building.add_argument("--tree", type=pathlib.Path, action="append", required=True)
    building.add_argument("--python-version", default="3.12", help="the GPU machine's Python")
    args = parser.parse_args(argv)
    manifest = build(args.out, args.tree, args.python_version, REPO)
    print(f"GPU bundle {args.out}: {manifest.size / 1024**2:.1f} MiB of a {manifest.budget / 1024**2:.1f} MiB budget "
          f"(64 MiB minus {(TRANSFER_LIMIT - manifest.budget - GROWTH_MARGIN) / 1024**2:.1f} MiB of repository, "
          f"{GROWTH_MARGIN / 1024**2:.0f} MiB margin); ComfyUI {', '.join(tree['version'] for tree in manifest.trees)}; "
          f"parts {', '.join(part['name'] for part in manifest.parts)}"
          + (f"; left out {', '.join(item['name'] for item in manifest.left_out)}" if manifest.left_out else ""))


if __name__ == "__main__":
    main(sys.argv[1:])
