"""Temporal segment geometry on whole arrays: tIoU matrices and friends.

Every function takes numpy arrays or torch tensors of shape [..., 2] (start, end) and returns the
same kind, so the evaluators (numpy, float64) and NMS (torch, on the input's device) share one
definition. The arithmetic follows the ActivityNet evaluator's `segment_iou` operation for
operation, so results are bit-identical to it; where the union is zero (two zero-length segments)
the tIoU is 0 instead of NaN.
"""
from __future__ import annotations

from typing import TypeVar

import numpy as np

Array = TypeVar("Array")


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def _maximum(a, b):
    if _is_torch(a):
        import torch

        return torch.maximum(a, b)
    return np.maximum(a, b)


def _minimum(a, b):
    if _is_torch(a):
        import torch

        return torch.minimum(a, b)
    return np.minimum(a, b)


def _safe_divide(num, den):
    if _is_torch(num):
        import torch

        return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(num))
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.result_type(num, den, np.float64))
    np.divide(num, den, out=out, where=den > 0)
    return out


def intersection(a: Array, b: Array) -> Array:
    """Pairwise overlap length: a [N, 2], b [M, 2] -> [N, M]."""
    start = _maximum(a[:, None, 0], b[None, :, 0])
    end = _minimum(a[:, None, 1], b[None, :, 1])
    return (end - start).clip(min=0)


def pairwise_tiou(a: Array, b: Array) -> Array:
    """Temporal IoU matrix: a [N, 2], b [M, 2] -> [N, M]."""
    inter = intersection(a, b)
    union = (b[None, :, 1] - b[None, :, 0]) + (a[:, None, 1] - a[:, None, 0]) - inter
    return _safe_divide(inter, union)


def tiou(a: Array, b: Array) -> Array:
    """Element-wise temporal IoU of two aligned sets of segments: [..., 2] x [..., 2] -> [...]."""
    inter = (_minimum(a[..., 1], b[..., 1]) - _maximum(a[..., 0], b[..., 0])).clip(min=0)
    union = (b[..., 1] - b[..., 0]) + (a[..., 1] - a[..., 0]) - inter
    return _safe_divide(inter, union)


def pairwise_iop(proposals: Array, gt: Array) -> Array:
    """Intersection over proposal length: proposals [N, 2], gt [M, 2] -> [N, M]."""
    inter = intersection(proposals, gt)
    return _safe_divide(inter, (proposals[:, 1] - proposals[:, 0])[:, None])
