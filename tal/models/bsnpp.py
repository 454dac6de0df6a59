"""BSN++: complementary boundary regressor and scale-balanced relation modeling for temporal action
proposals (Su et al., AAAI 2021, arXiv 2009.07641). Class-agnostic: it proposes segments, it does not
label them.

Input: every video rescaled to the same `num_steps` features (BSN/BMN's fixed-length input, 100 on
ActivityNet). A shared base (two kernel-3 temporal convs) feeds two branches:
- Complementary boundary regressor (CBR): a U-shaped temporal encoder-decoder with nested dense
  skip connections (UNet++ in 1D, `NestedTemporalUNet`), then a 1x1 conv to start and end logits
  per step.
- Bi-directional boundary matching: the same base + CBR (shared weights) also runs on the video
  reversed in time. Reversal turns starts into ends, so the backward pass's end head, re-reversed,
  is a second estimate of the forward starts, and its start head one of the ends. Both passes are
  trained on the boundary targets (the backward one on the reversed, swapped targets). They are
  fused by the geometric mean, start = sqrt(p_start_forward * p_end_backward) (end likewise): the
  paper multiplies the two directions' probabilities, so a boundary must be confirmed from both
  sides (an AND that suppresses a peak only one direction sees); the square root keeps the result
  on the scale of one probability, so the candidate rule (> peak_ratio * max) and the proposal score
  keep BMN's magnitudes, and it ranks exactly as the product does. The squared difference of the
  two directions' probabilities is reported as `loss_consistency`; it enters the total only with a
  non-zero `loss_weights["consistency"]` (default 0: we did not find such a term in the paper).
- Proposal map (BMN's boundary-matching map): cell (d, s) is the candidate [s, s + d + 1] (duration
  d + 1 steps, d < max_duration), valid when it ends inside the video. Its feature is BMN's: the
  base features at `num_samples` points evenly spread over the proposal extended by `context_ratio`
  of its length on each side (linear interpolation, zero outside the video), reduced by one linear
  layer per sample point (BMN's [num_samples, 1, 1] conv3d). Both steps are linear, so the reduction
  is applied first (a 1x1 conv to num_samples * map_dim channels) and the sampling is one product with
  a sparse [cells, num_samples * T] matrix built once: cheap on a CPU, and nothing of size
  [B, C, num_samples, D, T] is ever made.
- Proposal relation block (PRB): DANet-style self-attention over the map, in parallel and summed,
  each scaled by a zero-initialised gain: position-aware (every valid cell attends to the valid
  cells, keys and values averaged over `attention_pool` x `attention_pool` windows; 1 is the
  paper's full attention, the default 4 keeps a 100 x 100 map affordable on a CPU) and
  channel-aware (a C x C attention from the channels' similarity over the valid cells). Dot
  products are scaled by 1 / sqrt(their length), as in transformers, so the softmax does not
  saturate over thousands of cells. Then masked 2D convs (`tal.models.map_conv.MaskedMapConv`) and a
  1x1 conv give two confidences per cell: regression (trained to the cell's IoU) and classification.

Losses (one vectorized function each, batch-level counts as BMN):
- boundary: `boundary_targets` marks a step as a start (end) when at least half of its anchor, the
  unit interval centred on the step's start (end) time, lies in a ground truth's start (end) region
  of width max(min_boundary_steps, boundary_ratio * length); `balanced_bce` gives the positives and
  the negatives half of the loss each (BSN/BMN's ratio weighting). Averaged over the two directions.
- map_reg: half the squared error (BMN's 0.5 factor) of sigmoid(regression) to the IoU on cells chosen
  by `iou_balanced_sample` (high IoU > 0.7 all, medium and low as many as high, at random); the high
  ones re-sampled by duration with `scale_balanced_weights` (the paper's scale-balanced re-sampling).
- map_cls: `balanced_bce` with positives IoU > cls_iou (0.9) re-sampled by SBR, all other valid cells
  negative.
Total = boundary + 10 * map_reg + map_cls (+ 0 * consistency); `loss_weights` overrides.

Inference: fused start / end probabilities; candidate starts and ends are local maxima or values
above peak_ratio (0.5) times the video's maximum (`boundary_candidates`, BSN/BMN's rule); every valid
cell whose start and end are candidates (the first valid start and the last valid end always are,
`force_boundary_ends`, as BMN) scores p_start(s) * p_end(e) * reg * cls (BMN's product;
`score_fusion: sqrt` takes sqrt(reg * cls)); then BMN's soft-NMS (`tal.ops.nms`, "soft-adaptive":
gaussian decay, alpha 0.4, only above tIoU 0.5 + 0.4 * the pick's width / num_steps) keeps the best
`max_proposals` (100).

Units: segments are [start, end] in feature steps, feature i spanning [i, i + 1). Boundary index t:
the start probability is about time t (the start of feature t), the end probability about time t + 1
(the end of feature t); so cell (d, s) reads start s and end s + d.

What we could and could not check: the paper's method section was not available to us (only its
abstract and introduction); the items above are from our reading of it and from BSN / BMN. Choices
of ours: the fusion's square root, the PRB's key pooling and dot-product scaling, constant channel
width in the UNet (no deep supervision), SBR's equal-count-per-bin rule and its `scale_bins` equal
duration bins, one sample per point (BMN interpolates 3 sub-points per bin).

Batch contract (dict, B videos):
- "features": float [B, num_steps, D];
- "mask": bool [B, num_steps], True on valid steps (all of them for rescaled videos; a shorter
  video's padding is zeroed and its cells past its end ignored);
- "segments": list of B float tensors [N_i, 2], ground truth in feature steps (training only);
- "labels": list of B long tensors (ignored: proposals are class-agnostic).
`forward(batch)` returns {"loss": weighted total, "loss_boundary", "loss_map_reg", "loss_map_cls",
"loss_consistency": unweighted parts, detached}; `predict(batch)` returns, per video, (segments [K, 2]
in feature steps, scores [K], labels [K] zeros) sorted by score, highest first, after soft-NMS.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tal.errors import TalInputError
from tal.models.a2net import pad_ground_truth
from tal.models.layers import sample_segment_features
from tal.models.map_conv import MaskedMapConv, check_plan
from tal.ops.nms import postprocess_detections
from tal.ops.segments import tiou
from tal.registry import MODELS, model_section

LOSS_WEIGHTS = {"boundary": 1.0, "map_reg": 10.0, "map_cls": 1.0, "consistency": 0.0}
# BMN's soft-NMS (post_processing.py soft_nms(df, alpha=0.4, t1=0.5, t2=0.9)); width_scale defaults to num_steps
DEFAULT_NMS = {"method": "soft-adaptive", "sigma": 0.4, "iou_threshold": 0.5, "high_threshold": 0.9}
NMS_KEYS = {"method", "iou_threshold", "sigma", "score_threshold", "pre_nms_top_k", "voting_threshold",
            "voting_weight", "high_threshold", "width_scale"}
SCORE_FUSIONS = ("product", "sqrt")
SAMPLING_CHUNK = 256  # cells whose sampling weights are computed at once when the matrix is built


# ---------------------------------------------------------------------------------------------------
# bi-directional boundary matching


def reverse_steps(x: torch.Tensor, num_valid: torch.Tensor) -> torch.Tensor:
    """Reverse each video's valid prefix in time: x [B, T, ...], num_valid [B] -> the same shape.

    Step t < n moves to n - 1 - t; padding steps stay where they are. The map is its own inverse.
    """
    steps = torch.arange(x.shape[1], device=x.device)  # [T]
    n = num_valid.to(x.device)[:, None]  # [B, 1]
    index = torch.where(steps < n, n - 1 - steps, steps)  # [B, T]
    index = index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, index)


def backward_to_forward(backward: torch.Tensor, num_valid: torch.Tensor) -> torch.Tensor:
    """The backward pass's (start, end) outputs [B, 2, T], in reversed time, as forward (start, end) [B, 2, T].

    Re-reversed in time, with start and end swapped: what ends at reversed step n - 1 - t starts at t.
    """
    return reverse_steps(backward.transpose(1, 2), num_valid).flip(-1).transpose(1, 2)


def fuse_boundaries(forward: torch.Tensor, backward: torch.Tensor, num_valid: torch.Tensor) -> torch.Tensor:
    """Bi-directional fusion of boundary probabilities -> [B, 2, T] (start, end) in forward time.

    forward [B, 2, T]: the pass over the video; backward [B, 2, T]: the pass over the reversed video,
    in its own time. start = sqrt(forward start * re-reversed backward end), end likewise.
    """
    return (forward * backward_to_forward(backward, num_valid)).clamp(min=0.0).sqrt()


# ---------------------------------------------------------------------------------------------------
# proposal map geometry and feature sampling


def proposal_map(num_steps: int, max_duration: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cells of the map: segments [D, T, 2] (cell (d, s) = [s, s + d + 1] in feature steps) and valid [D, T].

    D = max_duration rows (durations 1..D steps), T = num_steps columns (starts); a cell is valid when
    its end is at most T.
    """
    duration = torch.arange(1, max_duration + 1, dtype=torch.float32)[:, None]  # [D, 1]
    start = torch.arange(num_steps, dtype=torch.float32)[None, :]  # [1, T]
    start, duration = torch.broadcast_tensors(start, duration)  # [D, T]
    segments = torch.stack([start, start + duration], dim=-1)  # [D, T, 2]
    return segments, segments[..., 1] <= num_steps


def map_sampling_matrix(segments: torch.Tensor, num_steps: int, num_points: int,
                        context_ratio: float) -> torch.Tensor:
    """BMN's sampling of each cell's feature as a sparse matrix: segments [N, 2] -> sparse [N, num_points * T].

    Each segment is extended by context_ratio of its length on both sides; entry (n, p * T + t) is the
    weight of feature t in sample point p of segment n, with `sample_segment_features`'s interpolation
    (a video of num_steps valid steps). The weights are read off by sampling the identity matrix, so
    they are exactly that function's, a chunk of cells at a time.
    """
    length = segments[:, 1] - segments[:, 0]  # [N]
    extended = torch.stack([segments[:, 0] - context_ratio * length, segments[:, 1] + context_ratio * length], -1)
    identity = torch.eye(num_steps)[None]  # [1, T, T]: feature t is the one-hot vector e_t
    num_valid, rows, cols, values = torch.tensor([num_steps]), [], [], []
    for first in range(0, len(extended), SAMPLING_CHUNK):
        chunk = extended[first:first + SAMPLING_CHUNK]  # [n, 2]
        weights = sample_segment_features(identity, num_valid, torch.zeros(len(chunk), dtype=torch.long), chunk,
                                          num_points)  # [n, P, T]
        cell, point, step = weights.nonzero(as_tuple=True)
        rows.append(cell + first)
        cols.append(point * num_steps + step)
        values.append(weights[cell, point, step])
    matrix = torch.sparse_coo_tensor(torch.stack([torch.cat(rows), torch.cat(cols)]), torch.cat(values),
                                     (len(segments), num_points * num_steps), check_invariants=True)
    return matrix.coalesce()


# ---------------------------------------------------------------------------------------------------
# targets, sampling and losses


def boundary_targets(gt_segments: torch.Tensor, gt_valid: torch.Tensor, num_steps: int, boundary_ratio: float,
                     min_boundary_steps: float) -> torch.Tensor:
    """BSN's boundary labels: the largest fraction of each step's anchor inside a start (end) region -> [B, 2, T].

    gt_segments [B, G, 2], gt_valid [B, G]. The region of a boundary is centred on it, of width
    max(min_boundary_steps, boundary_ratio * ground-truth length). Step t's start anchor is
    [t - 0.5, t + 0.5] (around time t), its end anchor [t + 0.5, t + 1.5] (around time t + 1).
    """
    length = gt_segments[..., 1] - gt_segments[..., 0]  # [B, G]
    half = torch.clamp(boundary_ratio * length, min=min_boundary_steps) / 2  # [B, G]
    times = torch.arange(num_steps, dtype=gt_segments.dtype, device=gt_segments.device)  # [T]
    out = []
    for which, anchor_centre in ((0, times), (1, times + 1)):
        boundary = gt_segments[..., which]  # [B, G]
        low = torch.maximum(anchor_centre[None, :, None] - 0.5, (boundary - half)[:, None, :])  # [B, T, G]
        high = torch.minimum(anchor_centre[None, :, None] + 0.5, (boundary + half)[:, None, :])
        inside = (high - low).clamp(min=0.0) * gt_valid[:, None, :]  # [B, T, G], anchor length 1
        out.append(_max_over_last(inside))
    return torch.stack(out, dim=1)


def balanced_bce(logits: torch.Tensor, positive_weight: torch.Tensor, negative_weight: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy where the positives and the negatives each carry half of the loss.

    All of one shape; positive_weight (target 1) and negative_weight (target 0) are per-entry weights
    (0 = not used, 1 = once, k = re-sampled k times). Loss = 0.5 * weighted mean over positives + 0.5 *
    weighted mean over negatives: with 0/1 weights this is BSN/BMN's ratio-weighted logistic loss. A
    side without weight adds 0.
    """
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    pos_total, neg_total = positive_weight.sum(), negative_weight.sum()
    return 0.5 * ((pos * positive_weight).sum() / pos_total.clamp(min=1e-12)
                  + (neg * negative_weight).sum() / neg_total.clamp(min=1e-12))


def iou_map_targets(cells: torch.Tensor, gt_segments: torch.Tensor, gt_valid: torch.Tensor) -> torch.Tensor:
    """Best tIoU of every cell with the ground truth: cells [D, T, 2], gt [B, G, 2], gt_valid [B, G] -> [B, D, T]."""
    overlap = tiou(cells[None, :, :, None, :], gt_segments[:, None, None, :, :])  # [B, D, T, G]
    return _max_over_last(overlap * gt_valid[:, None, None, :])


def _max_over_last(x: torch.Tensor) -> torch.Tensor:
    """Maximum over the last dimension, 0 when it is empty (no ground truth)."""
    return x.amax(dim=-1) if x.shape[-1] else x.new_zeros(x.shape[:-1])


def random_subset(candidates: torch.Tensor, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """min(count, #candidates) of the True entries of `candidates`, uniformly at random without replacement."""
    keys = torch.rand(candidates.shape, generator=generator, device=candidates.device)
    keys = keys.masked_fill(~candidates, 2.0).flatten()  # non-candidates sort last
    count = min(count, int(candidates.sum()))
    chosen = torch.zeros_like(keys, dtype=torch.bool)
    chosen[keys.topk(count, largest=False).indices] = True
    return chosen.view(candidates.shape)


def iou_balanced_sample(iou: torch.Tensor, valid: torch.Tensor, low_iou: float = 0.3, high_iou: float = 0.7,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BMN's IoU-balanced sampling of map cells: -> masks (high, medium, low) of iou's shape.

    Over the valid cells of the whole batch: every cell with IoU > high_iou is taken; of the cells with
    low_iou < IoU <= high_iou, and of those with IoU <= low_iou, as many as there are high ones (all
    of them if fewer), uniformly at random. Cells that overlap nothing (IoU 0) are never sampled (BMN's
    pem_reg_loss: u_lmask = (gt <= 0.3) & (gt > 0)).
    """
    high = valid & (iou > high_iou)
    count = int(high.sum())
    medium = random_subset(valid & (iou > low_iou) & (iou <= high_iou), count, generator)
    low = random_subset(valid & (iou > 0) & (iou <= low_iou), count, generator)  # BMN: 0 < IoU <= 0.3
    return high, medium, low


def duration_bins(max_duration: int, num_bins: int) -> torch.Tensor:
    """Duration bin of each map row: [D] long, row d (d + 1 steps) in bin floor(d * num_bins / D): equal-width bins."""
    return torch.arange(max_duration) * num_bins // max_duration


def scale_balanced_weights(positive: torch.Tensor, row_bin: torch.Tensor,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """Scale-balanced re-sampling of positive map cells by duration -> multiplicities, float, positive's shape.

    positive [..., D, T] bool (all videos of the batch pooled); row_bin [D] the duration bin of each row.
    With P positives in K' non-empty bins, every non-empty bin is re-sampled to the same count
    q = round(P / K'): a bin of n positives gives each of them q // n copies, and q % n of them (at
    random) one more; so a bin is down-sampled without replacement when n > q and up-sampled when
    n < q. E.g. positives [12, 3, 0, 1] per bin -> q = 5 and [5, 5, 0, 5] samples.
    """
    flat = positive.flatten()
    index = flat.nonzero()[:, 0]  # [P]
    bins = row_bin.to(positive.device)[:, None].expand(positive.shape[-2:]).expand(positive.shape).flatten()[index]
    weights = torch.zeros(flat.shape, dtype=torch.float32, device=positive.device)
    if not len(index):
        return weights.view(positive.shape)
    counts = torch.bincount(bins)  # [K]
    quota = round(len(index) / int((counts > 0).sum()))
    keys = bins.double() + torch.rand(len(index), generator=generator, device=positive.device).double()
    order = keys.argsort()  # by bin, random within a bin
    first_of_bin = torch.cumsum(counts, 0) - counts  # [K]
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=order.device) - first_of_bin[bins[order]]
    n = counts[bins]  # [P]
    weights[index] = (quota // n + (rank < quota % n).long()).float()
    return weights.view(positive.shape)


def boundary_candidates(prob: torch.Tensor, valid: torch.Tensor, peak_ratio: float,
                        force: str | None = None) -> torch.Tensor:
    """BSN/BMN's candidate boundaries: local maxima or above peak_ratio * the video's maximum.

    prob, valid [B, T] -> [B, T] bool. A step is a local maximum when it is strictly above both
    neighbours (beyond the ends, and past a video's valid steps, counts as -inf). force "first" /
    "last" also makes the first / last valid step a candidate (BMN's post_processing: start_bins[0] = 1
    and end_bins[-1] = 1).
    """
    padded = F.pad(prob.masked_fill(~valid, -math.inf), (1, 1), value=-math.inf)  # [B, T + 2]
    peak = (padded[:, 1:-1] > padded[:, :-2]) & (padded[:, 1:-1] > padded[:, 2:])
    top = prob.masked_fill(~valid, -math.inf).amax(dim=1, keepdim=True)  # [B, 1]
    out = valid & (peak | (prob > peak_ratio * top))
    if force is not None:
        steps = torch.arange(prob.shape[1], device=prob.device)
        edge = 0 if force == "first" else valid.sum(dim=1, keepdim=True) - 1  # [B, 1] or 0
        out |= valid & (steps[None] == edge)
    return out


# ---------------------------------------------------------------------------------------------------
# network parts


class TemporalBlock(nn.Module):
    """Two kernel-3 temporal convs with ReLU, each output multiplied by the valid weight: [B, C_in, T] -> [B, C, T]."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv1d(in_dim, dim, 3, padding=1), nn.Conv1d(dim, dim, 3, padding=1)])

    def forward(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.relu(conv(x)) * weight
        return x


class NestedTemporalUNet(nn.Module):
    """UNet++ over time (Zhou et al., 2018) in 1D: [B, C_in, T] and weight [B, 1, T] -> [B, dim, T].

    Level i runs at ceil(T / 2**i) steps (max-pool 2). Node (i, 0) encodes: a block on the pooled node
    (i - 1, 0) (the input for i = 0). Node (i, j), j >= 1, decodes: a block on the concatenation of
    nodes (i, 0..j-1) (the nested dense skips) and node (i + 1, j - 1) upsampled (linear). The output
    is node (0, depth - 1). Blocks are `TemporalBlock`s of `dim` channels at every level.
    """

    def __init__(self, in_dim: int, dim: int, depth: int):
        super().__init__()
        self.depth = depth
        self.blocks = nn.ModuleDict({
            f"{i}_{j}": TemporalBlock((in_dim if i == 0 else dim) if j == 0 else dim * (j + 1), dim)
            for i in range(depth) for j in range(depth - i)
        })

    def forward(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        weights = [weight]  # [B, 1, T_i] per level
        for _ in range(1, self.depth):
            weights.append(F.max_pool1d(weights[-1], 2, ceil_mode=True))
        nodes: dict[tuple[int, int], torch.Tensor] = {}
        for j in range(self.depth):  # column by column: node (i, j) needs (i + 1, j - 1)
            for i in range(self.depth - j):
                if j == 0:
                    inputs = x if i == 0 else F.max_pool1d(nodes[i - 1, 0], 2, ceil_mode=True)
                else:
                    up = F.interpolate(nodes[i + 1, j - 1], size=weights[i].shape[-1], mode="linear",
                                       align_corners=False)
                    inputs = torch.cat([nodes[i, k] for k in range(j)] + [up], dim=1)
                nodes[i, j] = self.blocks[f"{i}_{j}"](inputs, weights[i])
        return nodes[0, self.depth - 1]


class PositionAttention(nn.Module):
    """Position-aware self-attention over the valid cells of a map (DANet's position module).

    Each valid cell attends to the valid cells, whose keys and values are averaged over pool x pool
    windows (pool 1: every cell). x [B, C, D, T], cell weight [B, 1, D, T] -> attended [B, C, D, T]
    (0 off the valid cells).
    """

    def __init__(self, dim: int, key_dim: int, valid: torch.Tensor, pool: int):
        super().__init__()
        self.pool, self.key_dim = pool, key_dim
        self.query, self.key = nn.Conv2d(dim, key_dim, 1), nn.Conv2d(dim, key_dim, 1)
        self.value = nn.Conv2d(dim, dim, 1)
        pooled = F.max_pool2d(valid[None, None].float(), pool, ceil_mode=True)[0, 0] > 0
        self.register_buffer("cells", valid.flatten().nonzero()[:, 0], persistent=False)  # [Nq]
        self.register_buffer("key_cells", pooled.flatten().nonzero()[:, 0], persistent=False)  # [Nk]

    def forward(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        window_sum = F.avg_pool2d(weight, self.pool, ceil_mode=True)  # [B, 1, D', T'] (same divisor as below)
        pooled = F.avg_pool2d(x * weight, self.pool, ceil_mode=True) / window_sum.clamp(min=1e-12)
        query = self.query(x).flatten(2)[..., self.cells]  # [B, K, Nq]
        key = self.key(pooled).flatten(2)[..., self.key_cells]  # [B, K, Nk]
        value = self.value(pooled).flatten(2)[..., self.key_cells]  # [B, C, Nk]
        energy = query.transpose(1, 2) @ key / math.sqrt(self.key_dim)  # [B, Nq, Nk]
        key_valid = window_sum.flatten(1)[:, self.key_cells] > 0  # [B, Nk]
        attention = energy.masked_fill(~key_valid[:, None, :], -math.inf).softmax(dim=-1)
        attended = value @ attention.transpose(1, 2)  # [B, C, Nq] (half precision under autocast)
        out = attended.new_zeros(x.shape[0], x.shape[1], x.shape[2] * x.shape[3])
        out[..., self.cells] = attended
        return out.view_as(x) * weight


def channel_attention(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Channel-aware self-attention (DANet's channel module): x [B, C, D, T], weight [B, 1, D, T] -> [B, C, D, T].

    Channel i becomes the softmax(similarity)-weighted sum of all channels, the similarity being the
    dot product of two channels over the valid cells, scaled by 1 / sqrt(number of valid cells).
    """
    flat = (x * weight).flatten(2)  # [B, C, N]
    num_cells = weight.flatten(1).sum(dim=1).clamp(min=1.0)  # [B]
    energy = flat @ flat.transpose(1, 2) / num_cells.sqrt()[:, None, None]  # [B, C, C]
    return (energy.softmax(dim=-1) @ flat).view_as(x) * weight


class ProposalRelationBlock(nn.Module):
    """PRB: x + gain_p * position attention + gain_c * channel attention (both gains start at 0): [B, C, D, T]."""

    def __init__(self, dim: int, valid: torch.Tensor, pool: int):
        super().__init__()
        self.position = PositionAttention(dim, max(dim // 8, 1), valid, pool)
        self.gains = nn.Parameter(torch.zeros(2))

    def forward(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return x + self.gains[0] * self.position(x, weight) + self.gains[1] * channel_attention(x, weight)


# ---------------------------------------------------------------------------------------------------
# the model


class BSNPP(nn.Module):
    """BSN++ proposal head; see the module docstring for the batch contract and units."""

    proposal_head = True

    def __init__(self, input_dim: int, num_steps: int = 100, max_duration: int | None = None, base_dim: int = 256,
                 cbg_dim: int = 128, cbg_depth: int = 3, map_dim: int = 128, num_samples: int = 32,
                 context_ratio: float = 0.5, attention_pool: int = 4, boundary_ratio: float = 0.1,
                 min_boundary_steps: float = 1.0, iou_bins: tuple[float, float] = (0.3, 0.7), cls_iou: float = 0.9,
                 scale_bins: int = 4, loss_weights: dict | None = None, peak_ratio: float = 0.5,
                 nms: dict | None = None, max_proposals: int = 100, score_fusion: str = "product",
                 force_boundary_ends: bool = True, map_conv_plan: str = "auto"):
        super().__init__()
        max_duration = num_steps if max_duration is None else max_duration
        _check_values(num_steps, max_duration, cbg_depth, num_samples, attention_pool, iou_bins, cls_iou, scale_bins,
                      max_proposals)
        for key, value, low in (("context_ratio", context_ratio, 0.0), ("boundary_ratio", boundary_ratio, 0.0),
                                ("peak_ratio", peak_ratio, 0.0)):
            if value < low:
                raise TalInputError(f"model.{key} must be >= {low}, got {value}")
        if not min_boundary_steps > 0:
            raise TalInputError(f"model.min_boundary_steps must be > 0 (width of a boundary region), "
                                f"got {min_boundary_steps}")
        self.num_steps, self.max_duration = num_steps, max_duration
        self.num_samples, self.map_dim = num_samples, map_dim
        self.boundary_ratio, self.min_boundary_steps = boundary_ratio, min_boundary_steps
        self.iou_bins, self.cls_iou, self.scale_bins = tuple(iou_bins), cls_iou, scale_bins
        self.loss_weights = {**LOSS_WEIGHTS, **(loss_weights or {})}
        self.peak_ratio, self.max_proposals = peak_ratio, max_proposals
        self.nms = {**DEFAULT_NMS, "width_scale": float(num_steps), **(nms or {})}
        if score_fusion not in SCORE_FUSIONS:
            raise TalInputError(f"model.score_fusion must be one of {', '.join(SCORE_FUSIONS)}, got {score_fusion!r}")
        self.score_fusion, self.force_boundary_ends = score_fusion, bool(force_boundary_ends)

        segments, valid = proposal_map(num_steps, max_duration)
        self.register_buffer("cell_segments", segments, persistent=False)  # [D, T, 2]
        self.register_buffer("cell_valid", valid, persistent=False)  # [D, T]
        self.register_buffer("cells", valid.flatten().nonzero()[:, 0], persistent=False)  # [Nv] flat d * T + s
        self.register_buffer("end_index", (segments[..., 1].long() - 1).clamp(max=num_steps - 1),
                             persistent=False)  # [D, T] end-probability index of each cell
        self.register_buffer("row_bin", duration_bins(max_duration, scale_bins), persistent=False)  # [D]
        self.register_buffer("sampling", map_sampling_matrix(segments[valid], num_steps, num_samples, context_ratio),
                             persistent=False)  # sparse [Nv, P * T]

        self.base = TemporalBlock(input_dim, base_dim)
        self.cbg = NestedTemporalUNet(base_dim, cbg_dim, cbg_depth)
        self.boundary_head = nn.Conv1d(cbg_dim, 2, 1)
        self.sample_proj = nn.Conv1d(base_dim, num_samples * map_dim, 1, bias=False)
        self.sample_bias = nn.Parameter(torch.zeros(map_dim))
        self.prb = ProposalRelationBlock(map_dim, valid, attention_pool)
        self.map_conv = MaskedMapConv(valid, map_dim, map_dim, 3, 2, check_plan(map_conv_plan))
        self.map_head = nn.Conv2d(map_dim, 2, 1)

    def _boundary_logits(self, features: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Base features [B, C, T] and (start, end) logits [B, 2, T] of one pass; features [B, D, T]."""
        base = self.base(features * weight, weight)
        return base, self.boundary_head(self.cbg(base, weight))

    def cell_features(self, base: torch.Tensor) -> torch.Tensor:
        """BMN's boundary-matching layer: base features [B, C_base, T] -> cell features [B, C, D, T] (0 off valid cells).

        Cell feature = ReLU(sum over sample points p of W_p @ (base features interpolated at point p) + bias),
        computed as the sparse sampling matrix times the per-point projections of every step.
        """
        num_videos, _, num_steps = base.shape
        projected = self.sample_proj(base).view(num_videos, self.num_samples, self.map_dim, num_steps)
        projected = projected.permute(1, 3, 0, 2).reshape(self.num_samples * num_steps, -1)  # [P * T, B * C]
        with torch.autocast(base.device.type, enabled=False):  # sparse mm has no half-precision backward
            sampled = torch.sparse.mm(self.sampling, projected.to(self.sampling.dtype))
        sampled = sampled.view(-1, num_videos, self.map_dim)  # [Nv, B, C]
        cells = F.relu(sampled.permute(1, 2, 0) + self.sample_bias[:, None])  # [B, C, Nv]
        grid = cells.new_zeros(num_videos, self.map_dim, self.max_duration * self.num_steps)
        grid[..., self.cells] = cells
        return grid.view(num_videos, self.map_dim, self.max_duration, self.num_steps)

    def _map_logits(self, base: torch.Tensor, cell_weight: torch.Tensor) -> torch.Tensor:
        """(regression, classification) logits [B, 2, D, T] of the proposal map; cell_weight [B, 1, D, T]."""
        grid = self.cell_features(base) * cell_weight
        grid = self.map_conv(self.prb(grid, cell_weight))
        return self.map_head(grid) * cell_weight

    def outputs(self, features: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw outputs: "forward" and "backward" (start, end) logits [B, 2, T] (backward already in forward time),
        "boundary" fused probabilities [B, 2, T], "map" (reg, cls) logits [B, 2, D, T], "cell_valid" [B, D, T],
        "num_valid" [B]."""
        if features.shape[1] != self.num_steps:
            raise TalInputError(f"features have {features.shape[1]} steps but this BSN++ model was built for "
                                f"model.num_steps={self.num_steps}: rescale every video to {self.num_steps} features "
                                f"(BSN/BMN's fixed-length input) or set model.num_steps")
        mask = mask.bool()
        num_valid = mask.sum(dim=1)  # [B]
        weight = mask[:, None].to(features.dtype)  # [B, 1, T]
        x = features.transpose(1, 2)  # [B, D, T]
        base, forward = self._boundary_logits(x, weight)
        _, backward = self._boundary_logits(reverse_steps(features, num_valid).transpose(1, 2), weight)
        cell_valid = self.cell_valid & (self.cell_segments[..., 1] <= num_valid[:, None, None])  # [B, D, T]
        return {"forward": forward, "backward": backward_to_forward(backward, num_valid),
                "boundary": fuse_boundaries(forward.sigmoid(), backward.sigmoid(), num_valid),
                "map": self._map_logits(base, cell_valid[:, None].to(features.dtype)), "cell_valid": cell_valid,
                "num_valid": num_valid}

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        features = batch["features"]
        out = self.outputs(features, batch["mask"])
        segments = [s.to(features.device, torch.float32).reshape(-1, 2) for s in batch["segments"]]
        gt, _, gt_valid = pad_ground_truth(segments, [torch.zeros(len(s), dtype=torch.long) for s in segments],
                                           features.device)
        gt = torch.minimum(gt.clamp(min=0.0), out["num_valid"][:, None, None].to(gt.dtype))  # clipped to the video
        parts = {"boundary": self._boundary_loss(out, gt, gt_valid)}
        parts.update(self._map_losses(out, gt, gt_valid))
        total = sum(self.loss_weights[name] * value for name, value in parts.items())
        return {"loss": total, **{f"loss_{name}": value.detach() for name, value in parts.items()}}

    def _boundary_loss(self, out: dict, gt: torch.Tensor, gt_valid: torch.Tensor) -> torch.Tensor:
        steps_valid = torch.arange(self.num_steps, device=gt.device) < out["num_valid"][:, None]  # [B, T]
        positive = boundary_targets(gt, gt_valid, self.num_steps, self.boundary_ratio,
                                    self.min_boundary_steps) >= 0.5  # [B, 2, T]
        valid = steps_valid[:, None].expand_as(positive)
        pos_weight, neg_weight = (positive & valid).float(), (~positive & valid).float()
        loss = 0.0
        for logits in (out["forward"], out["backward"]):
            loss = loss + 0.5 * (balanced_bce(logits[:, 0], pos_weight[:, 0], neg_weight[:, 0])
                                 + balanced_bce(logits[:, 1], pos_weight[:, 1], neg_weight[:, 1]))
        return loss

    def _map_losses(self, out: dict, gt: torch.Tensor, gt_valid: torch.Tensor) -> dict[str, torch.Tensor]:
        valid = out["cell_valid"]  # [B, D, T]
        iou = iou_map_targets(self.cell_segments, gt, gt_valid) * valid  # [B, D, T]
        high, medium, low = iou_balanced_sample(iou, valid, *self.iou_bins)
        weight = scale_balanced_weights(high, self.row_bin) + medium.float() + low.float()  # [B, D, T]
        reg = out["map"][:, 0].sigmoid()
        map_reg = 0.5 * (weight * (reg - iou) ** 2).sum() / weight.sum().clamp(min=1e-12)  # BMN's pem_reg_loss
        positive = valid & (iou > self.cls_iou)
        map_cls = balanced_bce(out["map"][:, 1], scale_balanced_weights(positive, self.row_bin),
                               (valid & ~positive).float())
        steps_valid = (torch.arange(self.num_steps, device=gt.device) < out["num_valid"][:, None])[:, None]  # [B, 1, T]
        gap = (out["forward"].sigmoid() - out["backward"].sigmoid()) ** 2 * steps_valid  # [B, 2, T]
        consistency = gap.sum() / (2 * steps_valid.sum()).clamp(min=1)
        return {"map_reg": map_reg, "map_cls": map_cls, "consistency": consistency}

    @torch.no_grad()
    def predict(self, batch: dict) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per video: (segments [K, 2] in feature steps, scores [K], labels [K] zeros), best first, after soft-NMS."""
        out = self.outputs(batch["features"], batch["mask"])
        start, end = out["boundary"][:, 0], out["boundary"][:, 1]  # [B, T]
        steps_valid = torch.arange(self.num_steps, device=start.device) < out["num_valid"][:, None]  # [B, T]
        force = self.force_boundary_ends
        is_start = boundary_candidates(start, steps_valid, self.peak_ratio, "first" if force else None)
        is_end = boundary_candidates(end, steps_valid, self.peak_ratio, "last" if force else None)
        confidence = out["map"].sigmoid()  # [B, 2, D, T]
        fused = confidence[:, 0] * confidence[:, 1]  # [B, D, T]
        if self.score_fusion == "sqrt":
            fused = fused.sqrt()
        scores = start[:, None, :] * end[:, self.end_index] * fused
        keep = out["cell_valid"] & is_start[:, None, :] & is_end[:, self.end_index]  # [B, D, T]
        return [postprocess_detections(self.cell_segments[keep[b]], scores[b][keep[b]], None, **self.nms,
                                       max_detections=self.max_proposals)
                for b in range(len(keep))]


def _check_values(num_steps: int, max_duration: int, cbg_depth: int, num_samples: int, attention_pool: int,
                  iou_bins, cls_iou: float, scale_bins: int, max_proposals: int) -> None:
    """Value checks of the config, with the key to fix in each message."""
    if num_steps < 2:
        raise TalInputError(f"model.num_steps must be >= 2 (the fixed number of features per video), got {num_steps}")
    if not 1 <= max_duration <= num_steps:
        raise TalInputError(f"model.max_duration must be in [1, num_steps={num_steps}] (longest proposal, in steps), "
                            f"got {max_duration}")
    if not 1 <= cbg_depth or 2 ** (cbg_depth - 1) > num_steps:
        raise TalInputError(f"model.cbg_depth must be >= 1 and leave at least one step at the deepest level "
                            f"(2 ** (depth - 1) <= num_steps={num_steps}), got {cbg_depth}")
    for key, value in (("num_samples", num_samples), ("attention_pool", attention_pool), ("scale_bins", scale_bins),
                       ("max_proposals", max_proposals)):
        if value < 1:
            raise TalInputError(f"model.{key} must be >= 1, got {value}")
    if scale_bins > max_duration:
        raise TalInputError(f"model.scale_bins must be <= max_duration={max_duration} (one row at least per "
                            f"duration bin), got {scale_bins}")
    if len(iou_bins) != 2 or not 0.0 <= iou_bins[0] < iou_bins[1] < 1.0:
        raise TalInputError(f"model.iou_bins must be [low, high] with 0 <= low < high < 1 (BMN: [0.3, 0.7]), "
                            f"got {list(iou_bins)}")
    if not 0.0 <= cls_iou < 1.0:
        raise TalInputError(f"model.cls_iou must be in [0, 1) (BMN: 0.9), got {cls_iou}")


MODEL_KEYS = {"input_dim", "num_steps", "max_duration", "base_dim", "cbg_dim", "cbg_depth", "map_dim", "num_samples",
              "context_ratio", "attention_pool", "boundary_ratio", "min_boundary_steps", "iou_bins", "cls_iou",
              "scale_bins", "loss_weights", "peak_ratio", "nms", "max_proposals",
              "score_fusion", "force_boundary_ends", "map_conv_plan"}


@MODELS.register("bsnpp")
def build_bsnpp(cfg: dict) -> BSNPP:
    """A BSNPP from the `model` section of a config (keys: MODEL_KEYS; `name`/`type` are ignored)."""
    if "max_detections" in (cfg.get("nms") or {}):
        raise TalInputError("model.nms.max_detections is not used by bsnpp: set model.max_proposals instead")
    cfg = model_section(cfg, "bsnpp", MODEL_KEYS, sections={"loss_weights": LOSS_WEIGHTS, "nms": NMS_KEYS})
    return BSNPP(**cfg)
