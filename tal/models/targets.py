"""Class targets when one segment carries several labels (THUMOS14 annotates every CliffDiving instance
as Diving too, with the same boundaries).

The official matchers break ties between identical ground truths by annotation order, so the second
label of a doubly annotated segment never gets a positive. Here every label trains: a position matched
to a ground truth takes as its target the uniform distribution over the labels of all ground truths
of its video with exactly that segment (itself included), and the softmax heads (A2Net, S3D, TCN)
train it with cross-entropy against that distribution. Each label thus gets a positive with weight
1 / k, which is the cross-entropy form of multi-label training for a softmax over classes plus
background; a segment with one label gets the usual one-hot target, so nothing else changes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def label_distributions(gt_segments: torch.Tensor, gt_labels: torch.Tensor, gt_valid: torch.Tensor,
                        num_classes: int) -> torch.Tensor:
    """[B, G, C + 1] target per ground truth (column 0 = background, never set): uniform over the labels of
    the valid ground truths with the same [start, end]; rows of invalid ground truths are zero.

    gt_segments [B, G, 2], gt_labels [B, G] in [0, C), gt_valid [B, G].
    """
    same = (gt_segments[:, :, None, :] == gt_segments[:, None, :, :]).all(dim=-1)  # [B, G, G]
    same &= gt_valid[:, :, None] & gt_valid[:, None, :]
    onehot = F.one_hot(gt_labels + 1, num_classes + 1).to(gt_segments.dtype)  # [B, G, C + 1]
    hot = (same.to(gt_segments.dtype) @ onehot).clamp(max=1.0)  # [B, G, C + 1]
    return hot / hot.sum(dim=-1, keepdim=True).clamp(min=1.0)


def class_targets(distributions: torch.Tensor, index: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """[B, A, C + 1] soft targets: the matched ground truth's distribution on positives, background elsewhere.

    distributions [B, G, C + 1] (`label_distributions`), index [B, A] matched ground truth, positive [B, A].
    """
    matched = distributions.gather(1, index[..., None].expand(-1, -1, distributions.shape[-1]))  # [B, A, C + 1]
    background = torch.zeros_like(matched)
    background[..., 0] = 1.0
    return torch.where(positive[..., None], matched, background)
