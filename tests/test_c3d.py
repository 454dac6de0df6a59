"""c3d / c3d_fc6: Sports-1M C3D in the key layout of the shared PyTorch conversion (`c3d.pickle`), fc7 or fc6,
and the PCA projection of a user-supplied file, checked against numpy on the unprojected features."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tal.errors import TalInputError
from tal.features.backbones import build_backbone, get_spec
from tal.features.backbones.c3d import C3D

from backbone_checks import TINY, assert_differ, check_timing, extract, save_state, seeded_state

# the conversion's keys and shapes (conv kernels 3x3x3; fc8 over Sports-1M's 487 classes)
PUBLISHED_SHAPES = {
    "conv1.weight": (64, 3, 3, 3, 3), "conv2.weight": (128, 64, 3, 3, 3), "conv3a.weight": (256, 128, 3, 3, 3),
    "conv3b.weight": (256, 256, 3, 3, 3), "conv4a.weight": (512, 256, 3, 3, 3), "conv4b.weight": (512, 512, 3, 3, 3),
    "conv5a.weight": (512, 512, 3, 3, 3), "conv5b.weight": (512, 512, 3, 3, 3), "fc6.weight": (4096, 8192),
    "fc7.weight": (4096, 4096), "fc8.weight": (487, 4096),
}


def published_state(seed: int) -> dict[str, torch.Tensor]:
    state = seeded_state(lambda: C3D("fc7"), seed)
    torch.manual_seed(seed)
    state.update({"fc8.weight": torch.randn(487, 4096) * 0.01, "fc8.bias": torch.zeros(487)})
    return state


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("c3d")
    return {seed: save_state(published_state(seed), root / str(seed) / "c3d.pickle") for seed in (1, 2)}


@pytest.fixture(scope="module")
def carphone(sample_videos):
    return [next(p for p in sample_videos if p.stem == "carphone_distorted")]


def test_the_conversion_layout_and_defaults():
    state = published_state(0)
    assert {k: tuple(v.shape) for k, v in state.items() if k.endswith("weight")} == PUBLISHED_SHAPES
    assert len(state) == 2 * len(PUBLISHED_SHAPES)  # a weight and a bias each
    for name in ("c3d", "c3d_fc6"):
        spec = get_spec(name)
        assert (spec.feature_dim, spec.input_size, spec.resize_size, spec.default_window, spec.default_stride,
                spec.min_frames, spec.max_frames) == (4096, 112, (128, 171), 16, 8, 16, 16)
    x = build_backbone("c3d", "random").preprocess(np.full((1, 16, 150, 200, 3), 200, np.uint8))
    assert x.shape == (1, 3, 16, 112, 112) and torch.allclose(x, torch.tensor(200.0), atol=1e-3)  # 0-255 input


def test_fc7_fc6_and_other_weights(files, carphone, tmp_path):
    fc7 = extract(carphone, tmp_path / "fc7.h5", "c3d", str(files[1]))
    check_timing(fc7, carphone, TINY, 4096)  # a 2-frame window is resampled to C3D's 16 frames
    assert fc7["attrs"]["weights"].startswith("file:c3d.pickle#sha256:")
    fc6 = extract(carphone, tmp_path / "fc6.h5", "c3d_fc6", str(files[1]))
    other = extract(carphone, tmp_path / "other.h5", "c3d", str(files[2]))
    assert_differ(fc7["carphone_distorted"], fc6["carphone_distorted"])
    assert_differ(fc7["carphone_distorted"], other["carphone_distorted"])
    net = C3D("fc6").eval()
    net.load_state_dict({k: v for k, v in torch.load(files[1]).items() if k.startswith(("conv", "fc6"))})
    fc7_net = C3D("fc7").eval()
    fc7_net.load_state_dict({k: v for k, v in torch.load(files[1]).items() if not k.startswith("fc8")})
    with torch.no_grad():
        relu_fc7 = torch.relu(fc7_net.fc7(torch.from_numpy(fc6["carphone_distorted"])))  # fc7 on top of fc6
    np.testing.assert_allclose(fc7["carphone_distorted"], relu_fc7.numpy(), rtol=1e-4,
                               atol=1e-5 * float(relu_fc7.abs().max()))

    rng = np.random.default_rng(0)
    components = np.linalg.qr(rng.normal(size=(4096, 8)))[0].T.astype(np.float32)  # [8, 4096] orthonormal rows
    mean = rng.normal(size=4096).astype(np.float32)
    pca = tmp_path / "pca.npz"
    np.savez(pca, mean=mean, components=components)
    projected = extract(carphone, tmp_path / "pca.h5", "c3d", f"{files[1]},{pca}")
    assert projected["attrs"]["feature_dim"] == 8 and projected["attrs"]["weights"].startswith(
        "file:c3d.pickle+pca.npz#sha256:")
    np.testing.assert_allclose(projected["carphone_distorted"], (fc7["carphone_distorted"] - mean) @ components.T,
                               rtol=1e-4, atol=1e-4)


def test_bad_pca_files(files, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, mean=np.zeros(10), components=np.zeros((3, 10)))
    with pytest.raises(TalInputError, match=r"bad.npz: a PCA file needs 'mean' \[4096\] and 'components' "
                                            r"\[K, 4096\], got \{'mean': \(10,\), 'components': \(3, 10\)\}"):
        build_backbone("c3d", f"{files[1]},{bad}")
    with pytest.raises(TalInputError, match=r"give at most one C3D state dict and one PCA file"):
        build_backbone("c3d", f"{files[1]},{files[2]}")
