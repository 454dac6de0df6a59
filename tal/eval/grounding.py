"""Grounding (moment retrieval) R@n,IoU=m and mIoU by the 2D-TAN protocol (microsoft/2D-TAN `lib/core/eval.py`).

For each query, its ranked moments go through greedy NMS (`tal.ops.ranked_nms`: a moment is dropped
when its overlap with an already kept one is above `nms_threshold`, or undefined, as in 2D-TAN, also at
thresholds >= 1; `None`: no NMS, for moments a decoder has already suppressed); the first `n` kept
moments are a hit at `m` when one has IoU > m with the ground truth (>= with `iou_ge`).
mIoU is the mean IoU of the top-1 moment. 2D-TAN's own IoU is used for that (union = the hull of
the two segments), with 0 where 2D-TAN would get 0/0 = NaN; a query without moments scores 0.

Vectorized over queries: moments are padded to [Q, K, 2], and NMS runs one round per kept rank
(at most max(n) rounds), each suppressing on all queries at once. tal's grounding heads run this NMS
once, in their decoder, on the full ranked list; their training runs then score the kept moments with
`nms_threshold=None`, so R@5 always sees five moments when five survive.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from tal.datasets.grounding import read_grounding_jsonl
from tal.datasets.types import GroundingQuery
from tal.errors import TalInputError
from tal.eval.predictions import GroundingPrediction, read_grounding_predictions
from tal.ops.ranked_nms import ranked_nms

DEFAULT_RECALL = (1, 5)
DEFAULT_IOU = (0.3, 0.5, 0.7)


@dataclass
class GroundingResult:
    """Recall at each (n, m) and mean IoU of the top-1 moment."""

    recalls: tuple[int, ...]  # [R]
    ious: tuple[float, ...]  # [M]
    recall: np.ndarray  # [R, M] fraction of queries with a hit in the first n kept moments
    mean_iou: float
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        """`{"R@1,IoU=0.5": x, ..., "mIoU": x}`, keys by n then by m."""
        out = {f"R@{n},IoU={m:g}": float(self.recall[i, j])
               for i, n in enumerate(self.recalls) for j, m in enumerate(self.ious)}
        out["mIoU"] = self.mean_iou
        return out


def evaluate_grounding(moments: Sequence[np.ndarray], ground_truth: np.ndarray,
                       recalls: Sequence[int] = DEFAULT_RECALL, ious: Sequence[float] = DEFAULT_IOU,
                       nms_threshold: float | None = 0.5, iou_ge: bool = False) -> GroundingResult:
    """Score ranked moments (one [K_q, 2] array per query, best first) against ground truth [Q, 2]."""
    recalls = tuple(int(n) for n in recalls)
    ious = tuple(float(m) for m in ious)
    if not recalls or min(recalls) < 1:
        raise TalInputError(f"recall ranks must be integers >= 1, got {list(recalls)}")
    ground_truth = np.asarray(ground_truth, dtype=np.float64).reshape(-1, 2)  # [Q, 2]
    if len(moments) != len(ground_truth):
        raise TalInputError(f"{len(moments)} queries with moments but {len(ground_truth)} ground-truth segments")
    if not len(moments):
        raise TalInputError("no queries to evaluate")
    num_queries = len(moments)
    max_moments = max(1, max(len(m) for m in moments))
    padded = np.zeros((num_queries, max_moments, 2))  # [Q, K, 2]
    valid = np.zeros((num_queries, max_moments), dtype=bool)  # [Q, K]
    for q, m in enumerate(moments):
        padded[q, :len(m)] = m
        valid[q, :len(m)] = True

    kept = ranked_nms(torch.from_numpy(padded), torch.from_numpy(valid), nms_threshold, max(recalls)).numpy()  # [Q, N]
    kept_segments = np.take_along_axis(padded, kept.clip(min=0)[:, :, None], axis=1)  # [Q, N, 2]
    overlap = np.where(kept >= 0, _hull_iou(kept_segments, ground_truth[:, None, :]), 0.0)  # [Q, N]
    recall = np.empty((len(recalls), len(ious)))
    for j, m in enumerate(ious):
        hit = (overlap >= m) if iou_ge else (overlap > m)  # [Q, N]
        hit_rank = np.where(hit.any(axis=1), hit.argmax(axis=1), np.iinfo(np.int64).max)  # [Q]
        for i, n in enumerate(recalls):
            recall[i, j] = np.mean(hit_rank < n)
    mean_iou = float(np.mean(overlap[:, 0]))
    notes = []
    empty = int((~valid.any(axis=1)).sum())
    if empty:
        notes.append(f"{empty} queries have no moments: they count as misses with IoU 0")
    reversed_moments = int(((padded[:, :, 1] < padded[:, :, 0]) & valid).sum())
    if reversed_moments:
        notes.append(f"{reversed_moments} moments have end < start: they overlap nothing (as in 2D-TAN)")
    return GroundingResult(recalls, ious, recall, mean_iou, notes)


def _hull_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """2D-TAN's IoU of broadcast segments [..., 2]: union is the hull max(end) - min(start); 0/0 -> 0."""
    inter = np.maximum(0.0, np.minimum(a[..., 1], b[..., 1]) - np.maximum(a[..., 0], b[..., 0]))
    union = np.maximum(0.0, np.maximum(a[..., 1], b[..., 1]) - np.minimum(a[..., 0], b[..., 0]))
    out = np.zeros(np.broadcast(inter, union).shape)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def match_ground_truth(predictions: list[GroundingPrediction], ground_truth: list[GroundingQuery],
                       pred_source: str, gt_source: str) -> np.ndarray:
    """Ground-truth segments [Q, 2] for the prediction lines.

    Line by line when both files list the same (video, query) sequence; otherwise by (video, query),
    which must be unique in the ground truth (or repeat with the same segment) and cover every
    prediction, and every ground-truth query must have a prediction.
    """
    keys_pred = [(p.video, p.query) for p in predictions]
    keys_gt = [(g.video, g.query) for g in ground_truth]
    if keys_pred == keys_gt:
        return np.array([g.segment for g in ground_truth], dtype=np.float64)
    by_key: dict[tuple[str, str], tuple[int, GroundingQuery]] = {}
    for i, g in enumerate(ground_truth, 1):
        first, seen = by_key.setdefault((g.video, g.query), (i, g))
        if seen.segment != g.segment:
            raise TalInputError(
                f"{gt_source}: query {i} (video {g.video!r}, query {g.query!r}) repeats query {first} with another "
                f"segment, so predictions cannot be matched by (video, query); write the prediction file in "
                f"the same order as the ground truth")
    for p in predictions:
        if (p.video, p.query) not in by_key:
            raise TalInputError(f"{pred_source}:{p.lineno}: video {p.video!r}, query {p.query!r} is not in {gt_source}")
    missing = set(by_key) - set(keys_pred)
    if missing:
        video, query = next(iter(k for k in keys_gt if k in missing))
        raise TalInputError(f"{pred_source}: no prediction for {len(missing)} ground-truth queries of {gt_source}, "
                            f"e.g. video {video!r}, query {query!r}")
    return np.array([by_key[k][1].segment for k in keys_pred], dtype=np.float64)


def evaluate_grounding_files(pred_path: str | Path, gt_path: str | Path | None = None,
                             recalls: Sequence[int] = DEFAULT_RECALL, ious: Sequence[float] = DEFAULT_IOU,
                             nms_threshold: float = 0.5, iou_ge: bool = False) -> GroundingResult:
    """`tal evaluate grounding`: ground truth from `gt_path` if given, else each line's `segment`."""
    predictions = read_grounding_predictions(pred_path, need_segment=gt_path is None)
    if gt_path is None:
        ground_truth = np.array([p.segment for p in predictions], dtype=np.float64)
    else:
        ground_truth = match_ground_truth(predictions, read_grounding_jsonl(gt_path), str(pred_path), str(gt_path))
    return evaluate_grounding([p.moments for p in predictions], ground_truth, recalls, ious, nms_threshold, iou_ge)
