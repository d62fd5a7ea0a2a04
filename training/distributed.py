"""Multi-process training under torchrun: the process group, the rank's device and the few collectives train() uses.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK (and MASTER_ADDR/MASTER_PORT) for every process it starts; without them,
or with WORLD_SIZE=1, everything here is a no-op and training runs exactly as a plain single process.
Backend: nccl when CUDA is available (one GPU per process, cuda:LOCAL_RANK), else gloo on the CPU.
See docs/distributed-training.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1  # processes on this node (torchrun's LOCAL_WORLD_SIZE)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_reduce_mean(self, value: float) -> float:
        """The mean of `value` over all ranks (the value itself in a single process)."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's `flag` on every rank (e.g. its early-stopping decision)."""
        if not self.enabled:
            return flag
        t = torch.tensor([int(flag)], dtype=torch.int64, device=self.device)
        dist.broadcast(t, src=0)
        return bool(t.item())

    def shard(self, indices: list[T]) -> list[T]:
        """This rank's share of an epoch's example order, which must be the same on every rank (same seed): the
        strided slice indices[rank::world], after padding the order by wrapping around to a multiple of the world
        size (as torch's DistributedSampler does), so that every rank runs the same number of steps. With a per-rank
        batch of batch_size / world, step s of all ranks together covers exactly the single process's step s."""
        if not self.enabled or not indices:
            return indices
        padded = list(indices) + list(indices[: (-len(indices)) % self.world])
        return padded[self.rank :: self.world]


def init_from_env() -> DistContext:
    """The context torchrun's environment describes; initializes the default process group once."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:  # a single process: the GPU when there is one, else the CPU
        return DistContext(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if torch.cuda.is_available():
        device, backend = torch.device("cuda", local_rank), "nccl"
        torch.cuda.set_device(device)
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistContext(rank, world, local_rank, local_world, device)


def cleanup() -> None:
    """Tear down the process group (no-op when none was started)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
