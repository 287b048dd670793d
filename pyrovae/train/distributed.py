"""Data-parallel training on PyTorch's own engine (``torch.distributed``), launched by
``torchrun``. Every process holds the whole pair; each global minibatch of B rows is split
across the W processes (process r takes rows r, r + W, ...), each computes the N/B-scaled
loss of its rows, and the gradients are summed with ``all_reduce`` before the optimizer
step, so every process takes the step a single process would take on the whole global
batch (up to float summation order) and the parameters stay identical everywhere.

The collective is the one DistributedDataParallel uses (``all_reduce`` of the gradients,
bucketed there, one flat buffer here), applied to the tensors the Pyro pair registers,
so it works for any pair, ``nn.Module`` or plain functions. gloo on CPU, NCCL on CUDA.
Randomness: the shuffle comes from a generator seeded with (seed, epoch), the same on
every process; Bernoulli draws and z noise from each process's global RNG, reseeded at
every epoch with (seed, epoch, rank), so a resumed run repeats an uninterrupted one.
Checkpoints are written by process 0 only.

A process group this module initialises is destroyed at interpreter exit (an ``atexit``
handler), while Python is still whole: left to the interpreter's finalisation, gloo's worker
threads can outlive it and the process ends in SIGABRT ("terminate called without an active
exception") after its work is done. A group the caller initialised is the caller's to destroy.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pyrovae.errors import PyrovaeError

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class DistributedContext:
    rank: int
    world_size: int
    local_rank: int

    @classmethod
    def from_environment(cls, device: str) -> DistributedContext:
        """Join the process group torchrun set up (initialising it if needed)."""
        missing = [v for v in TORCHRUN_VARIABLES if v not in os.environ]
        if missing and not dist.is_initialized():
            raise PyrovaeError(
                f"distributed training needs torchrun's environment (missing {missing}); "
                "launch with: torchrun --nproc-per-node N -m pyrovae.cli train --distributed ..."
            )
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
            atexit.register(destroy_process_group)
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self) -> tuple[int, int]:
        return self.rank, self.world_size

    def shuffle_generator(self, seed: int, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed * 100_003 + epoch)

    def reseed(self, seed: int, epoch: int) -> None:
        """Per-process noise for this epoch: different across processes, reproducible."""
        torch.manual_seed((seed * 100_003 + epoch) * 1_009 + self.rank)

    def reduce_gradients(self, params: list[torch.Tensor], loss: torch.Tensor) -> torch.Tensor:
        """Sum every gradient and the loss over the processes, in one flat all_reduce."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads] + [loss.detach().reshape(1)])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p, g in zip(params, grads, strict=True):
            p.grad = flat[offset : offset + g.numel()].view_as(g).clone()
            offset += g.numel()
        return flat[-1]

    def mean(self, value: float, device: str) -> float:
        """The mean of a float over the processes (every process gets the same number)."""
        tensor = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return float(tensor.item()) / self.world_size

    def barrier(self) -> None:
        dist.barrier()


def destroy_process_group() -> None:
    """Destroy the default process group if one is still up (a no-op otherwise)."""
    if dist.is_initialized():
        dist.destroy_process_group()
