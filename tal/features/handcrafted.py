"""`handcrafted`: a weight-free clip descriptor of colour, texture, layout and motion (104 numbers).

Needs no download and runs fast on CPU, so the demo, the tests and users without pretrained
weights can extract features that still tell apart clips that differ in colour, texture, position
or motion. Every frame is first resized (bilinear, antialiased) to 64 x 64 RGB in [0, 1]; "grey"
is 0.299 R + 0.587 G + 0.114 B. Distributions are normalised so that a small coloured or textured
object still moves its entries by whole fractions, not by its share of the frame.

Per frame (35 numbers, "appearance"):
  [0:12]   hue distribution of the chromatic pixels (saturation >= 0.25 and value >= 0.2), 12 equal
           hue bins starting at red; all zero when no pixel is chromatic
  [12:13]  fraction of the frame's pixels that are chromatic
  [13:17]  saturation histogram, 4 equal bins, fractions of the frame
  [17:21]  value (brightness) histogram, 4 equal bins, fractions of the frame
  [21:25]  2 x 2 grid of mean grey level (top-left, top-right, bottom-left, bottom-right)
  [25:33]  texture: distribution of grey-gradient energy over 8 unsigned orientations (0-180 deg,
           bin 0 centred on horizontal gradients, i.e. vertical edges)
  [33:34]  mean grey-gradient magnitude
  [34:35]  mean |discrete Laplacian| of the grey level (fine texture)
Per pair of consecutive frames (17 numbers, "motion"), from the grey-level difference d:
  [0:3]    mean |d|, std |d|, fraction of pixels with |d| > 0.1
  [3:7]    2 x 2 grid of mean |d|
  [7:17]   Lucas-Kanade translation (u, v) in pixels per frame at 32 x 32 (x right, y down): whole
           frame, then the four quadrants in the grid order; clipped to +-4
The clip descriptor pools over the window:
  [0:35] appearance mean, [35:70] appearance std, [70:87] motion mean, [87:104] motion std.
A window of one frame has zero motion. Histograms are integer counts, so results are exactly
deterministic on CPU and CUDA alike; the rest is plain float arithmetic with no randomness.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

FRAME_SIZE = 64
HUE_BINS = 12
ORIENTATION_BINS = 8
SV_BINS = 4
GRID = 2
FLOW_SIZE = 32
FLOW_CLIP = 4.0
APPEARANCE_DIM = HUE_BINS + 1 + 2 * SV_BINS + GRID * GRID + ORIENTATION_BINS + 2  # 35
MOTION_DIM = 3 + GRID * GRID + 2 * 5  # 17
FEATURE_DIM = 2 * (APPEARANCE_DIM + MOTION_DIM)  # 104


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """float [..., 3, H, W] RGB in [0, 1] -> [..., 3, H, W] HSV, hue in [0, 1)."""
    r, g, b = rgb.unbind(-3)
    value, argmax = rgb.max(-3)
    chroma = value - rgb.min(-3).values
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    hue_r = ((g - b) / safe) % 6
    hue_g = (b - r) / safe + 2
    hue_b = (r - g) / safe + 4
    hue = torch.stack([hue_r, hue_g, hue_b], -3).gather(-3, argmax.unsqueeze(-3)).squeeze(-3) / 6
    hue = torch.where(chroma > 0, hue, torch.zeros_like(hue)) % 1.0
    safe_value = torch.where(value > 0, value, torch.ones_like(value))
    saturation = torch.where(value > 0, chroma / safe_value, torch.zeros_like(value))
    return torch.stack([hue, saturation, value], -3)


def _histogram(bins: torch.Tensor, num_bins: int) -> torch.Tensor:
    """long [N, P] bin ids -> float [N, num_bins] fractions, by exact integer counting."""
    n, pixels = bins.shape
    offsets = torch.arange(n, device=bins.device).unsqueeze(1) * num_bins  # [N, 1]
    counts = torch.bincount((bins + offsets).reshape(-1), minlength=n * num_bins)  # [N * num_bins]
    return counts.view(n, num_bins).float() / pixels


def texture_features(grey: torch.Tensor) -> torch.Tensor:
    """float [N, S, S] grey -> [N, 10]: orientation distribution of gradient energy, its mean, |Laplacian|."""
    inner = grey[:, 1:-1, 1:-1]
    grad_x = (grey[:, 1:-1, 2:] - grey[:, 1:-1, :-2]) / 2  # [N, S-2, S-2]
    grad_y = (grey[:, 2:, 1:-1] - grey[:, :-2, 1:-1]) / 2
    magnitude = torch.sqrt(grad_x * grad_x + grad_y * grad_y).flatten(1)  # [N, P]
    angle = torch.atan2(grad_y, grad_x).flatten(1) % torch.pi  # [N, P] in [0, pi)
    bins = (angle / torch.pi * ORIENTATION_BINS + 0.5).long() % ORIENTATION_BINS
    energy = torch.stack([(magnitude * (bins == k)).sum(1) for k in range(ORIENTATION_BINS)], 1)  # [N, 8]
    orientation = energy / energy.sum(1, keepdim=True).clamp_min(1e-8)
    laplacian = grey[:, 1:-1, 2:] + grey[:, 1:-1, :-2] + grey[:, 2:, 1:-1] + grey[:, :-2, 1:-1] - 4 * inner
    return torch.cat([orientation, magnitude.mean(1, keepdim=True), laplacian.abs().mean((1, 2)).unsqueeze(1)], 1)


def appearance_features(frames: torch.Tensor) -> torch.Tensor:
    """float [N, 3, 64, 64] RGB -> [N, 35]: colour histograms, grey-level grid, texture."""
    n = frames.shape[0]
    hue, sat, val = rgb_to_hsv(frames).flatten(2).unbind(1)  # each [N, P]
    chromatic = (sat >= 0.25) & (val >= 0.2)
    hue_bin = (hue * HUE_BINS).long().clamp_(0, HUE_BINS - 1)
    hue_bin = torch.where(chromatic, hue_bin, torch.full_like(hue_bin, HUE_BINS))
    hue_counts = _histogram(hue_bin, HUE_BINS + 1)  # [N, 13] fractions of the frame, last = achromatic
    chromatic_fraction = 1 - hue_counts[:, HUE_BINS:]
    hue_distribution = hue_counts[:, :HUE_BINS] / chromatic_fraction.clamp_min(1e-8)
    sat_bin = (sat * SV_BINS).long().clamp_(0, SV_BINS - 1)
    val_bin = (val * SV_BINS).long().clamp_(0, SV_BINS - 1)
    grey = grey_level(frames)  # [N, 64, 64]
    grid = F.adaptive_avg_pool2d(grey.unsqueeze(1), GRID).view(n, GRID * GRID)
    return torch.cat(
        [
            hue_distribution,
            chromatic_fraction,
            _histogram(sat_bin, SV_BINS),
            _histogram(val_bin, SV_BINS),
            grid,
            texture_features(grey),
        ],
        1,
    )


def grey_level(frames: torch.Tensor) -> torch.Tensor:
    """float [..., 3, H, W] -> [..., H, W] luma."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=frames.dtype, device=frames.device)
    return torch.einsum("...chw,c->...hw", frames, weights)


def _lucas_kanade(prev: torch.Tensor, curr: torch.Tensor) -> torch.Tensor:
    """float [M, S, S] grey frames -> [M, 10] translation (u, v): whole frame, then 2 x 2 quadrants."""
    mid = (prev + curr) / 2
    grad_x = (mid[:, 1:-1, 2:] - mid[:, 1:-1, :-2]) / 2  # [M, S-2, S-2]
    grad_y = (mid[:, 2:, 1:-1] - mid[:, :-2, 1:-1]) / 2
    grad_t = (curr - prev)[:, 1:-1, 1:-1]
    products = torch.stack(
        [grad_x * grad_x, grad_x * grad_y, grad_y * grad_y, grad_x * grad_t, grad_y * grad_t], 1
    )  # [M, 5, S-2, S-2]
    quadrants = F.adaptive_avg_pool2d(products, 2).flatten(2)  # [M, 5, 4]
    sums = torch.cat([products.mean((2, 3)).unsqueeze(2), quadrants], 2)  # [M, 5, 5 regions]
    sxx, sxy, syy, sxt, syt = sums.unbind(1)  # each [M, 5]
    ridge = 1e-4
    det = (sxx + ridge) * (syy + ridge) - sxy * sxy
    u = -((syy + ridge) * sxt - sxy * syt) / det
    v = -((sxx + ridge) * syt - sxy * sxt) / det
    return torch.stack([u, v], 2).flatten(1).clamp(-FLOW_CLIP, FLOW_CLIP)  # [M, 10]


def motion_features(grey: torch.Tensor) -> torch.Tensor:
    """float [B, T, 64, 64] grey frames -> [B, T-1, 17] frame-difference and translation statistics."""
    b, t = grey.shape[:2]
    diff = (grey[:, 1:] - grey[:, :-1]).abs().flatten(0, 1)  # [M, 64, 64], M = B*(T-1)
    stats = torch.stack(
        [diff.mean((1, 2)), diff.std((1, 2), unbiased=False), (diff > 0.1).float().mean((1, 2))], 1
    )  # [M, 3]
    grid = F.adaptive_avg_pool2d(diff.unsqueeze(1), GRID).flatten(1)  # [M, 4]
    small = F.avg_pool2d(grey.flatten(0, 1).unsqueeze(1), FRAME_SIZE // FLOW_SIZE).view(b, t, FLOW_SIZE, FLOW_SIZE)
    flow = _lucas_kanade(small[:, :-1].flatten(0, 1), small[:, 1:].flatten(0, 1))  # [M, 10]
    return torch.cat([stats, grid, flow], 1).view(b, t - 1, MOTION_DIM)


def handcrafted_features(clips: torch.Tensor) -> torch.Tensor:
    """float [B, T, 3, 64, 64] RGB in [0, 1] -> float32 [B, 104] (layout in the module docstring)."""
    b, t = clips.shape[:2]
    clips = clips.float()
    appearance = appearance_features(clips.flatten(0, 1)).view(b, t, APPEARANCE_DIM)
    if t > 1:
        motion = motion_features(grey_level(clips))  # [B, T-1, 17]
    else:
        motion = clips.new_zeros(b, 1, MOTION_DIM)
    return torch.cat(
        [
            appearance.mean(1),
            appearance.std(1, unbiased=False),
            motion.mean(1),
            motion.std(1, unbiased=False),
        ],
        1,
    )


class HandcraftedDescriptor(torch.nn.Module):
    """nn.Module wrapper so the descriptor runs like any other backbone (and on any device)."""

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return handcrafted_features(clips)
