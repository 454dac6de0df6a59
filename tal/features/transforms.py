"""Frame transforms shared by decoding and the backbones' preprocessing (torch, CPU).

Frames enter as uint8 [..., H, W, 3] numpy arrays (RGB, as decoded); the backbones' inputs leave as
float32 tensors. Resizing is bilinear on uint8, as torchvision's presets do when given uint8 frames.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def short_side_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) after scaling the short side to `size`, keeping the aspect ratio."""
    if height <= width:
        return size, max(1, int(round(width * size / height)))
    return max(1, int(round(height * size / width))), size


def resize(x: torch.Tensor, size: Sequence[int], antialias: bool = True) -> torch.Tensor:
    """uint8 or float [N, 3, H, W] -> [N, 3, h, w]: (h, w) if two numbers, the short side if one.

    Bilinear; uint8 stays uint8 (torch's fast path for channels-last memory). torchvision's video
    presets resize without antialiasing, its image presets with it.
    """
    height, width = x.shape[-2:]
    out_hw = tuple(size) if len(size) == 2 else short_side_shape(height, width, int(size[0]))
    if out_hw == (height, width):
        return x
    return F.interpolate(x, size=out_hw, mode="bilinear", align_corners=False, antialias=antialias)


def resize_short_side(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 [N, H, W, 3] -> uint8 [N, H', W', 3] with min(H', W') = size."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # [N, 3, H, W], channels-last memory
    out = resize(x, (size,))
    return frames if out is x else out.permute(0, 2, 3, 1).contiguous().numpy()


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """[..., H, W] -> [..., size, size], the central square (zero-padded where the input is smaller).

    Offsets round half to even, as torchvision's center_crop does (171 -> 112 starts at column 30).
    """
    height, width = x.shape[-2:]
    if height < size or width < size:
        pad_h, pad_w = max(size - height, 0), max(size - width, 0)
        x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        height, width = x.shape[-2:]
    top, left = int(round((height - size) / 2)), int(round((width - size) / 2))
    return x[..., top:top + size, left:left + size]


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """float [..., 3, H, W]: (x - mean) / std per channel."""
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x - mean_t) / std_t
