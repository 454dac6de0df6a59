"""Proposal AR@AN and AUC, equal to activitynet/ActivityNet `Evaluation/eval_proposal.py`.

The protocol, as the official code does it:
- the videos are those of the ground-truth subset with at least one segment;
- a budget `ratio = max_avg_proposals * num_videos / num_proposals_in_file` (every proposal of the
  file counts, also those on videos outside the subset); each video keeps its
  `min(int(n * ratio), n)` best proposals, ranked by `argsort(scores)[::-1]` in file order;
- the AN axis has 100 points, the k-th keeping `int(w * k/100 * max_avg * V / kept_total)` of the
  `w` kept proposals of each video; a ground truth is recalled at a point if one of those has
  tIoU >= the threshold; recall is averaged over tIoUs 0.5:0.95:0.05;
- AUC is the trapezoid area under that curve divided by its last AN (the official code prints it
  in percent; here it is a fraction);
- AR@n (n = 1, 5, 10, 50, 100, up to max_avg_proposals) is the curve at AN = n: with the default
  max_avg_proposals = 100 that is its n-th point, as BSN/BMN report it; between points the same
  per-video step rule is applied at AN = n.

Vectorized: for every ground truth and threshold we find the rank of its first matching proposal
once, then compare it with the per-video proposal counts of all 100 points at the same time.
Edge cases: no proposals at all gives zeros (the official code divides by zero); the tIoU of two
zero-length segments is 0, which the official NaN also never passes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tal.datasets.types import DetectionAnnotations
from tal.errors import TalInputError
from tal.eval.detection import ACTIVITYNET_TIOU
from tal.eval.groundtruth import load_subset
from tal.eval.predictions import SegmentPredictions, read_segment_predictions
from tal.ops.segments import tiou

AR_AT = (1, 5, 10, 50, 100)
THUMOS14_AR_AT = (50, 100, 200, 500, 1000)  # BSN / BMN / BSN++ report THUMOS14 proposals at these ANs
NUM_POINTS = 100


@dataclass
class ProposalResult:
    """The recall vs average-number-of-proposals curve at each tIoU, and its summaries."""

    tiou_thresholds: np.ndarray  # [T]
    max_avg_proposals: float
    avg_num_proposals: np.ndarray  # [J] the AN axis, J = 100 points up to max_avg_proposals
    recall: np.ndarray  # [T, J]
    ar_at: dict[int, float] = field(default_factory=dict)  # AR at AN = n, for the n of AR_AT up to max_avg_proposals
    notes: list[str] = field(default_factory=list)

    @property
    def average_recall(self) -> np.ndarray:
        """[J] recall averaged over tIoU thresholds."""
        return self.recall.mean(axis=0)

    @property
    def auc(self) -> float:
        """Area under the AR-AN curve over its AN range, as a fraction (the official % / 100)."""
        if self.avg_num_proposals[-1] <= 0:
            return 0.0
        return float(np.trapezoid(self.average_recall, self.avg_num_proposals) / self.avg_num_proposals[-1])

    def to_json(self) -> dict:
        """`{"AR@1": x, "AR@5": x, "AR@10": x, "AR@50": x, "AR@100": x, "AUC": x}` (AR@N for N <= max_avg_proposals)."""
        out: dict = {f"AR@{n}": value for n, value in self.ar_at.items()}
        out["AUC"] = self.auc
        return out


def evaluate_proposals(ground_truth: DetectionAnnotations, predictions: SegmentPredictions,
                       max_avg_proposals: float = 100, tiou_thresholds: np.ndarray = ACTIVITYNET_TIOU,
                       ar_at: tuple[int, ...] = AR_AT) -> ProposalResult:
    """AR-AN curve of `predictions` (labels ignored) against every video of `ground_truth`; AR at each AN
    of `ar_at` up to max_avg_proposals (THUMOS14: THUMOS14_AR_AT with max_avg_proposals 1000)."""
    thresholds = np.asarray(tiou_thresholds, dtype=np.float64).reshape(-1)  # [T]
    if not max_avg_proposals > 0:
        raise TalInputError(f"max_avg_proposals must be > 0, got {max_avg_proposals}")
    videos = [a for a in ground_truth.videos.values() if len(a.labels)]
    if not videos:
        raise TalInputError(f"{ground_truth.source or 'ground truth'}: no annotated segments to evaluate against")
    num_videos = len(videos)
    gt_video = np.repeat(np.arange(num_videos), [len(a.labels) for a in videos])  # [G]
    gt_segments = np.concatenate([a.segments.reshape(-1, 2) for a in videos]).astype(np.float64)  # [G, 2]
    nominal_an = np.arange(1, NUM_POINTS + 1) / NUM_POINTS * max_avg_proposals  # [J]
    # AR@n is the curve's formula at AN = n: its own point when n is one, else the same step rule
    at_points = [n for n in ar_at if n <= max_avg_proposals]
    at_fraction = np.array([_curve_fraction(n, max_avg_proposals) for n in at_points])  # [N]

    video_index = {a.video: v for v, a in enumerate(videos)}
    file_video = np.array([video_index.get(vid, -1) for vid in predictions.video_ids], dtype=np.int64)  # [F]
    file_start = np.concatenate([[0], np.cumsum(predictions.counts)[:-1]]).astype(np.int64)  # [F]
    in_gt = file_video >= 0
    num_props = np.zeros(num_videos, dtype=np.int64)  # [V]
    num_props[file_video[in_gt]] = predictions.counts[in_gt]
    start = np.zeros(num_videos, dtype=np.int64)  # [V]
    start[file_video[in_gt]] = file_start[in_gt]
    notes = _notes(predictions, in_gt, num_props)

    total = predictions.num_predictions
    ratio = max_avg_proposals * float(num_videos) / total if total else 0.0
    kept = np.minimum((num_props * ratio).astype(np.int64), num_props)  # [V]
    kept_total = int(kept.sum())
    if kept_total == 0:
        zeros = np.zeros((len(thresholds), NUM_POINTS))
        return ProposalResult(thresholds, max_avg_proposals, nominal_an, zeros, dict.fromkeys(at_points, 0.0), notes)
    scale = max_avg_proposals * float(num_videos) / kept_total
    fraction = np.concatenate([np.arange(1, NUM_POINTS + 1) / 100.0, at_fraction]) * scale  # [J + N]
    width = np.where(num_props > 0, kept, 1)  # [V] columns of the official per-video tIoU matrix
    num_used = np.minimum((width[:, None] * fraction[None, :]).astype(np.int64), width[:, None])  # [V, J + N]

    proposals = _ranked_proposals(predictions, num_props, start, kept)  # [V, K, 2]
    max_kept = proposals.shape[1]
    overlap = tiou(proposals[gt_video], gt_segments[:, None, :])  # [G, K]
    valid = np.arange(max_kept)[None, :] < kept[gt_video][:, None]  # [G, K]
    hit = (overlap[None] >= thresholds[:, None, None]) & valid[None]  # [T, G, K]
    first_hit = np.where(hit.any(axis=2), hit.argmax(axis=2), max_kept + 1)  # [T, G] rank of the first match
    recalled = first_hit[:, :, None] < num_used[gt_video][None]  # [T, G, J + N]
    recall = np.count_nonzero(recalled, axis=1) / float(len(gt_video))  # [T, J + N]
    avg_num_proposals = fraction[:NUM_POINTS] * (float(kept_total) / num_videos)
    ar_at = {n: float(value) for n, value in zip(at_points, recall[:, NUM_POINTS:].mean(axis=0))}
    return ProposalResult(thresholds, max_avg_proposals, avg_num_proposals, recall[:, :NUM_POINTS], ar_at, notes)


def evaluate_proposals_files(gt_path: str | Path, pred_path: str | Path, subset: str | None = None,
                             max_avg_proposals: float = 100,
                             tiou_thresholds: np.ndarray = ACTIVITYNET_TIOU) -> ProposalResult:
    """`tal evaluate proposals`: read both files, keep `subset`, compute the AR-AN curve."""
    ground_truth = load_subset(gt_path, subset)
    predictions = read_segment_predictions(pred_path, with_labels=False)
    return evaluate_proposals(ground_truth, predictions, max_avg_proposals, tiou_thresholds)


def _curve_fraction(num_proposals: float, max_avg_proposals: float) -> float:
    """Position of AN = `num_proposals` on the curve as a fraction of max_avg_proposals; on one of the
    100 points it is exactly that point's `k / 100.0`, so AR@n equals the official curve's value."""
    point = num_proposals * NUM_POINTS / max_avg_proposals
    if abs(point - round(point)) < 1e-9:
        return round(point) / 100.0
    return num_proposals / max_avg_proposals


def _ranked_proposals(predictions: SegmentPredictions, num_props: np.ndarray, start: np.ndarray,
                      kept: np.ndarray) -> np.ndarray:
    """[V, K, 2] the kept proposals of each video, best first (K = most kept; the rest is padding).

    Videos are batched by proposal count so that every argsort row is exactly the official 1-D
    argsort of that video's scores, and tied scores fall in the same order.
    """
    max_kept = int(kept.max())
    out = np.zeros((len(num_props), max_kept, 2))
    for n in np.unique(num_props[kept > 0]):
        videos = np.flatnonzero((num_props == n) & (kept > 0))  # [m]
        ids = start[videos][:, None] + np.arange(n)  # [m, n] in file order
        order = np.argsort(predictions.scores[ids], axis=1)[:, ::-1][:, :max_kept]
        out[videos, :order.shape[1]] = predictions.segments[np.take_along_axis(ids, order, axis=1)]
    return out


def _notes(predictions: SegmentPredictions, in_gt: np.ndarray, num_props: np.ndarray) -> list[str]:
    notes = []
    if predictions.num_predictions == 0:
        notes.append(f"{predictions.source}: no proposals; every recall is 0")
    outside = predictions.counts[~in_gt]
    if outside.sum():
        notes.append(f"{int(outside.sum())} proposals on {len(outside)} videos that are not in the evaluated subset "
                     f"are ignored, but count in the proposal budget (official protocol); drop them from the file "
                     f"if that is not meant")
    if (num_props == 0).any():
        notes.append(f"{int((num_props == 0).sum())} of {len(num_props)} ground-truth videos have no proposals")
    if predictions.num_reversed:
        notes.append(f"{predictions.num_reversed} proposals have end < start: they overlap nothing (as in the "
                     f"official evaluator)")
    return notes
