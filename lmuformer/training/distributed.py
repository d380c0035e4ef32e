"""DistributedDataParallel helpers: process group set-up, collectives over a few counters,
BatchNorm statistics from rank 0, evaluation shards.  A single process (``WORLD_SIZE`` unset
or 1) skips every collective."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Subset


@dataclass
class Dist:
    """This process in a (possibly single-process) run: rank, world size, local world size."""

    rank: int = 0
    world: int = 1
    local_world: int = 1
    created: bool = False  # this call initialised the process group
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # collectives' tensors

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Dist:
    """This process's rank and world from torchrun's environment; initialises the process group
    (gloo on CPU, nccl on CUDA) when ``WORLD_SIZE`` > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    created = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        created = True
    return Dist(dist.get_rank(), dist.get_world_size(),
                 int(os.environ.get("LOCAL_WORLD_SIZE", str(world))), created,
                 _collective_device(str(dist.get_backend()), device))


def _collective_device(backend: str, device: torch.device) -> torch.device:
    """Where a collective's tensors must live: this rank's GPU for NCCL (it rejects CPU
    tensors), the CPU for gloo."""
    if backend == "nccl":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        return device if device.index is not None else torch.device("cuda", local)
    return torch.device("cpu")


def all_sum(values: list[float], d: Dist) -> list[float]:
    """Element-wise sum over ranks of a few float64 counters (on ``d.device``)."""
    if d.world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return t.cpu().tolist()


def barrier(d: Dist) -> None:
    """Wait for every rank (no-op in a single process)."""
    if d.world > 1:
        dist.barrier()


def sync_batchnorm_stats(model: nn.Module, d: Dist) -> None:
    """Give every rank rank 0's BatchNorm running statistics (each rank updated its own copy
    in the last forward), so that all ranks evaluate the same model."""
    if d.world == 1:
        return
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            for b in m.buffers():
                dist.broadcast(b, 0)


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def shard(dataset: Any, d: Dist) -> Any:
    """Rank r's slice r::world of an evaluation set (no padding, so counts sum exactly)."""
    return dataset if d.world == 1 else Subset(dataset, range(d.rank, len(dataset), d.world))
