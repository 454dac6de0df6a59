"""Helpers shared by the benchmark scripts of this folder (run as files, so this folder is on sys.path)."""
from __future__ import annotations

import statistics
import time
from typing import Callable, TypeVar

T = TypeVar("T")


def best_of(runs: int, fn: Callable[[], T]) -> tuple[float, T]:
    """Smallest wall time of `runs` (>= 1) calls, and the last call's result."""
    if runs < 1:
        raise ValueError(f"best_of needs runs >= 1, got {runs}")
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def median_of(runs: int, fn: Callable[[], object], warmup: int = 1) -> float:
    """Median wall time of `runs` (>= 1) calls after `warmup` untimed ones."""
    if runs < 1:
        raise ValueError(f"median_of needs runs >= 1, got {runs}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
