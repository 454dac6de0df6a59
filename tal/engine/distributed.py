"""The one place that knows about torch.distributed: process group, DDP wrapping, rank-0 duties.

`tal train` started by `torchrun --nproc-per-node N` finds RANK / WORLD_SIZE / LOCAL_RANK in the
environment, joins a process group (gloo on the CPU, nccl on CUDA) and wraps the head in
DistributedDataParallel. train.batch_size is the *global* batch: each process takes 1/N of every batch
(tal.tasks.base.global_batches) and DDP averages the gradients, so N processes take the same steps as
one process with the same batch size (up to float rounding and losses normalised per process).
Only rank 0 evaluates, logs and writes files; the others wait at a barrier.
"""
from __future__ import annotations

from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from tal.distributed import DistContext, context_from_env, join_process_group, leave_process_group, resolve_device


def setup(device: str) -> tuple[DistContext, torch.device]:
    """Join the process group when run under torchrun; returns the context and this process's device."""
    ctx = context_from_env()
    dev = torch.device(resolve_device(device, ctx))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if ctx.active and not dist.is_initialized():
        # rank 0 evaluates alone while the others wait: allow long evaluations before a collective times out
        join_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=timedelta(hours=2))
    return ctx, dev


def wrap(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """DDP around the model when distributed (unused parameters allowed: heads skip modules per batch)."""
    if not ctx.active:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def barrier(ctx: DistContext) -> None:
    if ctx.active:
        dist.barrier()


def broadcast(value, ctx: DistContext):
    """Rank 0's picklable `value` on every rank."""
    if not ctx.active:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_over_ranks(values: dict[str, float], ctx: DistContext, device: torch.device) -> dict[str, float]:
    """The mean over processes of per-process numbers (epoch losses for the log)."""
    if not ctx.active or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)  # nccl needs CUDA tensors
    dist.all_reduce(tensor)
    return {k: float(v) / ctx.world_size for k, v in zip(keys, tensor.tolist())}


def teardown(ctx: DistContext, clean: bool) -> None:
    """Leave the process group (`leave_process_group`: a barrier first after a clean run)."""
    if ctx.active:
        leave_process_group(clean)
