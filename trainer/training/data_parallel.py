"""Data-parallel training over torch.distributed, for runs started by `accelerate launch` or `torchrun`.

Each process trains a slice of every global batch (batch_size x processes samples, planned as one process would
plan a batch of that size) and the adapter gradients are summed with all_reduce before each optimizer step. Each
process scales its loss by the global batch's sample count, so the sum is the gradient of the global batch's mean
loss whatever the slices hold (a bucket's last short batch leaves some processes with fewer samples, or none).
Only the main process (rank 0) writes files; the launcher's environment (RANK, LOCAL_RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT) says who is who.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import SettingsError
from .loop import DataParallel, SingleProcess

# How long a process waits for the others (to join, or at a collective) before failing instead of hanging: long
# enough for the main process to render epoch samples while the others wait at the barrier.
TIMEOUT = datetime.timedelta(minutes=30)
LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Launch:
    """This process's place in a launch, as the launcher's environment gives it."""

    rank: int
    local_rank: int
    world_size: int


def launched(environment: dict[str, str] | None = None) -> Launch | None:
    """The launch this process belongs to; None for a single process (no launcher, or one process)."""
    environment = os.environ if environment is None else environment
    if int(environment.get("WORLD_SIZE", "1")) <= 1:
        return None
    missing = [name for name in LAUNCH_VARIABLES if not environment.get(name)]
    if missing:
        raise SettingsError(f"WORLD_SIZE={environment['WORLD_SIZE']} but {', '.join(missing)} not set: start the "
                            "processes with accelerate launch or torchrun, which set them all.")
    return Launch(int(environment["RANK"]), int(environment["LOCAL_RANK"]), int(environment["WORLD_SIZE"]))


def join(launch: Launch, device: torch.device) -> None:
    """Join the launch's process group: NCCL between GPUs, gloo on the CPU; fails after TIMEOUT, never hangs."""
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://", rank=launch.rank,
                            world_size=launch.world_size, timeout=TIMEOUT,
                            **({"device_id": device} if device.type == "cuda" else {}))


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def current() -> DataParallel:
    """The process group this process joined, or SingleProcess (a ComfyUI server, a one-process command)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return ProcessGroup(dist.get_rank(), dist.get_world_size())
    return SingleProcess()


class ProcessGroup:
    """The DataParallel of a joined torch.distributed group."""

    def __init__(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = rank, world_size
        self.is_main = rank == 0
        # NCCL reduces tensors on this process's GPU, gloo on the CPU.
        self.device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")

    def shard(self, batch_size: int) -> range:
        """This process's contiguous slice of a global batch's positions; sizes differ by one at most."""
        share, extra = divmod(batch_size, self.world_size)
        start = self.rank * share + min(self.rank, extra)
        return range(start, start + share + (self.rank < extra))

    def reduce_gradients(self, parameters: list[torch.nn.Parameter]) -> None:
        """Sum the gradients over processes in one all_reduce (a process without samples adds zeros)."""
        if not parameters:
            return
        grads = [parameter.grad if parameter.grad is not None else torch.zeros_like(parameter) for parameter in parameters]
        flat = torch.cat([grad.reshape(-1) for grad in grads]).to(self.device)
        dist.all_reduce(flat)
        offset = 0
        for parameter in parameters:
            count = parameter.numel()
            parameter.grad = flat[offset:offset + count].view_as(parameter).to(parameter.device, parameter.dtype)
            offset += count

    def total(self, value: float) -> float:
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return float(tensor.item())

    def barrier(self) -> None:
        dist.barrier()
