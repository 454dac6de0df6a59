"""The backbone interface: what a backbone expects (`BackboneSpec`), its CPU preprocessing, the network
on its device, which weights it holds, and `build_backbone` by name through `tal.registry.BACKBONES`.

Every backbone maps a batch of clips, uint8 [B, T, H, W, 3] RGB, to float32 [B, D] features in two
steps: `preprocess` (CPU, picklable: resize, centre crop, normalise as the published weights
expect; cheap enough for data-loader workers) and `__call__` (the network on its device, eval mode,
no gradients). A registered `BackboneEntry` gives the spec and builds (network, preprocessor,
weights); third-party packages add entries through the `tal.backbones` entry-point group.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from tal.errors import TalInputError
from tal.registry import BACKBONES


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
    default_stride: int | None = None  # frames between clips by default (None: = the window)
    reproduces: str = ""  # the published feature set these defaults and weights make


FRAME_WINDOW = 16  # default window of the per-frame and handcrafted backbones


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




@dataclass(frozen=True)
class BackboneEntry:
    """A registered backbone: `spec()` says what it is (cheap: no network built), `build(spec, weights)`
    returns (network, picklable preprocessor, LoadedWeights). `weights`: None (the published file),
    "random" (seed 0) or what the user gave to --weights."""

    spec: Callable[[], BackboneSpec]
    build: Callable[[BackboneSpec, str | None], tuple[torch.nn.Module, Callable, LoadedWeights]]


def _entry(name: str) -> BackboneEntry:
    import tal.features.backbones  # noqa: F401  (registers tal's own backbones)

    if name not in BACKBONES:
        raise TalInputError(f"unknown backbone {name!r}: choose one of {', '.join(BACKBONES.in_order())} "
                            f"(tal extract-features --list-backbones)")
    return BACKBONES.get(name)


def get_spec(name: str) -> BackboneSpec:
    """The BackboneSpec of `name`; TalInputError listing the known names otherwise."""
    return _entry(name).spec()


def list_backbones() -> list[BackboneSpec]:
    """Every backbone tal knows (its own, then entry points), for `tal extract-features --list-backbones`."""
    _entry("handcrafted")
    return [BACKBONES.get(name).spec() for name in BACKBONES.in_order()]


def build_backbone(name: str, weights: str | None = None, device: str = "cpu") -> Backbone:
    """Backbone `name` on `device`.

    weights: None -> the published weights (the torch hub cache, downloaded there once when missing;
    offline, a TalInputError names the URL, the file and the folder); a path -> that file as published,
    or a state dict with or without the classifier (a mismatch names the offending keys); "random" ->
    random init with seed 0 (tests and benchmarks). The handcrafted descriptor has no weights.
    """
    entry = _entry(name)
    spec = entry.spec()
    device = _check_device(device)
    model, preprocessor, loaded = entry.build(spec, weights)
    dim = getattr(model, "feature_dim", spec.feature_dim)  # e.g. a PCA file's components
    if dim != spec.feature_dim:
        spec = dataclasses.replace(spec, feature_dim=int(dim))
    return Backbone(spec, model, preprocessor, loaded, device)


def seeded(builder: Callable[[], torch.nn.Module], seed: int = 0) -> torch.nn.Module:
    """A network built under a fixed seed (random weights are reproducible) without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return builder()


def unwrap_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """A plain state dict from a checkpoint: unwraps {"state_dict"|"model": ...} and "module." prefixes."""
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise TalInputError(f"{path}: not a state dict (expected a mapping of parameter names to tensors)")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def read_state_file(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in a weights file (tensors only: weights_only=True); one-line errors for bad files."""
    if not path.is_file():
        raise TalInputError(f"--weights {path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise TalInputError(
            f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}); tal loads tensors only "
            "(weights_only=True): save one with torch.save(model.state_dict(), PATH)"
        ) from None
    return unwrap_state_dict(obj, path)


def _show(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, name: str,
               unused: tuple[str, ...] = ()) -> None:
    """Load `state` into `model`, every key checked; keys under the `unused` prefixes (a classifier, layers
    after the feature) may be present, absent or of another shape. BatchNorm counters may be absent
    (files saved before PyTorch 0.4 lack them)."""
    def used(key: str) -> bool:
        return not key.startswith(unused) if unused else True

    state = {k: v for k, v in state.items() if used(k)}
    expected = {k: v for k, v in model.state_dict().items() if used(k)}
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    mismatched = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        parts = [f"{label}: {_show(keys)}" for label, keys in
                 (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)) if keys]
        raise TalInputError(f"{path}: weights do not fit backbone {name} ({'; '.join(parts)})")
    model.load_state_dict(state, strict=False)


def load_weights_file(model: torch.nn.Module, path: Path, name: str, unused: tuple[str, ...] = ()) -> None:
    """`read_state_file` then `load_state`."""
    load_state(model, read_state_file(path), path, name, unused)


def loaded_file(path: Path, weights_id: str | None = None) -> LoadedWeights:
    """The LoadedWeights of one file: its digest, resolved path and id (a user file's id by default)."""
    from tal.features.weights import file_weights_id, sha256_of

    digest = sha256_of(path)
    return LoadedWeights(weights_id or file_weights_id(path, digest), digest, str(path.resolve()))


def combine_loaded(parts: list[LoadedWeights]) -> LoadedWeights:
    """One LoadedWeights for a backbone made of several networks: ids joined by '+', the digest of the
    sorted digests (as `weights.digest_of` computes it for PATH,PATH), paths joined by ','. An id with
    any user file in it starts with 'file:', so inference asks for those files again."""
    import hashlib

    from tal.features.weights import RANDOM_ID

    if all(part.id == RANDOM_ID for part in parts):
        return LoadedWeights(RANDOM_ID)
    digest = hashlib.sha256("\n".join(sorted(p.sha256 for p in parts)).encode()).hexdigest()
    ids = [p.id.split("#sha256:")[0].removeprefix("file:") for p in parts]
    path = ",".join(p.path for p in parts)
    if any(p.id.startswith("file:") for p in parts):
        return LoadedWeights(f"file:{'+'.join(ids)}#sha256:{digest[:12]}", digest, path)
    return LoadedWeights("+".join(ids), digest, path)
