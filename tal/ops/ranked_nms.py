"""The NMS of moment retrieval: greedy over moments already ranked best first, 2D-TAN's rule.

This is the one NMS of the grounding pipeline (microsoft/2D-TAN `lib/core/eval.py`, `nms`): the
heads' decoders run it on the full ranked list of candidates and keep the first `top_k` survivors,
and `tal.eval.grounding` runs the same function on ranked lists from elsewhere.
Overlap of a kept moment i with a later one j is inter / (len_i + len_j - inter), in float64 on the
given numbers (seconds), and j survives only while `overlap <= threshold`; an undefined overlap
(0 / 0, two zero-length moments) suppresses, as NaN <= t is false in the official code, at every
threshold including >= 1. `threshold=None` suppresses nothing.
"""
from __future__ import annotations

import torch

from tal.ops.threads import single_threaded


@single_threaded
def ranked_nms(segments: torch.Tensor, valid: torch.Tensor | None, threshold: float | None,
               top_k: int | None) -> torch.Tensor:
    """Ranked segments [B, M, 2] (best first; `valid` [B, M] marks real ones) -> kept ranks [B, K].

    K = min(top_k, M) (top_k None or <= 0: M); rows that ran out of survivors are padded with -1.
    One round per kept rank, each a vectorised overlap of that round's pick with every candidate.
    """
    segments = segments.double()
    num_rows, num_candidates = segments.shape[:2]
    rounds = num_candidates if top_k is None or top_k <= 0 else min(top_k, num_candidates)
    alive = torch.ones(num_rows, num_candidates, dtype=torch.bool, device=segments.device) if valid is None \
        else valid.to(segments.device, torch.bool).clone()  # [B, M]
    start, end = segments[..., 0], segments[..., 1]  # [B, M]
    length = end - start
    position = torch.arange(num_candidates, device=segments.device).expand(num_rows, -1)  # [B, M]
    rows = torch.arange(num_rows, device=segments.device)
    kept = torch.full((num_rows, rounds), -1, dtype=torch.long, device=segments.device)
    for r in range(rounds):
        pick = torch.where(alive, position, num_candidates).min(dim=1).values  # [B] first alive rank
        has_pick = pick < num_candidates
        if not has_pick.any():
            break
        pick = pick.clamp(max=num_candidates - 1)
        kept[:, r] = torch.where(has_pick, pick, -1)
        alive[rows, pick] = False
        if threshold is None:
            continue
        inter = (torch.minimum(end[rows, pick, None], end) - torch.maximum(start[rows, pick, None], start)).clamp(min=0)
        overlap = inter / (length[rows, pick, None] + length - inter)  # [B, M], NaN where 0 / 0
        alive &= overlap <= threshold
    return kept


@single_threaded
def kept_moments(segments: torch.Tensor, scores: torch.Tensor, kept: torch.Tensor) -> list[list[tuple]]:
    """Ranked segments [B, M, 2], their scores [B, M] and `ranked_nms`' kept [B, K] -> per row, the kept
    (start, end, score) tuples in rank order."""
    index = kept.clamp(min=0)
    rows = torch.cat([segments.double().gather(1, index[..., None].expand(-1, -1, 2)),
                      scores.double().gather(1, index)[..., None]], dim=-1)  # [B, K, 3]
    counts = (kept >= 0).sum(1).tolist()
    return [[tuple(m) for m in row[:n]] for row, n in zip(rows.cpu().tolist(), counts)]
