"""Inception-v1 I3D (Carreira and Zisserman, 2017) in the module layout of the PyTorch port whose
converted checkpoints (`rgb_imagenet.pt`, `flow_imagenet.pt`, `rgb_charades.pt`) made the released
THUMOS14 features: the state dict keys (`Conv3d_1a_7x7.conv3d.weight`, `Mixed_4b.b1b.bn.running_mean`,
`logits.conv3d.bias`, ...) and shapes are those files' own, so they load unchanged.

Convolutions and max-pools pad as TensorFlow's "SAME" (the original was a TF model): the padding
depends on the input size, split with the extra pixel at the end; max-pools pad with zeros, as the
port does (their inputs follow a ReLU, so zeros never win over real values). The feature is the
1024-d average of the last Inception block over time and space: for a 16-frame 224x224 clip exactly
the port's `extract_features` (its [2, 7, 7] average pool sees the whole 2 x 7 x 7 map).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FEATURE_DIM = 1024
Triple = tuple[int, int, int]


def same_padding(sizes: tuple[int, ...], kernel: Triple, stride: Triple) -> tuple[int, ...]:
    """F.pad's argument (last dim first) for TF "SAME" padding of a [.., T, H, W] input."""
    pads: list[int] = []
    for size, k, s in reversed(list(zip(sizes, kernel, stride))):
        total = max(k - (s if size % s == 0 else size % s), 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


class Unit3D(nn.Module):
    """Conv3d (SAME padding) + BatchNorm (eps 1e-3) + ReLU; the logits unit has a bias and neither."""

    def __init__(self, in_channels: int, out_channels: int, kernel: Triple = (1, 1, 1), stride: Triple = (1, 1, 1),
                 logits: bool = False):
        super().__init__()
        self.kernel, self.stride, self.logits = kernel, stride, logits
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride, padding=0, bias=logits)
        if not logits:
            self.bn = nn.BatchNorm3d(out_channels, eps=0.001, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(F.pad(x, same_padding(x.shape[2:], self.kernel, self.stride)))
        return x if self.logits else F.relu(self.bn(x))


class MaxPoolSame(nn.Module):
    def __init__(self, kernel: Triple, stride: Triple):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(F.pad(x, same_padding(x.shape[2:], self.kernel, self.stride)), self.kernel, self.stride)


class InceptionBlock(nn.Module):
    """Four branches concatenated: 1x1; 1x1 -> 3x3x3; 1x1 -> 3x3x3; 3x3x3 max-pool -> 1x1."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int, int, int]):
        super().__init__()
        self.b0 = Unit3D(in_channels, widths[0])
        self.b1a = Unit3D(in_channels, widths[1])
        self.b1b = Unit3D(widths[1], widths[2], (3, 3, 3))
        self.b2a = Unit3D(in_channels, widths[3])
        self.b2b = Unit3D(widths[3], widths[4], (3, 3, 3))
        self.b3a = MaxPoolSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, widths[5])
        self.out_channels = widths[0] + widths[2] + widths[4] + widths[5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


# (name, in_channels, branch widths) of the Inception blocks, in order
_BLOCKS = (
    ("Mixed_3b", 192, (64, 96, 128, 16, 32, 32)), ("Mixed_3c", 256, (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", 480, (192, 96, 208, 16, 48, 64)), ("Mixed_4c", 512, (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", 512, (128, 128, 256, 24, 64, 64)), ("Mixed_4e", 512, (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", 528, (256, 160, 320, 32, 128, 128)), ("Mixed_5b", 832, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", 832, (384, 192, 384, 48, 128, 128)),
)


class InceptionI3d(nn.Module):
    """[B, C, T, H, W] (C = 3 for RGB, 2 for flow; values in [-1, 1]) -> [B, 1024] pooled features.

    `logits` is kept so a published file loads with every key checked; it is not used for features.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 400):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(in_channels, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = InceptionBlock(*_BLOCKS[0][1:])
        self.Mixed_3c = InceptionBlock(*_BLOCKS[1][1:])
        self.MaxPool3d_4a_3x3 = MaxPoolSame((3, 3, 3), (2, 2, 2))
        self.Mixed_4b = InceptionBlock(*_BLOCKS[2][1:])
        self.Mixed_4c = InceptionBlock(*_BLOCKS[3][1:])
        self.Mixed_4d = InceptionBlock(*_BLOCKS[4][1:])
        self.Mixed_4e = InceptionBlock(*_BLOCKS[5][1:])
        self.Mixed_4f = InceptionBlock(*_BLOCKS[6][1:])
        self.MaxPool3d_5a_2x2 = MaxPoolSame((2, 2, 2), (2, 2, 2))
        self.Mixed_5b = InceptionBlock(*_BLOCKS[7][1:])
        self.Mixed_5c = InceptionBlock(*_BLOCKS[8][1:])
        self.logits = Unit3D(FEATURE_DIM, num_classes, logits=True)
        self._trunk = [m for name, m in self.named_children() if name != "logits"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self._trunk:
            x = module(x)
        return x.mean(dim=(2, 3, 4))  # [B, 1024, t, h, w] -> [B, 1024]
