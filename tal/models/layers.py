"""Building blocks shared by the heads: clip resampling, temporal convs, span pooling, masked 2D convs.

Shapes use B batch, C channels, T input features, N clips.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def average_to_num_clips(features: np.ndarray | torch.Tensor, num_clips: int) -> np.ndarray | torch.Tensor:
    """Average a video's features [T, D] over `num_clips` equal spans, as 2D-TAN's datasets do.

    Clip i averages features [round(i*T/n), round((i+1)*T/n)) where the boundaries are rounded half
    to even in float32 and capped at T-1; a clip whose span is empty (T < n) repeats the feature at
    its start. Because of the cap the last feature of the video is never averaged in unless the last
    clip is empty: this is the official behaviour, kept so features match published checkpoints.
    Takes and returns a numpy array or a torch tensor.
    """
    is_numpy = isinstance(features, np.ndarray)
    x = torch.as_tensor(features)
    num_features = x.shape[0]
    if num_features == 0 or num_clips <= 0:
        raise ValueError(f"need at least one feature and one clip, got T={num_features}, num_clips={num_clips}")
    bounds = torch.arange(0, num_clips + 1, dtype=torch.float32) / num_clips * num_features
    bounds = torch.round(bounds).long().clamp(max=num_features - 1)  # [n+1]
    start, end = bounds[:-1], bounds[1:]  # [n]
    csum = torch.cat([x.new_zeros(1, x.shape[1], dtype=torch.float64), x.double().cumsum(0)])  # [T+1, D]
    span = (end - start).clamp(min=1).unsqueeze(1)  # [n, 1]
    mean = (csum[end] - csum[start]) / span  # [n, D]
    out = torch.where((end > start).unsqueeze(1), mean, x[start].double()).to(x.dtype)
    return out.numpy() if is_numpy else out


class TemporalConvPool(nn.Module):
    """Conv1d + ReLU, then average pooling by `pool_stride` (2D-TAN's frame module).

    [B, D, T] -> [B, C, T // pool_stride] (an odd kernel keeps T).
    """

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int = 1, pool_stride: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(in_dim, out_dim, kernel_size, padding=kernel_size // 2)
        self.pool = nn.AvgPool1d(pool_stride, pool_stride) if pool_stride > 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.conv(x)))


def iter_span_max(x: torch.Tensor, max_offset: int) -> Iterator[torch.Tensor]:
    """Max over every span of consecutive steps, one diagonal at a time.

    x [B, C, N] -> for offset d = 0..max_offset, [B, C, N - d] whose entry s is max(x[..., s : s + d + 1]).
    Built by an iterative max: O(N * max_offset) work and one diagonal in memory at a time.
    """
    current = x
    yield current
    for offset in range(1, max_offset + 1):
        current = torch.maximum(current[..., :-1], x[..., offset:])
        yield current


def masked_conv_weights(mask: torch.Tensor, kernel_size: int, paddings: list[int]) -> list[torch.Tensor]:
    """Per-layer output weights of a masked 2D conv stack (2D-TAN's MapConv re-normalisation).

    For each layer, a cell's weight is 1 / (number of valid cells under its kernel), 0 where the kernel
    sees none; the cells with a non-zero weight are the valid cells of the next layer.
    mask [N, N] bool -> list of [1, 1, H_l, W_l] float.
    """
    ones = mask.new_ones(1, 1, kernel_size, kernel_size, dtype=torch.float32)
    valid = mask.float()[None, None]
    weights = []
    for padding in paddings:
        count = torch.round(F.conv2d(valid, ones, padding=padding))
        weight = torch.where(count > 0, 1.0 / count.clamp(min=1), torch.zeros_like(count))
        weights.append(weight)
        valid = (count > 0).float()
    return weights


@dataclass(frozen=True)
class MapTile:
    """A rectangle of one layer's output cells, in canvas coordinates: rows [top, bottom), cols [left, right)."""

    top: int
    bottom: int
    left: int
    right: int


def needed_cells(mask: torch.Tensor, kernel_size: int,
                 num_layers: int) -> tuple[list[torch.Tensor], list[torch.Tensor], int]:
    """Which cells of each layer of 2D-TAN's MapConv can reach a valid output, and their weights.

    The official stack pads the map by P = (K-1)L/2 once, so layer l's output covers P - l*h more
    cells on each side than the map (h = (K-1)/2), and most of them are either weighted 0 (the kernel
    saw no valid cell) or outside every valid output cell's receptive field. Layer L needs the valid
    cells; layer l needs the cells of non-zero weight within h of a cell layer l+1 needs. Everything is
    placed on one canvas, the map plus a margin m on each side (what the needed cells and their kernels
    reach). mask [H, W] bool -> (per layer: needed [H + 2m, W + 2m] bool, weight of the same shape, 0
    off the needed cells), m.
    """
    (height, width), half = mask.shape, (kernel_size - 1) // 2
    pad = half * num_layers
    official = masked_conv_weights(mask, kernel_size, [pad] + [0] * (num_layers - 1))
    weights = [F.pad(w[0, 0], [half * (i + 1)] * 4) for i, w in enumerate(official)]  # [H + 2P, W + 2P] each
    needed = [torch.zeros_like(weights[0], dtype=torch.bool) for _ in range(num_layers)]
    needed[-1][pad:pad + height, pad:pad + width] = mask
    for layer in range(num_layers - 2, -1, -1):
        grown = F.max_pool2d(needed[layer + 1].float()[None, None], kernel_size, 1, half)[0, 0] > 0
        needed[layer] = grown & (weights[layer] > 0)
    rows, cols = torch.stack(needed).any(dim=0).nonzero(as_tuple=True)
    reach = max(pad - int(rows.min()), int(rows.max()) + 1 - pad - height,
                pad - int(cols.min()), int(cols.max()) + 1 - pad - width, 0)
    margin = reach + half
    crop = (slice(pad - margin, pad + height + margin), slice(pad - margin, pad + width + margin))
    return [n[crop] for n in needed], [(w * n)[crop] for w, n in zip(weights, needed)], margin


def map_tiles(needed: torch.Tensor, strip: int) -> list[MapTile]:
    """Cover the needed cells [M, M] with one rectangle per strip of `strip` rows (bounding box of that strip)."""
    tiles = []
    for top in range(0, needed.shape[0], strip):
        rows = needed[top:top + strip]
        row_ids, col_ids = rows.nonzero(as_tuple=True)
        if len(row_ids):
            tiles.append(MapTile(top + int(row_ids.min()), top + int(row_ids.max()) + 1, int(col_ids.min()),
                                 int(col_ids.max()) + 1))
    return tiles


class MaskedMapConv(nn.Module):
    """A stack of 2D convs over a sparse map whose output is re-weighted by the valid cells it saw.

    The same numbers as 2D-TAN's MapConv (first layer padded by (K-1)*L/2, the rest unpadded, each layer
    ReLU(conv(x)) * weight, `masked_conv_weights`) on every cell that can reach a valid output, but only
    those cells are computed: each layer convolves a few row strips that cover its needed cells
    (`needed_cells`, `map_tiles`), on a canvas barely larger than the map. Cells no valid output can see
    are 0 (the official code leaves values there; callers mask them away). Tiles and weights are built
    once. x [B, C_in, H, W] -> [B, C_out, H, W] (mask [H, W]).
    """

    def __init__(self, mask: torch.Tensor, in_dim: int, hidden_dim: int, kernel_size: int, num_layers: int,
                 strip: int = 8):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"map convs need an odd kernel, got {kernel_size=}")
        dims = [in_dim] + [hidden_dim] * num_layers
        self.convs = nn.ModuleList(nn.Conv2d(dims[i], dims[i + 1], kernel_size) for i in range(num_layers))
        self.half, self.map_size = (kernel_size - 1) // 2, tuple(mask.shape)
        needed, weights, self.margin = needed_cells(mask.cpu(), kernel_size, num_layers)
        self.tiles = [map_tiles(n, strip) for n in needed]
        for i, weight in enumerate(weights):
            self.register_buffer(f"weight_{i}", weight, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        canvas = F.pad(x, [self.margin] * 4)  # [B, C, M, M]
        h = self.half
        for i, (conv, tiles) in enumerate(zip(self.convs, self.tiles)):
            weight = getattr(self, f"weight_{i}")
            values = [F.relu(conv(canvas[:, :, t.top - h:t.bottom + h, t.left - h:t.right + h]))
                      * weight[t.top:t.bottom, t.left:t.right] for t in tiles]
            canvas = values[0].new_zeros(canvas.shape[0], conv.out_channels, *canvas.shape[2:])  # autocast's dtype
            for t, value in zip(tiles, values):
                canvas[:, :, t.top:t.bottom, t.left:t.right] = value
        (m, (height, width)) = self.margin, self.map_size
        return canvas[:, :, m:m + height, m:m + width]


# ---------------------------------------------------------------------------------------------------
# Sampling features inside segments (TCN's proposal/context features; BSN/BMN-style span sampling)


def segment_sample_points(segments: torch.Tensor, num_points: int) -> torch.Tensor:
    """Centres of `num_points` equal parts of each segment: [..., 2] (start, end) -> [..., num_points], same unit."""
    fraction = (torch.arange(num_points, dtype=segments.dtype, device=segments.device) + 0.5) / num_points  # [n]
    start, end = segments[..., :1], segments[..., 1:]
    return start + fraction * (end - start)


def sample_segment_features(features: torch.Tensor, num_valid: torch.Tensor, video_index: torch.Tensor,
                            segments: torch.Tensor, num_points: int) -> torch.Tensor:
    """Features at `num_points` evenly spaced points inside each segment, linearly interpolated.

    features [B, T, D] with num_valid [B] valid steps (a prefix); segments [N, 2] in feature steps, each
    belonging to video video_index[N]. Feature i spans [i, i + 1) and sits at its centre i + 0.5; a
    point between two centres mixes the two features, a point in [0, 0.5) or (n - 0.5, n] takes the
    edge feature, and a point outside the video [0, n] is zero (zero padding). All segments in one
    gather. -> [N, num_points, D].
    """
    num_videos, num_steps, dim = features.shape
    points = segment_sample_points(segments.to(torch.float32), num_points)  # [N, P] feature steps
    length = num_valid.to(device=points.device)[video_index].clamp(min=1)[:, None]  # [N, 1]
    index = (points - 0.5).clamp(min=0.0)
    index = torch.minimum(index, (length - 1).to(index.dtype))  # [N, P] in [0, n - 1]
    left = index.floor().long()  # [N, P]
    right = torch.minimum(left + 1, length - 1)  # [N, P]
    weight = (index - left).to(features.dtype)[..., None]  # [N, P, 1]
    rows = video_index[:, None, None] * num_steps + torch.stack([left, right], dim=-1)  # [N, P, 2]
    pair = features.reshape(num_videos * num_steps, dim)[rows]  # [N, P, 2, D]
    sampled = (1 - weight) * pair[..., 0, :] + weight * pair[..., 1, :]  # [N, P, D]
    inside = (points >= 0) & (points <= length)  # [N, P]
    return sampled * inside[..., None].to(features.dtype)


# ---------------------------------------------------------------------------------------------------
# Dynamic (input-conditioned) convolution: MAN's sentence-generated filters


def dynamic_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                   padding: int = 0) -> torch.Tensor:
    """A 1D conv whose kernel differs per sample, for the whole batch in one grouped conv (groups = B).

    x [B, C_in, T], weight [B, C_out, C_in, k], bias [B, C_out] or None -> [B, C_out, T + 2 * padding - k + 1].
    Sample b is convolved with weight[b] only, exactly as a loop of F.conv1d over the batch would.
    """
    num_samples, in_dim, num_steps = x.shape
    if weight.dim() != 4 or weight.shape[0] != num_samples or weight.shape[2] != in_dim:
        raise ValueError(f"dynamic_conv1d: weight must be [B={num_samples}, C_out, C_in={in_dim}, k], "
                         f"got {list(weight.shape)}")
    out_dim, width = weight.shape[1], weight.shape[3]
    out = F.conv1d(x.reshape(1, num_samples * in_dim, num_steps), weight.reshape(num_samples * out_dim, in_dim, width),
                   None if bias is None else bias.reshape(-1), padding=padding, groups=num_samples)
    return out.view(num_samples, out_dim, -1)
