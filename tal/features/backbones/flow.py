"""Optical flow for I3D's flow stream: torchvision's RAFT (small or large) instead of the TV-L1 flow of
the original features.

The flow checkpoint of the I3D port was trained on TV-L1 flow in pixels, truncated to [-20, 20] and
rescaled to [-1, 1] (2 channels: horizontal, vertical). `RaftFlow` computes RAFT's flow between each
pair of consecutive frames of a clip and converts it the same way. A window of T frames has T - 1
pairs; the last flow field is repeated, so the flow stream sees T frames as the RGB stream does.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tal.features.download import PublishedFile

FLOW_CLIP_PX = 20.0  # |flow| truncated at 20 pixels, then divided by 20: [-1, 1]


@dataclass(frozen=True)
class RaftVariant:
    builder: str  # function in torchvision.models.optical_flow
    weights_enum: str

    def published(self) -> PublishedFile:
        import torchvision.models.optical_flow as optical_flow

        return PublishedFile(getattr(optical_flow, self.weights_enum).DEFAULT.url)

    def weights_name(self) -> str:
        import torchvision.models.optical_flow as optical_flow

        return str(getattr(optical_flow, self.weights_enum).DEFAULT)

    def build(self) -> nn.Module:
        import torchvision.models.optical_flow as optical_flow

        return getattr(optical_flow, self.builder)(weights=None)


RAFT = {"raft_large": RaftVariant("raft_large", "Raft_Large_Weights"),
        "raft_small": RaftVariant("raft_small", "Raft_Small_Weights")}


def flow_to_i3d(flow_px: torch.Tensor) -> torch.Tensor:
    """Flow in pixels -> the I3D flow stream's input range: clipped to [-20, 20] px, divided by 20."""
    return flow_px.clamp(-FLOW_CLIP_PX, FLOW_CLIP_PX) / FLOW_CLIP_PX


class RaftFlow(nn.Module):
    """[B, 3, T, S, S] frames in [-1, 1] (RAFT's own input range; S divisible by 8) -> [B, 2, T, S, S]
    I3D flow input. Frame pairs go through RAFT `pairs_per_pass` at a time."""

    def __init__(self, raft: nn.Module, num_flow_updates: int = 12, pairs_per_pass: int = 8):
        super().__init__()
        self.raft, self.num_flow_updates, self.pairs_per_pass = raft, num_flow_updates, pairs_per_pass

    def flow_px(self, clips: torch.Tensor) -> torch.Tensor:
        """RAFT's final flow between consecutive frames, [B, T - 1, 2, S, S] pixels."""
        b, _, t, s_h, s_w = clips.shape
        frames = clips.transpose(1, 2)  # [B, T, 3, S, S]
        first, second = frames[:, :-1].flatten(0, 1), frames[:, 1:].flatten(0, 1)  # [B(T-1), 3, S, S]
        flows = [self.raft(a.contiguous(), c.contiguous(), num_flow_updates=self.num_flow_updates)[-1]
                 for a, c in zip(first.split(self.pairs_per_pass), second.split(self.pairs_per_pass))]
        return torch.cat(flows).view(b, t - 1, 2, s_h, s_w)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        flow = self.flow_px(clips)  # [B, T-1, 2, S, S]
        flow = torch.cat([flow, flow[:, -1:]], dim=1)  # [B, T, 2, S, S]
        return flow_to_i3d(flow).transpose(1, 2)  # [B, 2, T, S, S]
