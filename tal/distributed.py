"""Who this process is under torchrun (RANK / WORLD_SIZE / LOCAL_RANK) and which device it uses.

Shared by feature extraction (videos sharded over ranks) and training (`tal.engine.distributed`,
which adds the process group, DDP and the collectives).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

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


def resolve_device(device: str, ctx: DistContext) -> str:
    """"auto" -> cuda when available; under torchrun each process takes cuda:LOCAL_RANK; no CUDA -> clear error."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and ctx.active:
        device = f"cuda:{ctx.local_rank}"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TalInputError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    return device
