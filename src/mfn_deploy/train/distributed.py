"""One process or many: what this process is, and the few collectives training needs.

``torchrun`` describes the job through environment variables (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT); without them this is a single process.
GPUs use NCCL, one GPU per process (LOCAL_RANK picks it); CPUs use gloo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from mfn_deploy.errors import MfnError


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    owns_group: bool  # this module started the process group, so it ends it

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def _device(requested: str | None, local_rank: int) -> torch.device:
    if requested is None:
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise MfnError(f"--device {requested!r}: not a device; use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise MfnError(f"--device {requested!r}: training runs on cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise MfnError(f"device {requested!r} requested but torch sees no CUDA GPU")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def setup(requested_device: str | None) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1 and not dist.is_initialized():
        return Dist(0, 1, 0, _device(requested_device, 0), owns_group=False)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _device(requested_device, local_rank)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank, device, owns)


def teardown(d: Dist) -> None:
    if d.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def sum_across(d: Dist, values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over all processes (a copy; the input is untouched)."""
    total = values.detach().clone()
    if d.enabled:
        dist.all_reduce(total)
    return total


def replicas_in_sync(d: Dist, module: torch.nn.Module) -> bool | None:
    """Whether every process holds the same parameters; None for one process.

    Compares each parameter tensor's float64 sum exactly. Only parameters: DDP
    re-broadcasts BatchNorm buffers from rank 0 at each forward, so after the
    last step they legitimately differ.
    """
    if not d.enabled:
        return None
    sums = torch.stack([p.detach().double().sum() for p in module.parameters()])
    high, low = sums.clone(), sums.clone()
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    return bool(torch.equal(high, low))
