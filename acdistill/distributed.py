"""Data-parallel training across the processes `torchrun` starts (gloo on CPU, nccl on GPU), through torch's
DistributedDataParallel.

Every rank draws the same global batch (the data order is a function of seed and epoch) and trains on its own
contiguous slice. DDP wraps the student together with the method's own trainable parts (`TrainedParts`), and its
forward is the method's loss: the loss's backward then all-reduces the gradients in buckets, overlapped with the
backward pass, as DDP does. The training attack's passes run through the unwrapped student, outside DDP's forward:
they take input gradients only, which DDP's reducer neither expects nor sees.

Batch norm normalizes each rank's slice by its own statistics, unless `sync_bn` (CUDA only: torch's SyncBatchNorm
does not run on CPU tensors) normalizes over the whole global batch; so a run over N ranks equals a single-process
run over the same global batch exactly only for models without batch norm, or with sync_bn.
"""

from __future__ import annotations

import atexit
import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from acdistill.data import Batch
from acdistill.errors import AcdistillError, warn


class TrainedParts(nn.Module):
    """The student and the method's own trainable parts (its heads) as one module whose forward is the method's loss:
    what DDP wraps. The teacher is not part of it (the method holds it as a plain attribute): it stays frozen."""

    def __init__(self, student: nn.Module, method: nn.Module):
        super().__init__()
        self.student, self.method = student, method

    def forward(self, batch: Batch, x_adv: torch.Tensor | None) -> dict[str, torch.Tensor]:
        return self.method.loss(batch, x_adv)


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: Batch) -> Batch:
        """This rank's contiguous slice of the global batch."""
        if self.world == 1:
            return batch
        rows = torch.tensor_split(torch.arange(len(batch)), self.world)[self.rank]
        return Batch(batch.x[rows], batch.y[rows], batch.index[rows])

    def gather(self, rows: torch.Tensor, *, grad: bool = False) -> tuple[torch.Tensor, int]:
        """The rows of every rank, in rank order, and where this rank's rows start. Ranks may hold different
        numbers of rows (the last batch of an epoch). With grad, gradients flow back to each rank's own rows."""
        if self.world == 1:
            return rows, 0
        sizes = [torch.zeros(1, dtype=torch.long, device=rows.device) for _ in range(self.world)]
        dist.all_gather(sizes, torch.tensor([len(rows)], device=rows.device))
        sizes = [int(s) for s in sizes]
        padded = torch.cat([rows, rows.new_zeros(max(sizes) - len(rows), *rows.shape[1:])])
        if grad:
            with warnings.catch_warnings():  # deprecated in favour of a private module; still the public autograd one
                warnings.simplefilter("ignore", FutureWarning)
                parts = torch.distributed.nn.functional.all_gather(padded)
        else:
            parts = [torch.empty_like(padded) for _ in range(self.world)]
            dist.all_gather(parts, padded.detach())
        return torch.cat([part[:size] for part, size in zip(parts, sizes)]), sum(sizes[: self.rank])

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Summed over the ranks. nccl reduces GPU tensors only, so host values (the trainer's counts) go there and
        back."""
        if self.world == 1:
            return values
        on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else values.device
        reduced = values.to(on)
        dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
        return reduced.to(values.device)

    def data_parallel(self, student: nn.Module, method: nn.Module, device: torch.device) -> DistributedDataParallel:
        """DDP over the student and the method's parts, from rank 0's weights and buffers (broadcast once, here).
        Buffers are not broadcast again at each step: batch-norm statistics stay each rank's own, and a method's
        banks are kept identical by its own all-gathers."""
        return DistributedDataParallel(
            TrainedParts(student, method),
            device_ids=[device.index] if device.type == "cuda" else None,
            forward_sync_buffers=False,
        )

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def check_processes(per_node: int, device: torch.device) -> None:
    """One process per GPU; on CPU, more processes than cores only compete for them (a warning, not an error)."""
    if device.type == "cuda" and per_node > torch.cuda.device_count():
        raise AcdistillError(
            f"torchrun started {per_node} processes on this machine but it has "
            f"{torch.cuda.device_count()} GPUs; use --nproc-per-node {torch.cuda.device_count()}"
        )
    if device.type not in ("cuda", "cpu"):
        raise AcdistillError(f"torchrun training runs on cuda or cpu, not {device.type}")
    cores = os.cpu_count() or 1
    if device.type == "cpu" and per_node > cores:
        warn(f"torchrun started {per_node} processes on {cores} CPU cores; they will slow each other down")


def from_env(device: torch.device) -> tuple[Ranks, torch.device]:
    """The ranks torchrun started (one process per device on GPUs), initializing the process group once."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Ranks(), device
    check_processes(int(os.environ.get("LOCAL_WORLD_SIZE", world)), device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        # Torn down before the interpreter's exit: a rank that finishes first (only rank 0 writes) and exits with
        # the group alive can abort in gloo's destructor ("terminate called without an active exception").
        atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
    return Ranks(dist.get_rank(), dist.get_world_size()), device
