"""Feature backbones: torchvision video models, a per-frame 2D model, and a weight-free descriptor.

Every backbone maps a batch of clips, uint8 [B, T, H, W, 3] RGB, to float32 [B, D] features in two
steps: `preprocess` (CPU, picklable: resize, centre crop, normalise as the published weights
expect; cheap enough for data-loader workers) and `__call__` (the network on its device, eval mode,
no gradients). Features are the penultimate layer: the classifier head is replaced by identity.

Input size, resize rule, mean/std, clip length and frame rate are read from torchvision's weights
enums (`transforms` and the `_docs` text "frame_rate=.., clip_len=.."), so they are the published
ones. Weights are never downloaded at run time: `weights=None` uses the file torchvision would have
cached under `<torch hub dir>/checkpoints/`, and says exactly what to do when it is missing.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import numpy as np
import torch

from tal.errors import TalInputError


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone expects and returns."""

    name: str
    feature_dim: int
    kind: str  # "clip" (3D over the window), "frame" (2D per frame, mean over the window), "descriptor"
    input_size: int  # crop size fed to the network
    default_window: int  # frames per clip the weights were trained/evaluated with
    default_fps: float | None  # frame rate of those clips (None: the video's own)
    weights: str  # where weights come from: torchvision enum and file name, or "none"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_size: tuple[int, ...] = ()  # (h, w) exact, or (short side,), before the centre crop
    min_frames: int = 1  # the network's smallest usable clip
    max_frames: int | None = None  # its largest (MViT's positional layout is fixed at 16)
    antialias: bool = True  # resize with antialiasing (torchvision's video presets do not)


@dataclass(frozen=True)
class _TorchvisionEntry:
    builder: str  # function in torchvision.models(.video)
    weights_enum: str
    video: bool
    feature_dim: int
    head: str  # attribute replaced by identity
    min_frames: int = 1
    max_frames: int | None = None


_TORCHVISION: dict[str, _TorchvisionEntry] = {
    "r2plus1d_18": _TorchvisionEntry("r2plus1d_18", "R2Plus1D_18_Weights", True, 512, "fc"),
    "r3d_18": _TorchvisionEntry("r3d_18", "R3D_18_Weights", True, 512, "fc"),
    "s3d": _TorchvisionEntry("s3d", "S3D_Weights", True, 1024, "classifier", min_frames=14),
    "mvit_v2_s": _TorchvisionEntry("mvit_v2_s", "MViT_V2_S_Weights", True, 768, "head", 16, 16),
    "swin3d_t": _TorchvisionEntry("swin3d_t", "Swin3D_T_Weights", True, 768, "head"),
    "resnet50": _TorchvisionEntry("resnet50", "ResNet50_Weights", False, 2048, "fc"),
}
FRAME_WINDOW = 16  # default window of the per-frame and handcrafted backbones


def _weights_enum(entry: _TorchvisionEntry):
    import torchvision.models as models
    import torchvision.models.video as video_models

    return getattr(video_models if entry.video else models, entry.weights_enum).DEFAULT


def weights_file_name(name: str) -> str:
    """File name torchvision caches the default weights of backbone `name` under."""
    return Path(urlparse(_weights_enum(_TORCHVISION[name]).url).path).name


def weights_cache_dir() -> Path:
    """torchvision's checkpoint cache: <torch.hub.get_dir()>/checkpoints (honours $TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _published_clip(docs: str) -> tuple[int, float | None]:
    """(clip_len, frame_rate) from a torchvision weights `_docs` text."""
    clip = re.search(r"clip_len=(\d+)", docs)
    rate = re.search(r"frame_rate=([\d.]+)", docs)
    return (int(clip.group(1)) if clip else FRAME_WINDOW), (float(rate.group(1)) if rate else None)


def _torchvision_spec(name: str) -> BackboneSpec:
    entry = _TORCHVISION[name]
    weights = _weights_enum(entry)
    transform = weights.transforms()
    crop = transform.crop_size[0]
    window, fps = _published_clip(weights.meta.get("_docs", "")) if entry.video else (FRAME_WINDOW, None)
    return BackboneSpec(
        name=name,
        feature_dim=entry.feature_dim,
        kind="clip" if entry.video else "frame",
        input_size=int(crop),
        default_window=window,
        default_fps=fps,
        weights=f"torchvision {weights} ({weights_file_name(name)})",
        mean=tuple(float(m) for m in transform.mean),
        std=tuple(float(s) for s in transform.std),
        resize_size=tuple(int(s) for s in transform.resize_size),
        min_frames=entry.min_frames,
        max_frames=entry.max_frames,
        antialias=bool(getattr(transform, "antialias", False)),  # VideoClassification hard-codes False
    )


def _handcrafted_spec() -> BackboneSpec:
    from tal.features import handcrafted

    return BackboneSpec(
        name="handcrafted",
        feature_dim=handcrafted.FEATURE_DIM,
        kind="descriptor",
        input_size=handcrafted.FRAME_SIZE,
        default_window=FRAME_WINDOW,
        default_fps=None,
        weights="none",
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        resize_size=(handcrafted.FRAME_SIZE, handcrafted.FRAME_SIZE),
    )


BACKBONE_NAMES = (*_TORCHVISION, "handcrafted")


def get_spec(name: str) -> BackboneSpec:
    """The BackboneSpec of `name`; TalInputError listing the known names otherwise."""
    if name == "handcrafted":
        return _handcrafted_spec()
    if name not in _TORCHVISION:
        raise TalInputError(f"unknown backbone {name!r}: choose one of {', '.join(BACKBONE_NAMES)}")
    return _torchvision_spec(name)


def list_backbones() -> list[BackboneSpec]:
    """Every backbone tal knows, for `tal extract-features --list-backbones`."""
    return [get_spec(name) for name in BACKBONE_NAMES]


@dataclass(frozen=True)
class Preprocessor:
    """uint8 [B, T, H, W, 3] clips -> the network's float32 input; small and picklable for workers.

    The steps of torchvision's preset for the weights: resize on uint8 (bilinear; antialiased or
    not, as the preset), centre crop, scale to [0, 1], normalise. Output layout: clip models
    [B, 3, T, S, S]; frame models and the descriptor [B, T, 3, S, S]. A window outside the
    network's [min_frames, max_frames] is resampled to the nearest allowed length by nearest-frame
    sampling.
    """

    kind: str
    resize_size: tuple[int, ...]
    crop_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    min_frames: int = 1
    max_frames: int | None = None
    antialias: bool = True

    def __call__(self, clips: np.ndarray) -> torch.Tensor:
        from tal.features.transforms import center_crop, normalize, resize

        if clips.ndim != 5 or clips.shape[-1] != 3:
            raise ValueError(f"expected uint8 clips [B, T, H, W, 3], got shape {clips.shape}")
        num_frames = clips.shape[1]
        wanted = max(num_frames, self.min_frames)
        wanted = min(wanted, self.max_frames) if self.max_frames else wanted
        if wanted != num_frames:
            clips = clips[:, np.floor(np.arange(wanted) * num_frames / wanted).astype(np.int64)]
        b, t, h, w, _ = clips.shape
        frames = torch.from_numpy(np.ascontiguousarray(clips)).view(b * t, h, w, 3).permute(0, 3, 1, 2)  # [BT, 3, H, W]
        frames = resize(frames, self.resize_size, self.antialias)
        frames = center_crop(frames, self.crop_size).float().div_(255.0)
        frames = normalize(frames, self.mean, self.std).view(b, t, 3, self.crop_size, self.crop_size)
        return frames.permute(0, 2, 1, 3, 4).contiguous() if self.kind == "clip" else frames.contiguous()


class FramePooled(torch.nn.Module):
    """A 2D image model applied to every frame, features averaged over the window.

    Frames go through the network `frames_per_pass` at a time, so a batch of many long windows
    does not hold every frame's activations at once.
    """

    def __init__(self, net: torch.nn.Module, frames_per_pass: int = 64):
        super().__init__()
        self.net = net
        self.frames_per_pass = frames_per_pass

    def forward(self, clips: torch.Tensor) -> torch.Tensor:  # [B, T, 3, S, S] -> [B, D]
        b, t = clips.shape[:2]
        frames = clips.flatten(0, 1)  # [BT, 3, S, S]
        features = torch.cat([self.net(part) for part in frames.split(self.frames_per_pass)])  # [BT, D]
        return features.view(b, t, -1).mean(1)


@dataclass(frozen=True)
class LoadedWeights:
    """Which weights a backbone holds: the cache's `weights`, `weights_sha256` and `weights_path` attributes."""

    id: str
    sha256: str = ""  # of the file loaded ("" for random or no weights)
    path: str = ""

    def attrs(self) -> dict[str, str]:
        return {"weights": self.id, "weights_sha256": self.sha256, "weights_path": self.path}


class Backbone:
    """A feature extractor: `preprocess` (CPU, picklable via `.preprocessor`) then `__call__`."""

    def __init__(
        self, spec: BackboneSpec, model: torch.nn.Module, preprocessor: Preprocessor, weights: LoadedWeights,
        device: str,
    ):
        self.spec = spec
        self.weights = weights
        self.weights_id = weights.id
        self.preprocessor = preprocessor
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)

    def preprocess(self, clips: np.ndarray) -> torch.Tensor:
        """uint8 [B, T, H, W, 3] -> float input tensor on CPU (same as `self.preprocessor(clips)`)."""
        return self.preprocessor(clips)

    @torch.no_grad()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Preprocessed batch -> float32 [B, feature_dim] on CPU."""
        features = self.model(batch.to(self.device, non_blocking=True))
        return features.float().cpu()

    def __repr__(self) -> str:
        spec = self.spec
        return f"Backbone({spec.name}, dim={spec.feature_dim}, weights={self.weights_id}, device={self.device})"


def _check_device(device: str) -> str:
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise TalInputError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TalInputError(f"device {device!r}: CUDA is not available on this machine; use --device cpu")
    return str(dev)


def _unwrap_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """A plain state dict from a checkpoint: unwraps {"state_dict"|"model": ...} and "module." prefixes."""
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise TalInputError(f"{path}: not a state dict (expected a mapping of parameter names to tensors)")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def _load_weights(model: torch.nn.Module, path: Path, name: str, head: str) -> None:
    """Load a state dict file into `model` (with its classifier); a headless checkpoint is accepted."""
    if not path.is_file():
        raise TalInputError(f"--weights {path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise TalInputError(
            f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}); tal loads tensors only "
            "(weights_only=True): save one with torch.save(model.state_dict(), PATH)"
        ) from None
    state = _unwrap_state_dict(obj, path)
    expected = model.state_dict()
    in_head = [k.startswith(head + ".") for k in expected]
    missing = [k for k, h in zip(expected, in_head) if k not in state and not h]
    unexpected = [k for k in state if k not in expected]
    mismatched = [k for k, h in zip(expected, in_head) if k in state and state[k].shape != expected[k].shape and not h]
    if missing or unexpected or mismatched:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")
        parts = [f"{label}: {show(keys)}" for label, keys in
                 (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)) if keys]
        raise TalInputError(f"{path}: weights do not fit backbone {name} ({'; '.join(parts)})")
    state = {k: v for k, v in state.items() if not (k.startswith(head + ".") and v.shape != expected[k].shape)}
    model.load_state_dict(state, strict=False)


def _loaded_file(path: Path, weights_id: str | None = None) -> LoadedWeights:
    from tal.features.weights import file_weights_id, sha256_of

    digest = sha256_of(path)
    return LoadedWeights(weights_id or file_weights_id(path, digest), digest, str(path.resolve()))


def _build_torchvision(spec: BackboneSpec, weights: str | None) -> tuple[torch.nn.Module, LoadedWeights]:
    from tal.features.weights import RANDOM_ID

    import torchvision.models as models
    import torchvision.models.video as video_models

    entry = _TORCHVISION[spec.name]
    builder: Callable[..., torch.nn.Module] = getattr(video_models if entry.video else models, entry.builder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = builder(weights=None)
    if weights is None:
        enum = _weights_enum(entry)
        file = weights_cache_dir() / weights_file_name(spec.name)
        if not file.is_file():
            raise TalInputError(
                f"backbone {spec.name}: pretrained weights not found at {file} (tal never downloads at run time); "
                f"download {file.name} on a machine with internet and pass --weights PATH, "
                f"or copy it to {file.parent}"
            )
        _load_weights(model, file, spec.name, entry.head)
        loaded = _loaded_file(file, f"torchvision:{enum}")
    elif weights == "random":
        loaded = LoadedWeights(RANDOM_ID)
    else:
        path = Path(weights)
        _load_weights(model, path, spec.name, entry.head)
        loaded = _loaded_file(path)
    setattr(model, entry.head, torch.nn.Identity())
    return (model if entry.video else FramePooled(model)), loaded


def build_backbone(name: str, weights: str | None = None, device: str = "cpu") -> Backbone:
    """Backbone `name` on `device`.

    weights: None -> torchvision's cached default weights (never downloaded: a missing file is a
    TalInputError that names it and where to put it); a path -> a state dict file (with or without
    the classifier; a mismatch names the offending keys); "random" -> random init with seed 0
    (tests and benchmarks). The handcrafted descriptor has no weights (None or "random").
    """
    spec = get_spec(name)
    device = _check_device(device)
    if spec.kind == "descriptor":
        from tal.features.handcrafted import HandcraftedDescriptor

        if weights not in (None, "random"):
            raise TalInputError(f"backbone handcrafted has no weights; drop --weights {weights}")
        preprocessor = Preprocessor("descriptor", spec.resize_size, spec.input_size, spec.mean, spec.std)
        return Backbone(spec, HandcraftedDescriptor(), preprocessor, LoadedWeights("none"), device)
    model, loaded = _build_torchvision(spec, weights)
    preprocessor = Preprocessor(
        spec.kind, spec.resize_size, spec.input_size, spec.mean, spec.std, spec.min_frames, spec.max_frames,
        spec.antialias,
    )
    return Backbone(spec, model, preprocessor, loaded, device)
