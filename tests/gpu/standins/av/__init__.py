"""Import-only stand-in for PyAV on the GPU check machine, put on the path only where `import av` fails.

ComfyUI imports PyAV at startup for its video types; the kit never decodes video, and PyAV's 36 MB wheel
does not fit the device's 64 MiB transfer limit. Every name resolves, so imports succeed; using one raises.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types

MESSAGE = "PyAV is not installed on this machine: the GPU check kit carries only an import stand-in for it."


class _Missing(type):
    """A class for every PyAV name: usable in annotations and isinstance checks, fails when called."""

    def __call__(cls, *args, **kwargs):
        raise RuntimeError(f"{cls.__qualname__}: {MESSAGE}")

    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _missing(f"{cls.__qualname__}.{name}")


def _missing(qualname: str) -> type:
    return _Missing(qualname.rpartition(".")[2], (), {"__qualname__": qualname, "__module__": "av"})


def _module_getattr(module_name: str):
    def __getattr__(name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _missing(f"{module_name}.{name}")

    return __getattr__


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Makes every `av.<anything>` submodule a stand-in module too."""

    def find_spec(self, name, path=None, target=None):
        if name.startswith("av."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__getattr__ = _module_getattr(spec.name)
        return module

    def exec_module(self, module):
        pass


__version__ = "0+loralab.standin"
__getattr__ = _module_getattr("av")
sys.meta_path.append(_Finder())
