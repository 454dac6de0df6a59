"""Building blocks shared by the heads: clip resampling, temporal convs, span pooling, segment sampling.

The masked 2D map convolutions (2D-TAN, S-2D-TAN, BSN++) are in `tal.models.map_conv`.

Shapes use B batch, C channels, T input features, N clips.
"""
from __future__ import annotations

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
