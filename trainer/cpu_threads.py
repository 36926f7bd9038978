"""Torch's CPU thread count fitted to the cores other processes leave free, while LoRA Lab trains or samples on a CPU.

Why: torch starts one OpenMP worker per core, and every parallel operation waits for all of its workers. When
other processes keep the cores busy, the workers are descheduled in turn and each of a small model's many tiny
operations waits for a time slice: on a 2-core machine at load average 5 the toy-world demo took 36-48 minutes
instead of about 32 s. With no more workers than free cores, a busy machine slows the work in proportion.

The count is fitted when a training run or a sweep starts, from the 1-minute load average less this process's own
recent CPU use, and put back afterwards. Nothing changes when a GPU does the work, or when the user chose a count
with OMP_NUM_THREADS. Results can differ in the last bits between thread counts (the order of parallel sums);
set OMP_NUM_THREADS to pin it when runs must match bit for bit across machines or loads.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from typing import Callable, Iterator, TypeVar

import torch

log = logging.getLogger(__name__)
USER_SETTING = "OMP_NUM_THREADS"
DEFAULT_THREADS = torch.get_num_threads()  # torch's own choice at start-up: never exceeded

Function = TypeVar("Function", bound=Callable)


def fitted_thread_count(cores: int, load_average: float, own_load: float, most: int = DEFAULT_THREADS) -> int:
    """The cores that other processes leave free (rounded), at least 1 and at most `most`.

    `own_load` is the part of the load average this process caused itself (its recent CPU use, in cores).
    """
    others = max(0.0, load_average - own_load)
    return max(1, min(most, cores, round(cores - others)))


class OwnCpuUse:
    """This process's CPU use, in cores, since the previous reading (the first covers the time since start-up)."""

    def __init__(self) -> None:
        self._wall, self._cpu = time.monotonic(), time.process_time()

    def cores_used(self) -> float:
        wall, cpu = time.monotonic(), time.process_time()
        used = (cpu - self._cpu) / (wall - self._wall) if wall > self._wall else 0.0
        self._wall, self._cpu = wall, cpu
        return used


_own_use = OwnCpuUse()


def _available_cores() -> int:
    """Cores this process may run on (a container's CPU set, where the system tells it), else all of them."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@contextlib.contextmanager
def threads_fitted_to_load(device: torch.device) -> Iterator[int]:
    """Within the block, torch uses as many CPU threads as the machine has free cores; yields that count."""
    previous = torch.get_num_threads()
    if device.type != "cpu" or os.environ.get(USER_SETTING) or not hasattr(os, "getloadavg"):
        yield previous
        return
    cores, load_average = _available_cores(), os.getloadavg()[0]
    count = fitted_thread_count(cores, load_average, _own_use.cores_used())
    log.info("LoRA Lab: %d CPU thread(s) for this run (%d cores, load average %.1f; %s=N sets the count)",
             count, cores, load_average, USER_SETTING)
    torch.set_num_threads(count)
    try:
        yield count
    finally:
        torch.set_num_threads(previous)


def fits_threads_to_load(device: Callable[[], torch.device]) -> Callable[[Function], Function]:
    """Decorator for a node's function: it runs inside `threads_fitted_to_load(device())`."""

    def decorate(function: Function) -> Function:
        @functools.wraps(function)
        def run(*args, **kwargs):
            with threads_fitted_to_load(device()):
                return function(*args, **kwargs)

        return run  # type: ignore[return-value]

    return decorate
