"""Arguments several verbs share, so they mean the same everywhere: --device, --threads, --weights."""
from __future__ import annotations

import argparse

from tal.errors import TalInputError

DEVICE_HELP = "cpu, cuda, cuda:N or auto (default auto: cuda when available, else cpu)"


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", metavar="D", help=DEVICE_HELP)


def add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, metavar="N",
                        help="torch CPU threads (default: torch's choice; 1 is often fastest for small heads "
                             "or on a busy machine)")


def add_weights(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", metavar="PATH",
                        help="backbone weights for video files, when the file the features were made with is not "
                             "where the checkpoint recorded it (its sha256 must match); 'random' for random weights")


def count(n: int, noun: str) -> str:
    """ "1 video", "3 videos" """
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def device_of(args: argparse.Namespace) -> str:
    """The --device value with "auto" resolved (torchrun ranks map "cuda" to their own GPU later)."""
    from tal.distributed import DistContext, resolve_device

    return resolve_device(getattr(args, "device", "auto") or "auto", DistContext())


def apply_threads(args: argparse.Namespace) -> None:
    count = getattr(args, "threads", None)
    if count is None:
        return
    if count < 1:
        raise TalInputError(f"--threads must be >= 1, got {count}")
    import torch

    torch.set_num_threads(count)
