"""Temporal non-maximum suppression: hard and soft (linear, gaussian), per class, with score voting.

Everything runs in torch on the input's device, vectorized; nothing is compiled and nothing leaves
the device on the hot path. Conventions, shared by every function here:

- Ranking is by score, highest first; equal scores rank by input index (the earlier one wins).
- A segment suppresses (hard) or decays (soft-linear) another when their tIoU is *above*
  `iou_threshold` (torchvision's and 2D-TAN's rule; ActionFormer's and OpenTAD's C++ kernels use >=,
  which differs only at exact equality). Gaussian decay multiplies by exp(-tIoU^2 / sigma) whatever
  the overlap, as in Bodla et al. and ActionFormer.
- `score_threshold` drops scores below it: the input scores before NMS, and decayed scores after
  each soft-NMS step. `max_detections` caps the output per video (over all classes).
- Per-class NMS never compares segments of different labels. tIoU is `tal.ops.segments.tiou`, so a
  zero-length segment overlaps nothing (tIoU 0, never NaN).

Hard NMS never builds the N x N tIoU matrix. Candidates are taken in rank order, a block at a time
(blocks double in size; a block is halved while its candidates overlap in more than PAIR_BUDGET
pairs, so memory stays bounded on dense clusters). A block is first checked against the segments
kept so far, then its survivors are decided among themselves. Both steps see only overlapping
same-class pairs, found by a 1D sweep: sorted by (class, start) (the coordinate-offset trick, with
exact class boundaries), the segments starting inside a segment are one run, bounded with
`searchsorted`. So the work is O(N log N + overlapping pairs). Inside a block the greedy decisions
are made in rounds: a candidate is kept once every higher-ranked neighbour is decided and none of
them was kept. That is exactly the sequential greedy loop, in as many rounds as the longest chain
of suppressions (a handful on detector output; N / 2 for sliding windows with falling scores, so
after a few rounds the rest is settled by the loop itself over a dense suppression matrix).

Soft NMS is sequential in its selections: each step takes one argmax per class (all classes at
once, one row each) and decays that class's remaining scores in one vectorized update. The steps
stop as soon as `max_detections` selections are certain to outrank everything still waiting, so a
cap makes it fast; without one it runs as many steps as the largest class has candidates.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from tal.ops.segments import tiou
from tal.ops.threads import single_threaded

METHODS = ("hard", "soft-linear", "soft-gaussian", "soft-adaptive", "none")
# "adaptive" is BMN's soft-NMS (JJBOY/BMN-Boundary-Matching-Network post_processing.py `soft_nms`, mmaction2's
# `soft_nms` with alpha 0.4, low 0.5, high 0.9): gaussian decay exp(-tIoU^2 / sigma) only where the tIoU
# with the pick is above low + (high - low) * the pick's width / width_scale (widths normalised to the video).
SOFT_METHODS = ("linear", "gaussian", "adaptive")
# Score-voting weights: "score-tiou" is ActionFormer's libs/utils/nms.py `seg_voting` since its commit
# 33a5187 (2022-06, the released code); "score" is that function before it (score-weighted box voting).
VOTING_WEIGHTS = ("score-tiou", "score")
# Candidates in the first block of hard NMS; each next block is twice as big. Uncapped, up to
# ONE_BLOCK candidates go in a single block instead, which skips the cross pairs between the first two
# blocks: 2,000 segments in 20 classes 1.5 / 2.7 / 2.5 ms (uniform, clustered, chain) instead of
# 3.2 / 3.4 / 3.4 ms. Larger single blocks lose: at 10,000 a first block of 4,096 took 18 / 52 ms on
# the clustered and chain inputs instead of 13 / 21 ms (denser pair sets, and the scan of `_greedy_rounds`
# is quadratic in the block).
DEFAULT_BLOCK_SIZE = 1024
ONE_BLOCK = 2048
PAIR_BUDGET = 1_000_000  # most overlapping pairs hard NMS decides at once (about 100 bytes each at peak)


@single_threaded
def nms(segments: Tensor, scores: Tensor, iou_threshold: float, score_threshold: float | None = None,
        max_detections: int | None = None) -> Tensor:
    """Class-agnostic hard NMS: segments [N, 2] (start, end), scores [N] -> kept indices [K], best first."""
    return batched_nms(segments, scores, None, iou_threshold, score_threshold, max_detections)


@single_threaded
def batched_nms(segments: Tensor, scores: Tensor, labels: Tensor | None, iou_threshold: float,
                score_threshold: float | None = None, max_detections: int | None = None,
                block_size: int | None = None) -> Tensor:
    """Per-class hard NMS in one pass: labels [N] integers (None: one class) -> kept indices [K], best first.

    A segment is dropped when a higher-ranked segment of its label that was kept overlaps it with
    tIoU > iou_threshold. `block_size` is the number of candidates decided together at first (each
    next block doubles; None: `_hard_nms`'s default); it trades memory for speed and never changes the
    result.
    """
    segments, scores, groups = _validate(segments, scores, labels, "batched_nms")
    _check_threshold(iou_threshold, "iou_threshold")
    _check_count(max_detections, "max_detections")
    if block_size is not None:
        _check_count(block_size, "block_size")
    order = _prefilter(scores, score_threshold, None)  # [N'] rank order
    return _hard_nms(segments, groups, order, iou_threshold, max_detections, block_size)


@single_threaded
def soft_nms(segments: Tensor, scores: Tensor, labels: Tensor | None = None, method: str = "gaussian",
             iou_threshold: float = 0.5, sigma: float = 0.5, score_threshold: float | None = None,
             max_detections: int | None = None, high_threshold: float = 0.9,
             width_scale: float | None = None) -> tuple[Tensor, Tensor]:
    """Soft NMS ("linear", "gaussian" or BMN's "adaptive"), per class when labels [N] are given.

    Returns the kept indices [K] and their decayed scores [K], highest first (the kept segments are
    segments[keep]). Linear decay multiplies by 1 - tIoU when tIoU > iou_threshold; gaussian by
    exp(-tIoU^2 / sigma); adaptive by exp(-tIoU^2 / sigma) when tIoU > iou_threshold + (high_threshold
    - iou_threshold) * pick width / width_scale. Without a score_threshold every segment is kept.
    """
    segments, scores, groups = _validate(segments, scores, labels, "soft_nms")
    _check_soft(method, iou_threshold, sigma, high_threshold, width_scale)
    _check_count(max_detections, "max_detections")
    order = _prefilter(scores, score_threshold, None)
    return _soft_nms(segments, scores, groups, order, method, iou_threshold, sigma, score_threshold, max_detections,
                     (high_threshold, width_scale))


@single_threaded
def score_voting(segments: Tensor, scores: Tensor, labels: Tensor | None, keep: Tensor,
                 voting_threshold: float, voting_weight: str = "score-tiou") -> Tensor:
    """Refined boundaries [K, 2] for the kept segments segments[keep] (ActionFormer's `seg_voting`).

    Each kept segment becomes the weighted mean of every segment (itself included) of its label whose
    tIoU with it is >= voting_threshold. `voting_weight` "score-tiou" weights a voter by its input
    score (before any decay) times its tIoU with the kept segment, as ActionFormer's released code;
    "score" by the score alone, as ActionFormer's first release. Labels None: all segments vote. A
    segment nothing votes for (zero length) keeps its boundaries.
    """
    segments, scores, groups = _validate(segments, scores, labels, "score_voting")
    _check_voting(voting_threshold, scores, voting_weight)
    return _vote(segments, scores, groups, keep, torch.arange(len(scores), device=scores.device), voting_threshold,
                 voting_weight)


@single_threaded
def postprocess_detections(segments: Tensor, scores: Tensor, labels: Tensor | None = None, method: str = "hard",
                           iou_threshold: float = 0.5, sigma: float = 0.5, score_threshold: float | None = None,
                           pre_nms_top_k: int | None = None, max_detections: int | None = None,
                           class_agnostic: bool = False, voting_threshold: float | None = None,
                           voting_weight: str = "score-tiou", high_threshold: float = 0.9,
                           width_scale: float | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """One video's raw detections -> (segments [K, 2], scores [K], labels [K]), highest score first.

    segments [N, 2] (start_s, end_s), scores [N], labels [N] integers (None: proposals, one class).
    Steps: drop scores < score_threshold; keep the pre_nms_top_k best; NMS by `method` ("hard",
    "soft-linear", "soft-gaussian", "soft-adaptive" (BMN's; `high_threshold`, `width_scale`, see
    `soft_nms`) or "none"), per label unless class_agnostic; optionally replace
    each kept segment by the weighted mean of its neighbours with tIoU >= voting_threshold
    (candidates after the first two steps vote, weighted as `voting_weight` says, see `score_voting`);
    keep the max_detections best.
    Soft methods return decayed scores; the others the input scores.
    """
    segments, scores, groups = _validate(segments, scores, labels, "postprocess_detections")
    if method not in METHODS:
        raise ValueError(f"postprocess_detections: unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "hard":
        _check_threshold(iou_threshold, "iou_threshold")
    elif method != "none":
        _check_soft(method.removeprefix("soft-"), iou_threshold, sigma, high_threshold, width_scale)
    if voting_threshold is not None:
        _check_voting(voting_threshold, scores, voting_weight)
    _check_count(pre_nms_top_k, "pre_nms_top_k")
    _check_count(max_detections, "max_detections")
    if labels is None:
        labels = torch.zeros(len(scores), dtype=torch.long, device=scores.device)
    if class_agnostic:
        groups = torch.zeros_like(groups)

    order = _prefilter(scores, score_threshold, pre_nms_top_k)  # [N'] candidates in rank order
    if method == "hard":
        keep = _hard_nms(segments, groups, order, iou_threshold, max_detections)
        kept_scores = scores[keep]
    elif method == "none":
        keep = order if max_detections is None else order[:max_detections]
        kept_scores = scores[keep]
    else:
        keep, kept_scores = _soft_nms(segments, scores, groups, order, method.removeprefix("soft-"),
                                      iou_threshold, sigma, score_threshold, max_detections,
                                      (high_threshold, width_scale))
    kept_segments = segments[keep]
    if voting_threshold is not None:
        kept_segments = _vote(segments, scores, groups, keep, order, voting_threshold, voting_weight)
    return kept_segments, kept_scores, labels[keep]


# ---------------------------------------------------------------------------------------------------
# checks


def _validate(segments: Tensor, scores: Tensor, labels: Tensor | None, caller: str) -> tuple[Tensor, Tensor, Tensor]:
    """Shapes, finiteness and end >= start; returns segments and scores as floats and the group id of each."""
    if not isinstance(segments, Tensor) or not isinstance(scores, Tensor):
        raise TypeError(f"{caller}: segments and scores must be torch tensors, got "
                        f"{type(segments).__name__} and {type(scores).__name__}")
    if segments.dim() != 2 or segments.shape[1] != 2:
        raise ValueError(f"{caller}: segments must have shape [N, 2] (start, end), got {list(segments.shape)}")
    if scores.shape != segments.shape[:1]:
        raise ValueError(f"{caller}: scores must have shape [{segments.shape[0]}] (one per segment), "
                         f"got {list(scores.shape)}")
    if not segments.is_floating_point() or segments.dtype in (torch.float16, torch.bfloat16):
        segments = segments.float()
    if not scores.is_floating_point() or scores.dtype in (torch.float16, torch.bfloat16):
        scores = scores.float()
    bad = ~torch.isfinite(scores)  # [N]
    if bad.any():
        first = int(bad.nonzero()[0, 0])
        kind = "NaN" if math.isnan(float(scores[first])) else "an infinite value"
        raise ValueError(f"{caller}: scores contain {kind} at index {first} ({int(bad.sum())} of {len(scores)} "
                         f"not finite); drop or fix those detections before NMS")
    bad = ~torch.isfinite(segments).all(dim=1)  # [N]
    if bad.any():
        first = int(bad.nonzero()[0, 0])
        raise ValueError(f"{caller}: segment {first} is not finite ({segments[first].tolist()}); "
                         f"{int(bad.sum())} of {len(segments)} segments have NaN or infinite boundaries")
    bad = segments[:, 1] < segments[:, 0]  # [N]
    if bad.any():
        first = int(bad.nonzero()[0, 0])
        raise ValueError(f"{caller}: segment {first} ends before it starts ({segments[first].tolist()}); "
                         f"{int(bad.sum())} of {len(segments)} segments have end < start, "
                         f"segments must be [start, end] with end >= start")
    if labels is None:
        return segments, scores, torch.zeros(len(scores), dtype=torch.long, device=scores.device)
    if labels.shape != scores.shape:
        raise ValueError(f"{caller}: labels must have shape [{len(scores)}] (one per segment), "
                         f"got {list(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"{caller}: labels must be integers (class indices), got {labels.dtype}")
    return segments, scores, labels.long()


def _check_threshold(value: float, name: str) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def _check_soft(method: str, iou_threshold: float, sigma: float, high_threshold: float = 0.9,
                width_scale: float | None = None) -> None:
    if method not in SOFT_METHODS:
        raise ValueError(f"soft NMS method must be 'linear', 'gaussian' or 'adaptive', got {method!r}")
    _check_threshold(iou_threshold, "iou_threshold")
    if method != "linear" and not sigma > 0:
        raise ValueError(f"sigma must be > 0 for {method} soft NMS, got {sigma}")
    if method == "adaptive" and not (width_scale is not None and width_scale > 0):
        raise ValueError(f"adaptive soft NMS needs width_scale > 0 (the length widths are normalised by), "
                         f"got {width_scale}")


def _check_voting(voting_threshold: float, scores: Tensor, voting_weight: str) -> None:
    if voting_weight not in VOTING_WEIGHTS:
        raise ValueError(f"voting_weight must be one of {', '.join(VOTING_WEIGHTS)}, got {voting_weight!r}")
    if not 0.0 < voting_threshold <= 1.0:
        raise ValueError(f"voting_threshold must be in (0, 1], got {voting_threshold}")
    if len(scores) and bool((scores < 0).any()):
        first = int((scores < 0).nonzero()[0, 0])
        raise ValueError(f"score voting weights segments by score, so scores must be >= 0; "
                         f"score {first} is {float(scores[first])}")


def _check_count(value: int | None, name: str) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{name} must be >= 1 or None, got {value}")


# ---------------------------------------------------------------------------------------------------
# ranking and pairs


def _prefilter(scores: Tensor, score_threshold: float | None, top_k: int | None) -> Tensor:
    """Indices of the candidates in rank order (score descending, then index): [N']."""
    order = torch.sort(scores, descending=True, stable=True).indices  # [N]
    if score_threshold is not None:
        order = order[scores[order] >= score_threshold]
    return order if top_k is None else order[:top_k]


def _frame(segments: Tensor, groups: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Origin, span (float64) and lowest group of a set of segments, for `_sweep_key`."""
    origin = segments[:, 0].min().double()
    return origin, segments[:, 1].max().double() - origin + 1.0, groups.min()


def _sweep_key(frame: tuple[Tensor, Tensor, Tensor], groups: Tensor, times_s: Tensor) -> Tensor:
    """float64 key (group - lowest) * span + (time - origin): non-decreasing in (group, time) order.

    Rounding is monotone, so a run found with `searchsorted` on these keys can only be wider than
    the exact one; group runs are clipped exactly with a second `searchsorted` on the integer groups.
    """
    origin, span, lowest = frame
    return (groups - lowest).double() * span + (times_s.double() - origin)


def _group_start_order(segments: Tensor, groups: Tensor) -> Tensor:
    """Indices [N] sorting by group, then start."""
    order = torch.sort(segments[:, 0], stable=True).indices
    return order[torch.sort(groups[order], stable=True).indices]


def _ragged(first: Tensor, count: Tensor) -> tuple[Tensor, Tensor]:
    """Expand runs: for each i, positions first[i] .. first[i] + count[i] - 1 -> (owner [E], position [E])."""
    owner = torch.repeat_interleave(torch.arange(len(count), device=count.device), count)  # [E]
    shift = torch.repeat_interleave(first - (torch.cumsum(count, 0) - count), count)  # [E]
    return owner, shift + torch.arange(len(owner), device=count.device)


def _overlap_runs(segments: Tensor, groups: Tensor) -> tuple[Tensor, Tensor]:
    """Sorted by (group, start), the partners of each segment that start at or after it and inside it
    are the run of positions that follows it: order [N] and run lengths [N] (in that order).

    A few same-group pairs that only touch may be counted too (rounding can only widen the runs).
    """
    if not len(segments):
        empty = torch.zeros(0, dtype=torch.long, device=segments.device)
        return empty, empty
    frame = _frame(segments, groups)
    order = _group_start_order(segments, groups)  # [N]
    group, start, end = groups[order], segments[order, 0], segments[order, 1]
    key = _sweep_key(frame, group, start)  # [N] non-decreasing
    last = torch.minimum(torch.searchsorted(key, _sweep_key(frame, group, end), side="right"),
                         torch.searchsorted(group, group, side="right"))  # [N] exclusive end of the run
    return order, (last - torch.arange(len(order), device=order.device) - 1).clamp(min=0)


def _overlapping_pairs(order: Tensor, count: Tensor) -> tuple[Tensor, Tensor]:
    """Each unordered same-group pair {i, j} that overlaps by more than zero, once, from `_overlap_runs`:
    ([E], [E]); callers filter by tIoU (which also drops the pairs that only touch)."""
    p, q = _ragged(torch.arange(1, len(order) + 1, device=order.device), count)  # [E] sorted positions
    return order[p], order[q]


def _cross_pairs(a: Tensor, a_group: Tensor, b: Tensor, b_group: Tensor) -> tuple[Tensor, Tensor]:
    """Every pair (i, j) with a[i], b[j] in the same group and a positive overlap, exactly once: ([E], [E])."""
    if not len(a) or not len(b):
        empty = torch.zeros(0, dtype=torch.long, device=a.device)
        return empty, empty
    frame = _frame(torch.cat([a, b]), torch.cat([a_group, b_group]))
    i1, j1 = _starts_inside(frame, a, a_group, b, b_group, strict=False)  # b starts in [start_a, end_a)
    j2, i2 = _starts_inside(frame, b, b_group, a, a_group, strict=True)  # a starts in (start_b, end_b)
    return torch.cat([i1, i2]), torch.cat([j1, j2])


def _starts_inside(frame: tuple[Tensor, Tensor, Tensor], x: Tensor, x_group: Tensor, y: Tensor, y_group: Tensor,
                   strict: bool) -> tuple[Tensor, Tensor]:
    """Pairs (i, j), same group, with y[j] starting inside x[i]: start_x <= start_y < end_x (< with strict)."""
    order = _group_start_order(y, y_group)  # [M]
    group = y_group[order]
    key = _sweep_key(frame, group, y[order, 0])  # [M] non-decreasing
    first = torch.maximum(torch.searchsorted(key, _sweep_key(frame, x_group, x[:, 0]), side="left"),
                          torch.searchsorted(group, x_group, side="left"))  # [N]
    last = torch.minimum(torch.searchsorted(key, _sweep_key(frame, x_group, x[:, 1]), side="right"),
                         torch.searchsorted(group, x_group, side="right"))  # [N]
    i, position = _ragged(first, (last - first).clamp(min=0))  # [E]
    j = order[position]
    after = y[j, 0] > x[i, 0] if strict else y[j, 0] >= x[i, 0]
    exact = after & (y[j, 0] < x[i, 1])  # [E]
    return i[exact], j[exact]


# ---------------------------------------------------------------------------------------------------
# hard NMS


def _above(overlap: Tensor, threshold: float) -> Tensor:
    """overlap > threshold with the threshold kept in float64, as torchvision's kernels compare a float
    IoU with a double threshold (a float32 tensor against a Python float would round the threshold to
    float32: tIoU 1/10 in float32 is then not above 0.1)."""
    return overlap.double() > threshold


# After this many rounds the undecided nodes are settled by one sequential scan over a dense suppression
# matrix, when it has at most SCAN_BUDGET cells: chains of windows need a round per kept window (~17 us
# each; 2,000 windows with falling scores: 1,000 rounds), the scan about 1 us per kept node.
SCAN_AFTER_ROUNDS = 8
SCAN_BUDGET = 16_000_000


def _greedy_rounds(num_nodes: int, src: Tensor, dst: Tensor) -> Tensor:
    """Greedy NMS decisions on a suppression graph: which of num_nodes nodes (rank order) are kept [n] bool.

    src -> dst edges (src ranked higher) mean "src suppresses dst if src is kept". Each round keeps
    every undecided node with no undecided predecessor, then drops the nodes they suppress; the
    first undecided node always qualifies, so this ends, and it decides as the sequential loop does.
    Nodes still undecided after SCAN_AFTER_ROUNDS rounds go to `_scan`.
    """
    device = src.device
    src, dst = src.cpu().numpy(), dst.cpu().numpy()  # a round is ~10 tiny ops: numpy's cost ~1 us each
    kept = np.zeros(num_nodes, dtype=bool)
    undecided = np.ones(num_nodes, dtype=bool)
    rounds = 0
    while True:
        waiting = np.bincount(dst, minlength=num_nodes)  # [n] undecided predecessors
        accept = undecided & (waiting == 0)
        kept |= accept
        undecided &= ~accept
        undecided[dst[accept[src]]] = False  # suppressed by a node accepted now
        live = undecided[src] & undecided[dst]  # [E] edges that can still matter
        src, dst = src[live], dst[live]
        rounds += 1
        left = np.flatnonzero(undecided)
        if not len(left):
            return torch.from_numpy(kept).to(device)
        if rounds >= SCAN_AFTER_ROUNDS and len(left) ** 2 <= SCAN_BUDGET:
            kept[left[_scan(left, src, dst, num_nodes)]] = True
            return torch.from_numpy(kept).to(device)


def _scan(nodes: np.ndarray, src: np.ndarray, dst: np.ndarray, num_nodes: int) -> np.ndarray:
    """The sequential greedy loop over `nodes` (rank order) and the edges among them -> kept [len(nodes)] bool."""
    position = np.full(num_nodes, -1)
    position[nodes] = np.arange(len(nodes))
    suppresses = np.zeros((len(nodes), len(nodes)), dtype=bool)
    suppresses[position[src], position[dst]] = True
    kept = np.zeros(len(nodes), dtype=bool)
    removed = np.zeros(len(nodes), dtype=bool)
    for i in range(len(nodes)):
        if not removed[i]:
            kept[i] = True
            removed |= suppresses[i]
    return kept


def _hard_nms(segments: Tensor, groups: Tensor, order: Tensor, iou_threshold: float,
              max_detections: int | None, block_size: int | None = None) -> Tensor:
    """Greedy NMS of the candidates `order` (rank order) within groups -> kept indices [K] in rank order.

    A block of candidates is first checked against everything kept before it (cross pairs), then
    the survivors are decided among themselves; both steps only look at overlapping pairs. Blocks
    double in size, but a block whose survivors overlap in more than PAIR_BUDGET pairs is halved
    (its lower-ranked half waits for the next block), so memory stays bounded on dense clusters.
    block_size None: DEFAULT_BLOCK_SIZE, or one block for up to ONE_BLOCK candidates without max_detections.
    """
    if block_size is None:
        block_size = len(order) if max_detections is None and len(order) <= ONE_BLOCK else DEFAULT_BLOCK_SIZE
    kept = order[:0]  # [K] kept so far, rank order
    waiting = order  # [W] undecided, rank order
    while len(waiting):
        block, waiting = waiting[:block_size], waiting[block_size:]  # [B] rank order
        block_size *= 2
        if len(kept):
            i, j = _cross_pairs(segments[kept], groups[kept], segments[block], groups[block])  # [E]
            hit = _above(tiou(segments[kept[i]], segments[block[j]]), iou_threshold)  # [E]
            suppressed = torch.zeros(len(block), dtype=torch.bool, device=block.device)
            suppressed[j[hit]] = True
            block = block[~suppressed]
        sorted_block, count = _overlap_runs(segments[block], groups[block])
        while len(block) > 1 and int(count.sum()) > PAIR_BUDGET:
            half = len(block) // 2
            block, waiting = block[:half], torch.cat([block[half:], waiting])
            block_size = max(half, 1)
            sorted_block, count = _overlap_runs(segments[block], groups[block])
        p, q = _overlapping_pairs(sorted_block, count)  # [E] block positions
        src, dst = torch.minimum(p, q), torch.maximum(p, q)  # higher rank first
        edge = _above(tiou(segments[block[src]], segments[block[dst]]), iou_threshold)  # [E]
        kept = torch.cat([kept, block[_greedy_rounds(len(block), src[edge], dst[edge])]])
        if max_detections is not None and len(kept) >= max_detections:
            break
    return kept if max_detections is None else kept[:max_detections]


# ---------------------------------------------------------------------------------------------------
# soft NMS


def _soft_nms(segments: Tensor, scores: Tensor, groups: Tensor, order: Tensor, method: str,
              iou_threshold: float, sigma: float, score_threshold: float | None,
              max_detections: int | None, adaptive: tuple[float, float | None] = (0.9, None),
              ) -> tuple[Tensor, Tensor]:
    """Soft NMS of the candidates `order` within groups -> (kept indices [K], decayed scores [K]), best first.

    One group (class-agnostic, or one class) picks one at a time over bands of overlapping segments
    (`_soft_nms_scan`); several groups pick one per group a step on [groups, members] planes
    (`_soft_nms_steps`). Both give the same picks and bit-identical scores.
    adaptive: (high_threshold, width_scale) of the "adaptive" method."""
    device = scores.device
    if not len(order):
        return order, scores[:0]
    # candidates by input index, so that ties pick the earliest input
    index = order.sort().values  # [N']
    steps = len(index) if max_detections is None else min(len(index), max_detections)
    candidate_groups = groups[index]
    if bool((candidate_groups == candidate_groups[0]).all()):
        sweep, count = _overlap_runs(segments[index], candidate_groups)  # [N'] start order, partners after each
        index = index[sweep]
        picked, picked_score = _soft_nms_scan(
            *(t.cpu().numpy() for t in (segments[index, 0], segments[index, 1], scores[index], index, count)),
            steps, method, iou_threshold, sigma, score_threshold, adaptive)
        return _best_first(torch.from_numpy(picked).to(device), torch.from_numpy(picked_score).to(device),
                           max_detections)
    picked, picked_score = _soft_nms_planes(segments, scores, groups, index, steps, method, iou_threshold, sigma,
                                            score_threshold, max_detections, adaptive)
    return _best_first(picked, picked_score, max_detections)


def _soft_nms_planes(segments: Tensor, scores: Tensor, groups: Tensor, index: Tensor, steps: int, method: str,
                     iou_threshold: float, sigma: float, score_threshold: float | None, max_detections: int | None,
                     adaptive: tuple[float, float | None]) -> tuple[Tensor, Tensor]:
    """Soft NMS of the candidates `index` (input order), one row per group (`_soft_nms_steps`) -> picked
    input indices [K] and their scores [K], in no particular order."""
    device = index.device
    _, dense = torch.unique(groups[index], return_inverse=True)  # [N'] row of each candidate
    by_row = torch.sort(dense, stable=True).indices
    index, dense = index[by_row], dense[by_row]
    rows = int(dense.max()) + 1
    row_size = torch.bincount(dense, minlength=rows)  # [G]
    col = torch.arange(len(index), device=device) - (torch.cumsum(row_size, 0) - row_size)[dense]  # [N']
    width = int(row_size.max())
    member = torch.full((rows, width), -1, dtype=torch.long, device=device)  # [G, M] input index, -1 pad
    member[dense, col] = index
    start = torch.zeros(rows, width, dtype=segments.dtype, device=device)  # [G, M]
    start[dense, col] = segments[index, 0]
    end = torch.zeros_like(start)  # [G, M]
    end[dense, col] = segments[index, 1]
    length = end - start  # [G, M]
    current = torch.full((rows, width), -math.inf, dtype=scores.dtype, device=device)  # [G, M], -inf: gone
    current[dense, col] = scores[index]
    gone = current == -math.inf  # [G, M] picked, dropped or padding

    picked, picked_score = _soft_nms_steps(
        *(t.cpu().numpy() for t in (start, end, length, current, gone, member)), min(width, steps), method,
        iou_threshold, sigma, score_threshold, max_detections, adaptive)
    picked, picked_score = torch.from_numpy(picked).to(device), torch.from_numpy(picked_score).to(device)
    found = picked >= 0
    return picked[found], picked_score[found]


def _best_first(keep: Tensor, kept_scores: Tensor, max_detections: int | None) -> tuple[Tensor, Tensor]:
    """Picks [K] and their scores [K] -> highest score first, ties by input index, at most max_detections."""
    by_index = keep.sort().indices
    keep, kept_scores = keep[by_index], kept_scores[by_index]
    best_first = torch.sort(kept_scores, descending=True, stable=True).indices
    if max_detections is not None:
        best_first = best_first[:max_detections]
    return keep[best_first], kept_scores[best_first]


def _soft_nms_scan(start: np.ndarray, end: np.ndarray, current: np.ndarray, member: np.ndarray, count: np.ndarray,
                   steps: int, method: str, iou_threshold: float, sigma: float, score_threshold: float | None,
                   adaptive: tuple[float, float | None]) -> tuple[np.ndarray, np.ndarray]:
    """The sequential picks of soft NMS for one group -> (picked input index [S], their scores [S]).

    The segments come in start order, and segment i overlaps only segments of the band
    lo[i] .. i + count[i] (count: the partners that start inside it, from `_overlap_runs`; lo: the
    first segment whose run reaches i). A pick therefore costs a dozen ops over its band and one argmax,
    instead of a pass of the row planes; scores outside the band are multiplied by exactly 1 there.
    """
    length = end - start
    empty = bool((length == 0).any())  # a union is 0 only between two empty segments
    decay = current.dtype.type(-1.0 / sigma)
    gone = current.dtype.type(-np.inf)
    position = np.arange(len(current))
    hi = position + count + 1  # [N] exclusive band end
    lo = np.searchsorted(np.maximum.accumulate(hi - 1), position, side="left")  # [N] band start
    lo, hi = lo.tolist(), hi.tolist()
    picked, picked_score = [], []
    with np.errstate(invalid="ignore"):
        for _ in range(steps):
            i = int(current.argmax())
            best = current[i]
            if best == gone:
                break
            if np.count_nonzero(current == best) > 1:  # ties go to the earliest input, as in the planes
                tied = np.flatnonzero(current == best)
                i = int(tied[member[tied].argmin()])
            picked.append(member[i])
            picked_score.append(best)
            current[i] = gone
            band = slice(lo[i], hi[i])
            scores = current[band]  # a view: updated in place
            overlap = _tiou_to(start[i], end[i], start[band], end[band], length[band], empty)
            weight = _soft_weight(overlap, length[i], method, iou_threshold, decay, adaptive)
            np.multiply(scores, weight.astype(current.dtype, copy=False), out=scores, where=scores > gone)
            if score_threshold is not None:
                np.copyto(scores, gone, where=scores < score_threshold)
    return np.array(picked, dtype=np.int64), np.array(picked_score, dtype=current.dtype)


# Re-pack the planes (drop the columns every row is done with) once the widest row has this share of its
# columns left: a pick's ops then cover the live segments only.
COMPACT_SHARE = 0.75


def _soft_nms_steps(start: np.ndarray, end: np.ndarray, length: np.ndarray, current: np.ndarray, gone: np.ndarray,
                    member: np.ndarray, steps: int, method: str, iou_threshold: float, sigma: float,
                    score_threshold: float | None, max_detections: int | None,
                    adaptive: tuple[float, float | None]) -> tuple[np.ndarray, np.ndarray]:
    """The sequential picks of soft NMS on [G, M] planes, one row per group -> (picked [S, G] input index,
    -1 where a row had nothing left; their scores [S, G]).

    Each pick is about 20 array ops over the plane; in numpy one costs about a microsecond, a torch op
    several, and on a GPU every op would be a launch plus a sync for the loop test, so the planes come
    to the host once. Rows keep their members in input order (argmax ties pick the earliest input), also
    when the planes are re-packed (`COMPACT_SHARE`).
    """
    rows = current.shape[0]
    empty = bool((length == 0).any())  # a union is 0 only between two empty segments
    picked = np.full((steps, rows), -1, dtype=np.int64)
    picked_score = np.full((steps, rows), -np.inf, dtype=current.dtype)
    row_ids = np.arange(rows)
    decay = current.dtype.type(-1.0 / sigma)
    with np.errstate(invalid="ignore"):  # -inf * 0 = NaN on gone cells, cleared each step
        for step in range(steps):
            col = current.argmax(axis=1)  # [G] first maximum
            best = current[row_ids, col]
            active = best > -np.inf
            if not active.any():
                break
            picked[step] = np.where(active, member[row_ids, col], -1)
            picked_score[step] = best
            gone[row_ids, col] = True
            overlap = _tiou_to(start[row_ids, col][:, None], end[row_ids, col][:, None], start, end, length, empty)
            weight = _soft_weight(overlap, length[row_ids, col][:, None], method, iou_threshold, decay, adaptive)
            current *= weight.astype(current.dtype, copy=False)  # -inf * 0 on a gone cell: cleared below
            if score_threshold is not None:
                gone |= current < score_threshold
            np.copyto(current, -np.inf, where=gone)  # also clears -inf * 0 = NaN
            if max_detections is not None:
                # later picks score <= anything still waiting, so stop once enough picks beat all of it
                if int((picked_score[:step + 1] > current.max()).sum()) >= max_detections:
                    break
            if step % 16 == 15:
                widest = int((~gone).sum(axis=1).max())
                if widest <= COMPACT_SHARE * current.shape[1]:
                    order = np.argsort(gone, axis=1, kind="stable")[:, :max(widest, 1)]  # live first, in order
                    start, end, length, current, gone, member = (np.take_along_axis(a, order, axis=1) for a in
                                                                 (start, end, length, current, gone, member))
    return picked, picked_score


def _tiou_to(pick_start: np.ndarray, pick_end: np.ndarray, start: np.ndarray, end: np.ndarray,
             length: np.ndarray, empty: bool = True) -> np.ndarray:
    """tIoU of segments (start, end, length = end - start) with picks (pick_start, pick_end), broadcast.

    The arithmetic of `tal.ops.segments.tiou`, operation for operation (so bit-identical, 0 where the
    union is 0), on cached lengths: soft NMS runs it once per pick.
    empty=False: no segment has zero length, so no union is 0 and that check is skipped.
    """
    inter = np.minimum(end, pick_end) - np.maximum(start, pick_start)
    np.maximum(inter, 0, out=inter)
    union = (pick_end - pick_start) + length - inter
    if empty:
        np.copyto(union, 1, where=union == 0)
    return inter / union


def _soft_weight(overlap: np.ndarray, pick_length: np.ndarray, method: str, iou_threshold: float,
                 decay: np.floating, adaptive: tuple[float, float | None]) -> np.ndarray:
    """Soft NMS's factors for segments at tIoU `overlap` with a pick of width `pick_length` (broadcast);
    decay = -1 / sigma."""
    if method == "linear":
        return np.where(overlap.astype(np.float64) > iou_threshold, 1 - overlap, 1)  # as `_above`
    if method == "adaptive":
        high, scale = adaptive
        limit = iou_threshold + (high - iou_threshold) * pick_length / scale
        return np.where(overlap > limit, np.exp(overlap * overlap * decay), 1)
    return np.exp(np.square(overlap) * decay)


# ---------------------------------------------------------------------------------------------------
# voting


def _vote(segments: Tensor, scores: Tensor, groups: Tensor, keep: Tensor, voters: Tensor,
          voting_threshold: float, voting_weight: str) -> Tensor:
    """Weighted mean of the voters (indices) of each kept segment's group with tIoU >= threshold: [K, 2]."""
    if not len(keep):
        return segments[keep]
    k, v = _cross_pairs(segments[keep], groups[keep], segments[voters], groups[voters])  # [E]
    v = voters[v]
    overlap = tiou(segments[keep[k]], segments[v])  # [E]
    close = overlap >= voting_threshold
    k, v = k[close], v[close]
    weight = scores[v].to(segments.dtype)  # [E]
    if voting_weight == "score-tiou":
        weight = weight * overlap[close].to(segments.dtype)
    total = torch.zeros(len(keep), dtype=segments.dtype, device=segments.device).index_add_(0, k, weight)  # [K]
    mean = torch.zeros(len(keep), 2, dtype=segments.dtype, device=segments.device).index_add_(
        0, k, weight[:, None] * segments[v])  # [K, 2]
    voted = total > 0
    return torch.where(voted[:, None], mean / torch.where(voted, total, 1.0)[:, None], segments[keep])
