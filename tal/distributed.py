"""Who this process is under torchrun (RANK / WORLD_SIZE / LOCAL_RANK) and which device it uses.

Shared by feature extraction (videos sharded over ranks) and training (`tal.engine.distributed`,
which adds the process group, DDP and the collectives).
"""
from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from tal.errors import TalInputError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context_from_env() -> DistContext:
    """RANK / WORLD_SIZE / LOCAL_RANK as torchrun sets them (absent: one process)."""
    try:
        return DistContext(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                           int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError:
        raise TalInputError("RANK / WORLD_SIZE / LOCAL_RANK must be integers") from None


def join_process_group(backend: str, **kwargs) -> None:
    """init_process_group, with torch._dynamo imported first so that `leave_process_group` can end it.

    Imported after the group exists (DistributedDataParallel imports it), torch._dynamo keeps a
    reference to the group, so destroy_process_group leaves gloo's worker threads running. A thread
    that frees a finished collective's tensors after the interpreter has begun to shut down takes the
    GIL, is killed inside a C++ destructor, and the process aborts ("terminate called without an active
    exception"; about 1 run in 5 of a 2-process run that exits right after a broadcast). Imported
    first, the group is really destroyed and its threads joined.
    """
    import torch._dynamo  # noqa: F401

    dist.init_process_group(backend, **kwargs)


def leave_process_group(clean: bool) -> None:
    """Destroy the default process group (joined by `join_process_group`), its worker threads with it.

    After a clean run the ranks pass a barrier first, and whatever still holds the group in a reference
    cycle (DistributedDataParallel) is collected. After an error the other ranks may never reach a
    barrier, so none is passed then.
    """
    if not dist.is_available() or not dist.is_initialized():
        return
    if clean:
        dist.barrier()
        gc.collect()
    dist.destroy_process_group()


def resolve_device(device: str, ctx: DistContext) -> str:
    """"auto" -> cuda when available; under torchrun each process takes cuda:LOCAL_RANK; no CUDA -> clear error."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and ctx.active:
        device = f"cuda:{ctx.local_rank}"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TalInputError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    return device
