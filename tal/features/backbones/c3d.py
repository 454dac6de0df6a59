"""C3D (Tran et al., 2015) trained on Sports-1M: `c3d` (fc7) and `c3d_fc6`, 4096-d, with an optional PCA
projection (the ActivityNet challenge's 500-d C3D features are fc7 projected this way).

Layers and state dict keys are those of the commonly shared PyTorch conversion of the Sports-1M
weights (`c3d.pickle`: conv1, conv2, conv3a/b, conv4a/b, conv5a/b, fc6, fc7, fc8 with 487 classes).
Its input is 16 frames of 112x112 RGB with values 0-255: frames are resized to 128x171 (the C3D
paper's size) and centre-cropped, as that conversion's own example feeds them (no mean subtraction).
fc6 takes exactly 16 frames, so another window is resampled to 16 by nearest frame.

PCA: a `.npz` or `.h5` file with `mean` [4096] and `components` [K, 4096] (rows are the principal
axes, as scikit-learn's PCA stores them), given with the network's file: `--weights c3d.pickle,pca.npz`.
The feature is then `(fc - mean) @ components.T`, K-d.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from tal.errors import TalInputError
from tal.features.backbones.base import (
    BackboneEntry, BackboneSpec, LoadedWeights, Preprocessor, combine_loaded, load_weights_file, loaded_file, seeded,
)
from tal.features.download import PublishedFile, published_path
from tal.registry import BACKBONES

PUBLISHED = PublishedFile("http://imagelab.ing.unimore.it/files/c3d_pytorch/c3d.pickle")
FEATURE_DIM = 4096
PCA_SUFFIXES = (".npz", ".h5", ".hdf5")
_LAYERS = {"c3d": "fc7", "c3d_fc6": "fc6"}


class C3D(nn.Module):
    """[B, 3, 16, 112, 112] (0-255) -> [B, 4096]: fc6 or fc7 after its ReLU."""

    def __init__(self, layer: str = "fc7"):
        super().__init__()
        widths = (("conv1", 3, 64), ("conv2", 64, 128), ("conv3a", 128, 256), ("conv3b", 256, 256),
                  ("conv4a", 256, 512), ("conv4b", 512, 512), ("conv5a", 512, 512), ("conv5b", 512, 512))
        for name, cin, cout in widths:
            self.add_module(name, nn.Conv3d(cin, cout, kernel_size=3, padding=1))
        self.fc6 = nn.Linear(8192, FEATURE_DIM)
        if layer == "fc7":
            self.fc7 = nn.Linear(FEATURE_DIM, FEATURE_DIM)
        self.layer = layer
        # after conv1: spatial only; after conv2, conv3b, conv4b, conv5b: 2x2x2 (the last padded to 4x4)
        self.pools = {"conv1": nn.MaxPool3d((1, 2, 2), (1, 2, 2)), "conv2": nn.MaxPool3d(2, 2),
                      "conv3b": nn.MaxPool3d(2, 2), "conv4b": nn.MaxPool3d(2, 2),
                      "conv5b": nn.MaxPool3d(2, 2, padding=(0, 1, 1))}
        self._convs = [(name, getattr(self, name)) for name, _, _ in widths]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name, conv in self._convs:
            x = torch.relu(conv(x))
            if name in self.pools:
                x = self.pools[name](x)
        x = torch.relu(self.fc6(x.flatten(1)))  # [B, 8192] -> [B, 4096]
        return torch.relu(self.fc7(x)) if self.layer == "fc7" else x


class PCAProjection(nn.Module):
    """[B, D] -> [B, K]: (x - mean) @ components.T."""

    def __init__(self, mean: torch.Tensor, components: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean)  # [D]
        self.register_buffer("components", components)  # [K, D]
        self.feature_dim = int(components.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) @ self.components.T


def load_pca(path: Path, dim: int = FEATURE_DIM) -> PCAProjection:
    """A PCA file (`.npz` / `.h5` with `mean` [dim] and `components` [K, dim]); one-line errors otherwise."""
    fix = f"save one with numpy.savez(PATH, mean=<[{dim}]>, components=<[K, {dim}]>)"
    try:
        if path.suffix == ".npz":
            with np.load(path) as f:
                arrays = {k: np.asarray(f[k], np.float32) for k in ("mean", "components") if k in f}
        else:
            import h5py

            with h5py.File(path, "r") as f:
                arrays = {k: np.asarray(f[k], np.float32) for k in ("mean", "components") if k in f}
    except (OSError, ValueError) as exc:
        raise TalInputError(f"{path}: not a readable PCA file ({type(exc).__name__}); {fix}") from None
    mean, components = arrays.get("mean"), arrays.get("components")
    if mean is None or components is None or mean.shape != (dim,) or components.ndim != 2 or \
            components.shape[1] != dim:
        shapes = {k: v.shape for k, v in arrays.items()}
        raise TalInputError(f"{path}: a PCA file needs 'mean' [{dim}] and 'components' [K, {dim}], got {shapes}; {fix}")
    return PCAProjection(torch.from_numpy(mean), torch.from_numpy(components))


def _spec(name: str) -> BackboneSpec:
    layer = _LAYERS[name]
    reproduces = ("ActivityNet Captions and TACoS C3D (2D-TAN); with a PCA file, the ActivityNet-1.3 "
                  "challenge's 500-d C3D" if layer == "fc7" else "C3D fc6 features (e.g. TALL-style TACoS, ViGA)")
    return BackboneSpec(
        name=name, feature_dim=FEATURE_DIM, kind="clip", input_size=112, default_window=16, default_fps=None,
        weights=f"Sports-1M conversion {PUBLISHED.file_name} (+ optional PCA .npz/.h5)", mean=(0.0, 0.0, 0.0),
        std=(1 / 255, 1 / 255, 1 / 255), resize_size=(128, 171), min_frames=16, max_frames=16, default_stride=8,
        reproduces=f"{layer}: {reproduces}",
    )


class WithPCA(nn.Module):
    def __init__(self, net: nn.Module, pca: PCAProjection):
        super().__init__()
        self.net, self.pca, self.feature_dim = net, pca, pca.feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pca(self.net(x))


def _build(spec: BackboneSpec, weights: str | None) -> tuple[nn.Module, Preprocessor, LoadedWeights]:
    from tal.features.weights import RANDOM_ID, weight_files

    layer = _LAYERS[spec.name]
    net: nn.Module = seeded(lambda: C3D(layer))
    preprocessor = Preprocessor("clip", spec.resize_size, spec.input_size, spec.mean, spec.std, 16, 16)
    if weights == "random":
        return net, preprocessor, LoadedWeights(RANDOM_ID)
    files = weight_files(weights) if weights is not None else []
    pcas = [f for f in files if f.suffix.lower() in PCA_SUFFIXES]
    nets = [f for f in files if f not in pcas]
    if len(pcas) > 1 or len(nets) > 1:
        raise TalInputError(f"--weights {weights}: give at most one C3D state dict and one PCA file "
                            f"({', '.join(PCA_SUFFIXES)})")
    path = nets[0] if nets else published_path(spec.name, PUBLISHED)
    load_weights_file(net, path, spec.name, unused=("fc8.",) if layer == "fc7" else ("fc7.", "fc8."))
    parts = [loaded_file(path, None if nets else f"c3d:{PUBLISHED.file_name}")]
    if pcas:
        if not pcas[0].is_file():
            raise TalInputError(f"--weights {pcas[0]}: no such file")
        net = WithPCA(net, load_pca(pcas[0]))
        parts.append(loaded_file(pcas[0]))
    return net, preprocessor, parts[0] if len(parts) == 1 else combine_loaded(parts)


for _name in _LAYERS:
    BACKBONES.register(_name)(BackboneEntry(spec=lambda n=_name: _spec(n), build=_build))
