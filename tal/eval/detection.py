"""Detection mAP by the ActivityNet protocol, equal to activitynet/ActivityNet `Evaluation/eval_detection.py`.

The protocol, step by step, as the official code does it:
- classes are the labels of the ground-truth subset, in order of first appearance; mAP at a tIoU is
  the mean of their APs, and average mAP is the mean over tIoUs;
- the predictions of a class are ranked by `argsort(scores)[::-1]` of their scores in file order
  (so tied scores fall in the same order as in the official code on the same numpy);
- in rank order, each prediction takes the not-yet-taken ground truth of its video and class with
  the highest tIoU, if that tIoU >= the threshold (ties between ground truths broken by the same
  reversed argsort); otherwise, or in a video without such ground truth, it is a false positive;
- AP is the all-points interpolated area under precision/recall (VOC 2011).

Here the greedy matching runs on whole arrays: tIoUs are computed once for every prediction against
the ground truth of its (video, class), only the ground truths above the lowest threshold are kept
as candidates, and the sequential part walks "the k-th contender of every (video, class)" at once,
for all thresholds together. Only AP integration loops over classes.

Decided edge cases (the official code crashes or is silent on them):
- a predicted label with no ground truth in the subset is ignored, and counted in `notes`: it cannot
  change the AP of any class that is averaged;
- predictions on videos outside the subset are false positives, as in the official code;
- a predicted segment with end < start overlaps nothing (a false positive), as in the official code;
- where the official code divides 0 by 0 (a zero-length prediction against a zero-length ground
  truth of the same video and class, or a reversed prediction as long as the ground truth), its NaN
  passes every threshold, so that pair is a match here too, and ground truths tied at NaN are
  ranked as the official argsort ranks NaN; no NaN reaches a result.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Mapping

import numpy as np

from tal.datasets.types import DetectionAnnotations
from tal.errors import TalInputError
from tal.eval.groundtruth import load_subset
from tal.eval.predictions import SegmentPredictions, read_segment_predictions
from tal.ops.segments import tiou

THUMOS14_TIOU = np.linspace(0.3, 0.7, 5)
ACTIVITYNET_TIOU = np.linspace(0.5, 0.95, 10)
PROTOCOL_TIOU = {"thumos14": THUMOS14_TIOU, "activitynet13": ACTIVITYNET_TIOU}  # `--protocol` presets


@dataclass
class DetectionResult:
    """Per-class AP at each tIoU threshold, and the means the benchmarks report."""

    tiou_thresholds: np.ndarray  # [T]
    classes: list[str]  # [C], order of first appearance in the ground truth
    ap: np.ndarray  # [T, C]
    notes: list[str] = field(default_factory=list)  # what was ignored or defaulted, for stderr

    @property
    def mAP(self) -> np.ndarray:  # noqa: N802 - the name the field uses
        """[T] mean AP over classes at each threshold."""
        return self.ap.mean(axis=1)

    @property
    def average_mAP(self) -> float:  # noqa: N802
        return float(self.mAP.mean())

    def to_json(self, per_class: bool = False) -> dict:
        """`{"mAP": {"0.50": x, ...}, "average_mAP": x, "tiou_thresholds": [...]}` (+ `per_class_AP`
        {label: {tiou: ap}}): the thresholds are listed, so a figure always says which protocol made it."""
        keys = tiou_keys(self.tiou_thresholds)
        out: dict = {"mAP": {k: float(v) for k, v in zip(keys, self.mAP)}, "average_mAP": self.average_mAP,
                     "tiou_thresholds": [float(t) for t in self.tiou_thresholds]}
        if per_class:
            out["per_class_AP"] = {
                label: {k: float(v) for k, v in zip(keys, self.ap[:, c])}
                for c, label in sorted(enumerate(self.classes), key=lambda item: item[1])
            }
        return out


def tiou_keys(thresholds: np.ndarray) -> list[str]:
    """JSON keys of thresholds: two decimals ("0.50"), more only when two decimals would lose one."""
    for decimals in range(2, 10):
        keys = [f"{t:.{decimals}f}" for t in thresholds]
        if all(abs(float(k) - t) < 1e-12 for k, t in zip(keys, thresholds)):
            return keys
    return [repr(float(t)) for t in thresholds]


def evaluate_detection(ground_truth: DetectionAnnotations, predictions: SegmentPredictions,
                       tiou_thresholds: np.ndarray = ACTIVITYNET_TIOU) -> DetectionResult:
    """mAP of `predictions` against every video of `ground_truth` (choose the subset before)."""
    m = _match(ground_truth, predictions, tiou_thresholds)
    notes = _notes(ground_truth, predictions, m.classes, m.pred_class, m.pred_video)
    ap = np.zeros((len(m.thresholds), len(m.classes)))
    for c in np.flatnonzero(m.class_counts):
        ap[:, c] = _average_precision(m.tp[:, m.starts[c]:m.starts[c + 1]], m.num_gt[c])
    return DetectionResult(m.thresholds, m.classes, ap, notes)


def evaluate_detection_files(gt_path: str | Path, pred_path: str | Path, subset: str | None = None,
                             tiou_thresholds: np.ndarray = ACTIVITYNET_TIOU) -> DetectionResult:
    """`tal evaluate detection`: read both files, keep `subset`, compute mAP."""
    ground_truth = load_subset(gt_path, subset)
    return evaluate_detection(ground_truth, read_segment_predictions(pred_path, with_labels=True), tiou_thresholds)


def evaluate_detection_part(ground_truth: DetectionAnnotations, predictions: SegmentPredictions, keep: np.ndarray,
                            tiou_thresholds: np.ndarray = ACTIVITYNET_TIOU) -> DetectionResult:
    """mAP on a part of the ground truth (e.g. the short instances) by DETAD's sensitivity protocol.

    `keep` is bool [G] over the ground-truth instances in `ground_truth`'s order (videos, then their
    segments). Matching runs against all ground truth, as in `evaluate_detection`; then, per
    threshold, a prediction matched to an instance outside the part is dropped (it found something
    real, so it is no false positive of the part), unmatched predictions stay false positives, and
    each class's AP is taken over its kept instances. Classes with no kept instance are left out of
    the mean (`classes` lists those averaged). So a detector that finds the part's instances scores
    high on it whatever it does elsewhere (Alwassel et al., "Diagnosing error in temporal action
    detectors", ECCV 2018, with plain rather than normalized precision).
    """
    return evaluate_detection_parts(ground_truth, predictions, {"part": keep}, tiou_thresholds)["part"]


def evaluate_detection_parts(ground_truth: DetectionAnnotations, predictions: SegmentPredictions,
                             parts: Mapping[str, np.ndarray],
                             tiou_thresholds: np.ndarray = ACTIVITYNET_TIOU) -> dict[str, DetectionResult]:
    """`evaluate_detection_part` for several parts (name -> keep [G]) from one matching."""
    m = _match(ground_truth, predictions, tiou_thresholds)
    return {name: _part_result(m, keep) for name, keep in parts.items()}


def _part_result(m: _Matching, keep: np.ndarray) -> DetectionResult:
    keep = np.asarray(keep, dtype=bool).reshape(-1)
    if keep.shape != m.gt_class.shape:
        raise TalInputError(f"keep has {keep.size} entries; the ground truth has {m.gt_class.size} instances")
    kept_gt = np.bincount(m.gt_class[keep], minlength=len(m.classes))  # [C]
    outside = (m.matched >= 0) & ~np.append(keep, True)[m.matched]  # [T, P], -1 indexes the True pad
    averaged = np.flatnonzero(kept_gt)
    ap = np.zeros((len(m.thresholds), len(averaged)))
    for j, c in enumerate(averaged):
        cols = slice(m.starts[c], m.starts[c + 1])
        for t in range(len(m.thresholds)):
            stay = ~outside[t, cols]
            ap[t, j] = _average_precision(m.tp[t:t + 1, cols][:, stay], kept_gt[c])[0]
    return DetectionResult(m.thresholds, [m.classes[c] for c in averaged], ap)


def class_matches(ground_truth: DetectionAnnotations, predictions: SegmentPredictions,
                  tiou_thresholds: np.ndarray = ACTIVITYNET_TIOU) -> dict[str, tuple[np.ndarray, int]]:
    """Per class, in `evaluate_detection`'s order: (true positives [T, n] of its n predictions in rank
    order, number of ground truths). For precision/recall curves (`tal.viz`):
    `_average_precision(tp, num_gt)` is `evaluate_detection(...).ap[:, c]`, by the same matching."""
    m = _match(ground_truth, predictions, tiou_thresholds)
    return {label: (m.tp[:, m.starts[c]:m.starts[c + 1]], int(m.num_gt[c])) for c, label in enumerate(m.classes)}


@dataclass
class _Matching:
    thresholds: np.ndarray  # [T]
    classes: list[str]  # [C]
    pred_class: np.ndarray  # [N] class index, -1 for a label not in the ground truth
    pred_video: np.ndarray  # [N] video index, -1 for a video not in the ground truth
    matched: np.ndarray  # [T, P] ground-truth id each known-class prediction took (-1: none), by class then rank
    class_counts: np.ndarray  # [C] predictions per class
    starts: np.ndarray  # [C + 1] where each class's columns of tp start
    num_gt: np.ndarray  # [C]
    gt_class: np.ndarray  # [G] class index of each ground truth, in the annotations' order

    @cached_property
    def tp(self) -> np.ndarray:
        """[T, P] bool: true positives, by class then rank (computed once: callers slice it per class)."""
        return self.matched >= 0


def _match(ground_truth: DetectionAnnotations, predictions: SegmentPredictions,
           tiou_thresholds: np.ndarray) -> _Matching:
    """The official greedy matching of every prediction, per class in score order, at every tIoU."""
    thresholds = np.asarray(tiou_thresholds, dtype=np.float64).reshape(-1)  # [T]
    if predictions.labels is None:
        raise TalInputError(f"{predictions.source}: detection predictions need a 'label' on every entry")
    videos = list(ground_truth.videos.values())
    gt_labels = [label for a in videos for label in a.labels]
    if not gt_labels:
        raise TalInputError(f"{ground_truth.source or 'ground truth'}: no annotated segments to evaluate against")
    classes = list(dict.fromkeys(gt_labels))
    class_index = {label: c for c, label in enumerate(classes)}
    gt_class = np.array([class_index[label] for label in gt_labels], dtype=np.int64)  # [G]
    gt_video = np.repeat(np.arange(len(videos)), [len(a.labels) for a in videos])  # [G]
    gt_segments = np.concatenate([a.segments.reshape(-1, 2) for a in videos]).astype(np.float64)  # [G, 2]
    video_index = {a.video: v for v, a in enumerate(videos)}
    pred_video = np.array([video_index.get(vid, -1) for vid in predictions.video_ids],
                          dtype=np.int64)[predictions.video_of_each()]  # [N], -1: not in the subset
    pred_class = np.array([class_index.get(label, -1) for label in predictions.labels], dtype=np.int64)  # [N]

    known = np.flatnonzero(pred_class >= 0)
    by_class = known[np.argsort(pred_class[known], kind="stable")]  # file order within a class
    class_counts = np.bincount(pred_class[known], minlength=len(classes))  # [C]
    ranked = np.concatenate([np.zeros(0, dtype=np.int64)] + [
        idx[np.argsort(predictions.scores[idx])[::-1]]
        for idx in np.split(by_class, np.cumsum(class_counts)[:-1])
    ])  # [P] prediction ids, by class then by rank
    matched = _greedy_match(predictions.segments[ranked], pred_class[ranked], pred_video[ranked],
                            gt_segments, gt_class, gt_video, len(videos), thresholds)  # [T, P]
    num_gt = np.bincount(gt_class, minlength=len(classes))  # [C]
    starts = np.concatenate([[0], np.cumsum(class_counts)])  # [C + 1]
    return _Matching(thresholds, classes, pred_class, pred_video, matched, class_counts, starts, num_gt, gt_class)


def _greedy_match(pred_segments: np.ndarray, pred_class: np.ndarray, pred_video: np.ndarray,
                  gt_segments: np.ndarray, gt_class: np.ndarray, gt_video: np.ndarray, num_videos: int,
                  thresholds: np.ndarray) -> np.ndarray:
    """Ground-truth id [T, P] each ranked prediction takes (-1: a false positive), greedily as the official code."""
    num_pred, num_gt, num_thr = len(pred_class), len(gt_class), len(thresholds)
    matched = np.full((num_thr, num_pred), -1, dtype=np.int64)

    # Ground truth grouped by (class, video), GT order kept inside a group.
    gt_key = gt_class * num_videos + gt_video  # [G]
    gt_order = np.argsort(gt_key, kind="stable")  # [G]
    group_keys, group_start, group_size = np.unique(gt_key[gt_order], return_index=True, return_counts=True)
    pred_key = pred_class * num_videos + pred_video  # [P]
    group = np.searchsorted(group_keys, pred_key).clip(max=len(group_keys) - 1)  # [P]
    has_gt = (pred_video >= 0) & (group_keys[group] == pred_key)  # [P]

    # Candidates: the group's ground truths with tIoU >= the lowest threshold, best first. Rows are
    # bucketed by group size so each argsort row is exactly the official 1-D argsort.
    rows_with_gt = np.flatnonzero(has_gt)
    sizes = group_size[group[rows_with_gt]]
    lowest = thresholds.min()
    rows_parts, gt_parts, tiou_parts = [], [], []
    for size in np.unique(sizes):
        rows = rows_with_gt[sizes == size]  # [n]
        gt_ids = gt_order[group_start[group[rows]][:, None] + np.arange(size)]  # [n, m]
        overlap = _official_tiou(pred_segments[rows][:, None, :], gt_segments[gt_ids])  # [n, m], NaN at 0/0
        order = np.argsort(overlap, axis=1)[:, ::-1]  # the official argsort, NaN included
        overlap = np.nan_to_num(np.take_along_axis(overlap, order, axis=1), nan=np.inf)
        gt_ids = np.take_along_axis(gt_ids, order, axis=1)
        width = int((overlap >= lowest).sum(axis=1).max())
        rows_parts.append(rows)
        gt_parts.append(gt_ids[:, :width])
        tiou_parts.append(overlap[:, :width])
    if not rows_parts:
        return matched
    width = max(part.shape[1] for part in gt_parts)
    rows = np.concatenate(rows_parts)  # [R]
    cand_gt = np.concatenate([np.pad(p, ((0, 0), (0, width - p.shape[1])), constant_values=num_gt)
                              for p in gt_parts])  # [R, W], num_gt = padding
    cand_tiou = np.concatenate([np.pad(p, ((0, 0), (0, width - p.shape[1])), constant_values=-np.inf)
                                for p in tiou_parts])  # [R, W]
    contender = cand_tiou[:, 0] >= lowest if width else np.zeros(len(rows), dtype=bool)
    rows, cand_gt, cand_tiou = rows[contender], cand_gt[contender], cand_tiou[contender]
    if not len(rows):
        return matched

    # Walk the k-th contender of every group at once: groups own disjoint ground truths.
    order = np.lexsort((rows, group[rows]))  # by group, then rank
    rows, cand_gt, cand_tiou = rows[order], cand_gt[order], cand_tiou[order]
    run_start = np.flatnonzero(np.r_[True, np.diff(group[rows]) != 0])
    step = np.arange(len(rows)) - np.repeat(run_start, np.diff(np.r_[run_start, len(rows)]))  # [R]
    by_step = np.argsort(step, kind="stable")
    taken = np.zeros((num_thr, num_gt + 1), dtype=bool)  # [T, G + padding column]
    for batch in np.split(by_step, np.cumsum(np.bincount(step))[:-1]):
        gt_ids, overlap = cand_gt[batch], cand_tiou[batch]  # [A, W]
        eligible = (overlap[None] >= thresholds[:, None, None]) & ~taken[:, gt_ids]  # [T, A, W]
        hit = eligible.any(axis=2)  # [T, A]
        first = eligible.argmax(axis=2)  # [T, A]
        thr_idx, a_idx = np.nonzero(hit)
        taken_ids = gt_ids[a_idx, first[thr_idx, a_idx]]
        matched[thr_idx, rows[batch][a_idx]] = taken_ids
        taken[thr_idx, taken_ids] = True
    return matched


def _official_tiou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """tIoU [...] of broadcast pred [..., 2] and gt [..., 2], NaN where the official code divides 0 by 0.

    The union is zero only for two zero-length segments, or a reversed prediction exactly as long
    as the ground truth. NaN passes every official threshold test (`NaN < thr` is False), so such a
    pair is a match; callers rank with the NaN (numpy's argsort orders tied NaN and tied +inf
    differently, and the official ranking decides which ground truth is locked) and then compare
    with +inf in its place.
    """
    overlap = tiou(pred, gt)
    zero_union = (gt[..., 1] - gt[..., 0]) + (pred[..., 1] - pred[..., 0]) == 0
    return np.where(zero_union, np.nan, overlap)


def _average_precision(tp: np.ndarray, num_gt: int) -> np.ndarray:
    """All-points interpolated AP [T] of ranked true positives [T, n] (VOC 2011, as the official code)."""
    tp_cum = np.cumsum(tp, axis=1, dtype=np.float64)  # [T, n]
    fp_cum = np.cumsum(~tp, axis=1, dtype=np.float64)
    precision = tp_cum / (tp_cum + fp_cum)
    recall = tp_cum / float(num_gt)
    num_thr = tp.shape[0]
    mprec = np.hstack([np.zeros((num_thr, 1)), precision, np.zeros((num_thr, 1))])
    mprec = np.maximum.accumulate(mprec[:, ::-1], axis=1)[:, ::-1]
    mrec = np.hstack([np.zeros((num_thr, 1)), recall, np.ones((num_thr, 1))])
    ap = np.empty(num_thr)
    for t in range(num_thr):
        idx = np.flatnonzero(mrec[t, 1:] != mrec[t, :-1]) + 1
        ap[t] = np.sum((mrec[t, idx] - mrec[t, idx - 1]) * mprec[t, idx])
    return ap


def _notes(ground_truth: DetectionAnnotations, predictions: SegmentPredictions, classes: list[str],
           pred_class: np.ndarray, pred_video: np.ndarray) -> list[str]:
    notes = []
    unmatched = Counter(label for label, c in zip(predictions.labels, pred_class) if c < 0)
    if unmatched:
        file_classes = set(ground_truth.classes)
        elsewhere = {k: n for k, n in unmatched.items() if k in file_classes}
        unknown = {k: n for k, n in unmatched.items() if k not in file_classes}
        if elsewhere:
            notes.append(f"ignored {sum(elsewhere.values())} predictions of {len(elsewhere)} labels that have no "
                         f"ground truth in this subset: {_examples(elsewhere)}")
        if unknown:
            notes.append(f"ignored {sum(unknown.values())} predictions of {len(unknown)} labels that are not classes "
                         f"of {ground_truth.source or 'the ground truth'} (check the class names): "
                         f"{_examples(unknown)}")
    if predictions.num_reversed:
        notes.append(f"{predictions.num_reversed} predicted segments have end < start: they overlap nothing and "
                     f"count as false positives (as in the official evaluator)")
    outside = (pred_class >= 0) & (pred_video < 0)
    if outside.any():
        num_videos = len(np.unique(predictions.video_of_each()[outside]))
        notes.append(f"{int(outside.sum())} predictions on {num_videos} videos that are not in the evaluated subset "
                     f"count as false positives (ActivityNet protocol); drop them from the file if that is not meant")
    per_class = np.bincount(pred_class[pred_class >= 0], minlength=len(classes))
    missing = [label for c, label in enumerate(classes) if per_class[c] == 0]
    if missing:
        notes.append(f"{len(missing)} of {len(classes)} classes have no predictions (AP 0): "
                     f"{_examples(dict.fromkeys(missing))}")
    return notes


def _examples(counts: dict, limit: int = 5) -> str:
    items = list(counts.items())[:limit]
    text = ", ".join(repr(k) if n is None else f"{k!r} ({n})" for k, n in items)
    return text + (f", ... ({len(counts) - limit} more)" if len(counts) > limit else "")
