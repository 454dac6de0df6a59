"""Anchors for one-stage temporal detectors (A2Net's anchor-based module, SSAD, S3D).

Units: every segment is [start, end] in feature steps, where feature i spans [i, i + 1). A pyramid
level with stride S feature steps and L positions puts position j at centre (j + 0.5) * S; its default
spans are centred there, one per width ratio r, of width r * S.

Boxes are coded as centre/log-width offsets scaled by fixed factors (SSAD's and A2Net's "0.1, 0.1"):
dx = (x - x_a) / (w_a * scale_x), dw = log(w / w_a) / scale_w.

Matching and sampling follow SSAD / A2Net: an anchor is positive when its best tIoU with a ground
truth exceeds the threshold; a hard negative is a non-positive anchor whose *predicted* overlap exceeds
it (the net believes it overlaps and is wrong); easy negatives are drawn at random among the rest,
`ratio` per positive. S3D follows SSD instead: `match_with_best_spans` also makes each ground truth's
best default span positive, and `mine_hard_negatives` keeps the negatives with the highest loss.
"""
from __future__ import annotations

import torch

from tal.ops.segments import tiou


def anchor_centres_widths(lengths: list[int], strides: list[float], ratios: list[float],
                          device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Default spans of a pyramid as (centre [A], width [A], level [A] long), all in feature steps.

    Order: level, then position, then ratio -- the order of a head conv's output viewed as
    [B, L, R, values] and flattened. A = sum(lengths) * len(ratios).
    """
    centres, widths, levels = [], [], []
    ratio = torch.as_tensor(ratios, dtype=torch.float32, device=device)  # [R]
    for level, (length, stride) in enumerate(zip(lengths, strides)):
        centre = (torch.arange(length, dtype=torch.float32, device=device) + 0.5) * stride  # [L]
        centres.append(centre[:, None].expand(length, len(ratios)).reshape(-1))  # [L*R]
        widths.append((ratio * stride)[None, :].expand(length, len(ratios)).reshape(-1))  # [L*R]
        levels.append(torch.full((length * len(ratios),), level, dtype=torch.long, device=device))
    return torch.cat(centres), torch.cat(widths), torch.cat(levels)


def anchor_segments(lengths: list[int], strides: list[float], ratios: list[float],
                    device: torch.device | str | None = None) -> torch.Tensor:
    """Default spans of a pyramid as [A, 2] (start, end) in feature steps; see `anchor_centres_widths`."""
    centre, width, _ = anchor_centres_widths(lengths, strides, ratios, device)
    return torch.stack([centre - width / 2, centre + width / 2], dim=-1)


def encode_segments(segments: torch.Tensor, anchors: torch.Tensor,
                    scales: tuple[float, float] = (0.1, 0.1)) -> torch.Tensor:
    """Offsets [..., 2] (dx, dw) that turn `anchors` [..., 2] into `segments` [..., 2] (positive widths)."""
    centre_a, width_a = (anchors[..., 0] + anchors[..., 1]) / 2, anchors[..., 1] - anchors[..., 0]
    centre, width = (segments[..., 0] + segments[..., 1]) / 2, segments[..., 1] - segments[..., 0]
    dx = (centre - centre_a) / (width_a * scales[0])
    dw = torch.log(width / width_a) / scales[1]
    return torch.stack([dx, dw], dim=-1)


def decode_segments(offsets: torch.Tensor, anchors: torch.Tensor,
                    scales: tuple[float, float] = (0.1, 0.1)) -> torch.Tensor:
    """Segments [..., 2] (start, end) from offsets [..., 2] (dx, dw) on `anchors` [..., 2]; inverse of encode."""
    centre_a, width_a = (anchors[..., 0] + anchors[..., 1]) / 2, anchors[..., 1] - anchors[..., 0]
    centre = centre_a + offsets[..., 0] * scales[0] * width_a
    width = width_a * torch.exp(offsets[..., 1] * scales[1])
    return torch.stack([centre - width / 2, centre + width / 2], dim=-1)


def match_segments(segments: torch.Tensor, gt_segments: torch.Tensor, gt_valid: torch.Tensor,
                   threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Match every segment to the ground truth it overlaps most.

    segments [..., A, 2], gt_segments [..., G, 2] with gt_valid [..., G] bool (padding off) ->
    best_tiou [..., A] (0 without ground truth), gt_index [..., A] (argmax, first on ties; 0 without
    ground truth), positive [..., A] = best_tiou > threshold (strictly, as SSAD / A2Net).
    """
    overlaps = tiou(segments[..., :, None, :], gt_segments[..., None, :, :])  # [..., A, G]
    overlaps = overlaps.masked_fill(~gt_valid[..., None, :], -1.0)
    if overlaps.shape[-1] == 0:
        best = overlaps.new_zeros(overlaps.shape[:-1])
        index = torch.zeros(overlaps.shape[:-1], dtype=torch.long, device=overlaps.device)
    else:
        best, index = overlaps.max(dim=-1)  # [..., A]
        best = best.clamp(min=0.0)
    return best, index, best > threshold


def mine_negatives(best_tiou: torch.Tensor, predicted_tiou: torch.Tensor, valid: torch.Tensor, threshold: float,
                   ratio: float, no_positive_fraction: float = 0.5,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positive, hard-negative and easy-negative masks over a set of anchors (any shape, pooled).

    positive = best_tiou > threshold; hard = not positive and predicted_tiou > threshold; easy =
    exactly round(ratio * num_positive) anchors drawn uniformly from the remaining valid ones (all of
    them if fewer), or `no_positive_fraction` of them when there is no positive (A2Net draws each with
    probability ratio * P / (N - P - H), i.e. the same count on average; an exact count keeps the
    balance fixed). Invalid anchors are in no mask.
    """
    positive = valid & (best_tiou > threshold)
    hard = valid & ~positive & (predicted_tiou > threshold)
    candidates = valid & ~positive & ~hard
    num_positive, num_candidates = int(positive.sum()), int(candidates.sum())
    if num_positive > 0:
        num_easy = min(round(ratio * num_positive), num_candidates)
    else:
        num_easy = int(no_positive_fraction * num_candidates)
    keys = torch.rand(candidates.shape, device=candidates.device, generator=generator)
    keys = keys.masked_fill(~candidates, -1.0).reshape(-1)
    easy = torch.zeros_like(keys, dtype=torch.bool)
    easy[keys.topk(num_easy).indices] = True
    return positive, hard, easy.view(candidates.shape)


def match_with_best_spans(anchors: torch.Tensor, anchor_valid: torch.Tensor, gt_segments: torch.Tensor,
                          gt_valid: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SSD matching of default spans: above-threshold spans plus each ground truth's best span.

    anchors [A, 2], anchor_valid [B, A] bool, gt_segments [B, G, 2], gt_valid [B, G] bool ->
    tiou [B, A] with the assigned ground truth, gt_index [B, A], positive [B, A] (valid spans only).
    A valid span is positive when its best tIoU exceeds `threshold` (see `match_segments`), or when it
    is the valid span a ground truth overlaps most (first on ties; only if that tIoU is > 0, so a
    zero-length ground truth forces nothing). A span that is the best of several ground truths takes
    the one it overlaps most, even over a ground truth it would have been matched to by threshold.
    """
    _, index, positive = match_segments(anchors, gt_segments, gt_valid, threshold)  # [B, A] x2
    if gt_segments.shape[1] == 0:
        return anchors.new_zeros(positive.shape), index, positive & anchor_valid
    overlaps = tiou(anchors[:, None, :], gt_segments[:, None, :, :])  # [B, A, G]
    overlaps = overlaps.masked_fill(~(anchor_valid[:, :, None] & gt_valid[:, None, :]), -1.0)
    best_of_gt = overlaps.argmax(dim=1)  # [B, G], the first best span of each ground truth
    spans = torch.arange(anchors.shape[0], device=anchors.device)  # [A]
    forced = (spans[None, :, None] == best_of_gt[:, None, :]) & (overlaps > 0)  # [B, A, G]
    is_forced = forced.any(dim=-1)  # [B, A]
    index = torch.where(is_forced, overlaps.masked_fill(~forced, -2.0).argmax(dim=-1), index)
    assigned = overlaps.gather(-1, index[..., None]).squeeze(-1).clamp(min=0.0)  # [B, A]
    return assigned, index, (positive | is_forced) & anchor_valid


def mine_hard_negatives(negative_loss: torch.Tensor, candidates: torch.Tensor, num_positive: torch.Tensor,
                        ratio: float) -> torch.Tensor:
    """SSD hard-negative mining, per row (video): the candidates with the highest loss as background.

    negative_loss [B, A] (e.g. -log p_background), candidates [B, A] bool, num_positive [B] ->
    negatives [B, A] bool: the round(ratio * num_positive[b]) candidates of row b with the highest
    loss (all of them if fewer; none when the row has no positive, as SSD). Ties go to the earlier span.
    """
    keys = negative_loss.masked_fill(~candidates, float("-inf"))  # [B, A]
    order = keys.argsort(dim=1, descending=True, stable=True)  # [B, A]
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(keys.shape[1], device=keys.device).expand_as(order))
    quota = torch.round(ratio * num_positive.to(torch.float64)).long()  # [B]
    return candidates & (rank < quota[:, None])
