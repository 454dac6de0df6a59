"""Post-processing runs on one intra-op thread.

NMS, moment decoding and the evaluators' helpers are hundreds of small torch ops. With several
intra-op threads each op opens an OpenMP parallel region whose threads spin waiting for work; on a
machine where another process holds a core, every op then waits for a thread the kernel has not
scheduled (measured: 2D-TAN decoding 2.4 ms at 1 thread, 64 ms at 2 threads beside a busy process).
One thread is as fast as several on these sizes and never waits, so `single_threaded` pins torch to
one thread for the call on the CPU and restores the caller's setting after.
`POSTPROCESS_THREADS = None` turns this off (the benchmarks use it to measure the difference).
"""
from __future__ import annotations

import functools
from typing import Callable, TypeVar

import torch

F = TypeVar("F", bound=Callable)
POSTPROCESS_THREADS: int | None = 1


def single_threaded(fn: F) -> F:
    """Run `fn` with torch limited to POSTPROCESS_THREADS intra-op threads.

    The intra-op thread count is OpenMP's, kept per calling thread, so concurrent callers (a server's
    worker threads) neither see nor undo each other's setting; nested calls change nothing.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        limit, before = POSTPROCESS_THREADS, torch.get_num_threads()
        if limit is None or before <= limit:
            return fn(*args, **kwargs)
        torch.set_num_threads(limit)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(before)

    return wrapper  # type: ignore[return-value]
