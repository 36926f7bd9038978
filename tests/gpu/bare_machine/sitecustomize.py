"""Makes this Python behave like the GPU machine's: modules of installed distributions it lacks cannot be
imported (unless found on PYTHONPATH, where the kit puts the bundle's packages and its stand-ins).

Active only when this folder is on PYTHONPATH; LORALAB_BARE_ALLOWED lists files of allowed distribution
names (one per line, `#` comments). tests/test_gpu_kit.py runs the smoke run this way, so a package the kit
needs but neither the machine nor the bundle has fails in CI, naming the module.
"""
import importlib.abc
import importlib.machinery
import importlib.metadata
import os
import re
import sys


def _normalised(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _allowed():
    names = set()
    for path in filter(None, os.environ.get("LORALAB_BARE_ALLOWED", "").split(os.pathsep)):
        with open(path, encoding="utf-8") as stream:
            for line in stream:
                line = line.split("#")[0].strip()
                if line:
                    names.add(_normalised(re.split(r"[=<>~! ]", line)[0]))
    return names


class _BareMachine(importlib.abc.MetaPathFinder):
    def __init__(self, blocked, carried):
        self.blocked = blocked
        self.carried = carried

    def find_spec(self, name, path=None, target=None):
        if path is not None or name not in self.blocked:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, self.carried)
        if spec is None:
            raise ModuleNotFoundError(f"No module named {name!r} (not on the simulated GPU machine)", name=name)
        return spec


_names = _allowed()
_blocked = {module for module, distributions in importlib.metadata.packages_distributions().items()
            if not any(_normalised(distribution) in _names for distribution in distributions)}
_carried = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep)
            if entry and os.path.abspath(entry) != os.path.dirname(os.path.abspath(__file__))]
sys.meta_path.insert(0, _BareMachine(_blocked, _carried))
