"""torchvision's video models, ResNet-50 and VGG16 (per frame) as backbones, with their published weights.

Input size, resize rule, mean/std, clip length and frame rate are read from torchvision's weights
enums (`transforms` and the `_docs` text "frame_rate=.., clip_len=.."), so they are the published
ones. Features are the penultimate layer (VGG16: fc7 after its ReLU, the Charades-STA features of
2D-TAN); the layers after it are dropped.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from tal.features.backbones.base import (
    FRAME_WINDOW, BackboneEntry, BackboneSpec, FramePooled, LoadedWeights, Preprocessor, load_weights_file,
    loaded_file, seeded,
)
from tal.features.download import PublishedFile, published_path
from tal.registry import BACKBONES


@dataclass(frozen=True)
class _TorchvisionEntry:
    builder: str  # function in torchvision.models(.video)
    weights_enum: str
    video: bool
    feature_dim: int
    head: str  # attribute replaced by identity, or cut to `keep` layers
    min_frames: int = 1
    max_frames: int | None = None
    keep: int | None = None  # layers of `head` kept (VGG16's classifier up to fc7 + ReLU)
    window: int | None = None  # default window of a frame model (None: FRAME_WINDOW)
    stride: int | None = None
    fps: float | None = None
    reproduces: str = ""


_TORCHVISION: dict[str, _TorchvisionEntry] = {
    "r2plus1d_18": _TorchvisionEntry("r2plus1d_18", "R2Plus1D_18_Weights", True, 512, "fc"),
    "r3d_18": _TorchvisionEntry("r3d_18", "R3D_18_Weights", True, 512, "fc"),
    "s3d": _TorchvisionEntry("s3d", "S3D_Weights", True, 1024, "classifier", min_frames=14),
    "mvit_v2_s": _TorchvisionEntry("mvit_v2_s", "MViT_V2_S_Weights", True, 768, "head", 16, 16),
    "swin3d_t": _TorchvisionEntry("swin3d_t", "Swin3D_T_Weights", True, 768, "head"),
    "resnet50": _TorchvisionEntry("resnet50", "ResNet50_Weights", False, 2048, "fc"),
    "vgg16": _TorchvisionEntry("vgg16", "VGG16_Weights", False, 4096, "classifier", keep=5, window=1, stride=4,
                               fps=24.0, reproduces="Charades-STA VGG16 fc7 (2D-TAN, MAN): one frame every 4 "
                                                    "at 24 fps"),
}


def _weights_enum(entry: _TorchvisionEntry):
    import torchvision.models as models
    import torchvision.models.video as video_models

    return getattr(video_models if entry.video else models, entry.weights_enum).DEFAULT


def published_file(name: str) -> PublishedFile:
    """The published default weights of torchvision backbone `name` (the sha256 prefix is in the name)."""
    return PublishedFile(_weights_enum(_TORCHVISION[name]).url)


def weights_file_name(name: str) -> str:
    """File name torchvision caches the default weights of backbone `name` under."""
    return published_file(name).file_name


def _published_clip(docs: str) -> tuple[int, float | None]:
    """(clip_len, frame_rate) from a torchvision weights `_docs` text."""
    clip = re.search(r"clip_len=(\d+)", docs)
    rate = re.search(r"frame_rate=([\d.]+)", docs)
    return (int(clip.group(1)) if clip else FRAME_WINDOW), (float(rate.group(1)) if rate else None)


def _spec(name: str) -> BackboneSpec:
    entry = _TORCHVISION[name]
    weights = _weights_enum(entry)
    transform = weights.transforms()
    if entry.video:
        window, fps = _published_clip(weights.meta.get("_docs", ""))
    else:
        window, fps = entry.window or FRAME_WINDOW, entry.fps
    return BackboneSpec(
        name=name,
        feature_dim=entry.feature_dim,
        kind="clip" if entry.video else "frame",
        input_size=int(transform.crop_size[0]),
        default_window=window,
        default_fps=fps,
        weights=f"torchvision {weights} ({weights_file_name(name)})",
        mean=tuple(float(m) for m in transform.mean),
        std=tuple(float(s) for s in transform.std),
        resize_size=tuple(int(s) for s in transform.resize_size),
        min_frames=entry.min_frames,
        max_frames=entry.max_frames,
        antialias=bool(getattr(transform, "antialias", False)),  # VideoClassification hard-codes False
        default_stride=entry.stride,
        reproduces=entry.reproduces,
    )


def _build(spec: BackboneSpec, weights: str | None) -> tuple[torch.nn.Module, Preprocessor, LoadedWeights]:
    import torchvision.models as models
    import torchvision.models.video as video_models

    from tal.features.weights import RANDOM_ID

    entry = _TORCHVISION[spec.name]
    builder = getattr(video_models if entry.video else models, entry.builder)
    model = seeded(lambda: builder(weights=None))
    if entry.keep is None:
        unused: tuple[str, ...] = (f"{entry.head}.",)
    else:
        unused = tuple(f"{entry.head}.{i}." for i in range(entry.keep, len(getattr(model, entry.head))))
    if weights == "random":
        loaded = LoadedWeights(RANDOM_ID)
    else:
        path = published_path(spec.name, published_file(spec.name)) if weights is None else Path(weights)
        load_weights_file(model, path, spec.name, unused)
        loaded = loaded_file(path, f"torchvision:{_weights_enum(entry)}" if weights is None else None)
    head = torch.nn.Identity() if entry.keep is None else getattr(model, entry.head)[:entry.keep]
    setattr(model, entry.head, head)
    preprocessor = Preprocessor(spec.kind, spec.resize_size, spec.input_size, spec.mean, spec.std, spec.min_frames,
                                spec.max_frames, spec.antialias)
    return (model if entry.video else FramePooled(model)), preprocessor, loaded


for _name in _TORCHVISION:
    BACKBONES.register(_name)(BackboneEntry(spec=lambda n=_name: _spec(n), build=_build))
