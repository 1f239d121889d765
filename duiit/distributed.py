"""Data-parallel training over several processes (torchrun): one process per GPU, or gloo on CPUs.

Each process samples its own batches; DistributedDataParallel averages gradients. A step calls each
wrapped module once (the translator pair runs as one module), and frozen modules are used unwrapped,
so DDP sees exactly one forward and one backward per step.
"""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistributedContext:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return DistributedContext(dist.get_rank(), dist.get_world_size())


def wrap(module: torch.nn.Module, context: DistributedContext, device: torch.device):
    if not context.enabled:
        return module
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return module.module if isinstance(module, DistributedDataParallel) else module


def any_rank(flag: bool, context: DistributedContext, device: torch.device) -> bool:
    """True on every rank when `flag` is true on any (so all ranks stop at the same step)."""
    if not context.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def gather_to_main(value, context: DistributedContext):
    """Every rank's `value` (picklable), as a list in rank order on the main rank; None on the others."""
    if not context.enabled:
        return [value]
    gathered = [None] * context.world_size if context.is_main else None
    dist.gather_object(value, gathered, dst=0)
    return gathered


def finish(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
