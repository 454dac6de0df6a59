"""Backbones: published specs, preprocessing = torchvision's presets, [B, D] features, weights, handcrafted."""
from __future__ import annotations

import functools
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.models.video as video_models

from tal.errors import TalInputError
from tal.features.backbones import (
    Preprocessor,
    build_backbone,
    get_spec,
    list_backbones,
    weights_cache_dir,
)
from tal.features.handcrafted import FEATURE_DIM, handcrafted_features

# name: (feature_dim, kind, input_size, default_window, default_fps, weights file), from torchvision's
# weights docs ("frame_rate=15, clip_len=16" ...) and the models' penultimate layers.
PUBLISHED = {
    "r2plus1d_18": (512, "clip", 112, 16, 15.0, "r2plus1d_18-91a641e6.pth"),
    "r3d_18": (512, "clip", 112, 16, 15.0, "r3d_18-b3b3357e.pth"),
    "s3d": (1024, "clip", 224, 128, 15.0, "s3d-d76dad2f.pth"),
    "mvit_v2_s": (768, "clip", 224, 16, 7.5, "mvit_v2_s-ae3be167.pth"),
    "swin3d_t": (768, "clip", 224, 32, 15.0, "swin3d_t-7615ae03.pth"),
    "resnet50": (2048, "frame", 224, 16, None, "resnet50-11ad3fa6.pth"),
    "vgg16": (4096, "frame", 224, 1, 24.0, "vgg16-397923af.pth"),
    "handcrafted": (104, "descriptor", 64, 16, None, None),
}


@functools.lru_cache(maxsize=None)
def random_backbone(name: str):
    """One randomly initialised build per backbone for the whole module (building costs seconds)."""
    return build_backbone(name, "random")


def random_clips(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_list_backbones_gives_the_published_specs():
    specs = {s.name: s for s in list_backbones()}
    assert list(specs)[:len(PUBLISHED)] == list(PUBLISHED)  # then I3D, C3D, CLIP (their own test files)
    for name, (dim, kind, size, window, fps, file) in PUBLISHED.items():
        spec = specs[name]
        assert (spec.feature_dim, spec.kind, spec.input_size, spec.default_window, spec.default_fps) == (
            dim, kind, size, window, fps)
        assert spec.weights == "none" if file is None else spec.weights.endswith(f"({file})")
    assert specs["r3d_18"].mean == (0.43216, 0.394666, 0.37645) and specs["r3d_18"].resize_size == (128, 171)
    assert specs["mvit_v2_s"].mean == (0.45, 0.45, 0.45) and specs["mvit_v2_s"].resize_size == (256,)
    assert specs["resnet50"].resize_size == (232,) and specs["resnet50"].antialias
    assert not specs["swin3d_t"].antialias  # torchvision's video preset resizes without antialiasing
    with pytest.raises(TalInputError, match="unknown backbone 'i4d': choose one of r2plus1d_18, r3d_18"):
        get_spec("i4d")


@pytest.mark.parametrize("name", ["r3d_18", "s3d", "mvit_v2_s", "resnet50"])
def test_preprocess_matches_torchvision_preset(name):
    """Same tensor as the weights' own transforms, within one grey level of uint8 rounding."""
    spec = get_spec(name)
    weights = {"r3d_18": video_models.R3D_18_Weights, "s3d": video_models.S3D_Weights,
               "mvit_v2_s": video_models.MViT_V2_S_Weights}.get(name)
    if weights is None:
        from torchvision.models import ResNet50_Weights as weights
    clips = random_clips((2, 3, 90, 120, 3))  # [B, T, H, W, 3]
    mine = Preprocessor(spec.kind, spec.resize_size, spec.input_size, spec.mean, spec.std,
                        antialias=spec.antialias)(clips)
    frames = torch.from_numpy(clips).permute(0, 1, 4, 2, 3)  # [B, T, 3, H, W]
    preset = weights.DEFAULT.transforms()
    theirs = preset(frames) if spec.kind == "clip" else preset(frames.flatten(0, 1)).view(mine.shape)
    std = torch.tensor(spec.std).view((3, 1, 1, 1) if spec.kind == "clip" else (3, 1, 1))
    grey_levels = (mine - theirs).abs() * std * 255
    assert mine.shape == theirs.shape and grey_levels.max() <= 1.001


def test_preprocess_layout_and_normalisation():
    spec = get_spec("r3d_18")
    clips = np.full((2, 5, 40, 60, 3), (128, 64, 255), np.uint8)
    x = random_backbone("r3d_18").preprocess(clips)
    assert x.shape == (2, 3, 5, 112, 112) and x.dtype == torch.float32
    expected = [(v / 255 - m) / s for v, m, s in zip((128, 64, 255), spec.mean, spec.std)]
    assert torch.allclose(x.mean(dim=(0, 2, 3, 4)), torch.tensor(expected), atol=1e-5)
    frame_input = build_backbone("handcrafted").preprocess(clips)
    assert frame_input.shape == (2, 5, 3, 64, 64) and float(frame_input[0, 0, 2, 0, 0]) == 1.0


def test_window_resampled_to_what_the_network_accepts():
    mvit = random_backbone("mvit_v2_s").preprocessor
    s3d = random_backbone("s3d").preprocessor
    clips = random_clips((1, 8, 32, 32, 3))
    assert mvit(clips).shape == (1, 3, 16, 224, 224)  # fixed at 16 frames, each frame twice
    assert torch.equal(mvit(clips)[:, :, 0], mvit(clips)[:, :, 1])
    assert s3d(clips).shape == (1, 3, 14, 224, 224)
    assert mvit(random_clips((1, 20, 32, 32, 3))).shape[2] == 16


@pytest.mark.parametrize("name,batch,frames", [
    ("r2plus1d_18", 2, 4), ("r3d_18", 2, 4), ("s3d", 1, 14), ("mvit_v2_s", 1, 16), ("resnet50", 2, 2),
    ("handcrafted", 2, 4),
])
def test_random_weights_give_documented_dim(name, batch, frames):
    backbone = random_backbone(name)
    features = backbone(backbone.preprocess(random_clips((batch, frames, 24, 32, 3))))
    assert features.shape == (batch, PUBLISHED[name][0]) and features.dtype == torch.float32
    assert features.device.type == "cpu" and torch.isfinite(features).all()
    assert backbone.weights_id == ("none" if name == "handcrafted" else "random(seed=0)")


def test_swin3d_t_dim_on_a_small_input():
    """Swin accepts any size; one tiny forward keeps this fast on CPU."""
    backbone = random_backbone("swin3d_t")
    features = backbone(torch.randn(1, 3, 4, 64, 64))
    assert features.shape == (1, 768) and features.dtype == torch.float32


def test_preprocessor_pickles():
    backbone = random_backbone("r3d_18")
    clips = random_clips((1, 3, 20, 30, 3))
    restored = pickle.loads(pickle.dumps(backbone.preprocessor))
    assert torch.equal(restored(clips), backbone.preprocess(clips))
    assert len(pickle.dumps(backbone.preprocessor)) < 2000  # no model inside


# ------------------------------------------------------------------------------------------------
# Weights


@pytest.fixture
def empty_hub(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    return tmp_path / "hub" / "checkpoints"


def test_offline_missing_weights_message(empty_hub):
    assert weights_cache_dir() == empty_hub
    with pytest.raises(TalInputError) as caught:
        build_backbone("r3d_18")
    expected = empty_hub / "r3d_18-b3b3357e.pth"
    url = "https://download.pytorch.org/models/r3d_18-b3b3357e.pth"
    assert str(caught.value) == (
        f"backbone r3d_18: cannot download its weights (tests never download ({url})); download {url} on a "
        f"machine with internet and put {expected.name} in {empty_hub}, or pass --weights PATH"
    )


def _s3d_state(seed: int) -> dict[str, torch.Tensor]:
    """A full S3D state dict (the smallest video model: 8M parameters) with seeded random values."""
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in video_models.s3d(weights=None).state_dict().items()}


def _assert_loaded(backbone, state: dict[str, torch.Tensor]) -> None:
    loaded = backbone.model.state_dict()
    body = [k for k in state if not k.startswith("classifier.")]
    assert sorted(loaded) == sorted(body)  # the classifier is gone (identity)
    assert all(torch.equal(loaded[k].cpu(), state[k]) for k in body)


def test_cached_weights_are_loaded(empty_hub):
    state = _s3d_state(seed=3)
    empty_hub.mkdir(parents=True)
    torch.save(state, empty_hub / "s3d-d76dad2f.pth")
    backbone = build_backbone("s3d")
    assert backbone.weights_id == "torchvision:S3D_Weights.KINETICS400_V1"
    _assert_loaded(backbone, state)
    first = "features.0.0.0.weight"
    assert not torch.equal(random_backbone("s3d").model.state_dict()[first], state[first])


def test_weights_from_a_path(tmp_path):
    state = _s3d_state(seed=4)
    full = tmp_path / "full.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": torch.tensor(3)}, full)
    headless = tmp_path / "headless.pt"
    torch.save({k: v for k, v in state.items() if not k.startswith("classifier.")}, headless)
    for path in (full, headless):
        backbone = build_backbone("s3d", str(path))
        _assert_loaded(backbone, state)
        assert backbone.weights_id.startswith(f"file:{path.name}#sha256:") and len(backbone.weights_id) == len(
            f"file:{path.name}#sha256:") + 12


def test_weights_mismatch_and_bad_files(tmp_path):
    state = _s3d_state(seed=5)
    del state["features.0.0.0.weight"]
    state["extra.weight"] = torch.zeros(1)
    state["features.1.weight"] = torch.zeros(2)  # not a key of S3D: unexpected
    state["features.0.0.1.weight"] = torch.zeros(7)  # a BatchNorm of 64 channels
    wrong = tmp_path / "wrong.pth"
    torch.save(state, wrong)
    with pytest.raises(TalInputError) as caught:
        build_backbone("s3d", str(wrong))
    assert str(caught.value) == (
        f"{wrong}: weights do not fit backbone s3d (missing: features.0.0.0.weight; "
        "unexpected: extra.weight, features.1.weight; wrong shape: features.0.0.1.weight)"
    )
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(TalInputError, match=rf"^{garbage}: not a readable PyTorch checkpoint \(UnpicklingError\)"):
        build_backbone("s3d", str(garbage))
    with pytest.raises(TalInputError, match=r"^--weights .*absent.pth: no such file$"):
        build_backbone("s3d", str(tmp_path / "absent.pth"))
    with pytest.raises(TalInputError, match="backbone handcrafted has no weights"):
        build_backbone("handcrafted", str(wrong))


def test_device():
    if torch.cuda.is_available():
        backbone = build_backbone("handcrafted", device="cuda")
        clips = random_clips((2, 4, 32, 32, 3))
        assert torch.equal(backbone(backbone.preprocess(clips)), build_backbone("handcrafted")(
            build_backbone("handcrafted").preprocess(clips)))
    else:
        with pytest.raises(TalInputError, match="device 'cuda': CUDA is not available on this machine"):
            build_backbone("handcrafted", device="cuda")
    with pytest.raises(TalInputError, match="unknown device 'gpu'"):
        build_backbone("handcrafted", device="gpu")


# ------------------------------------------------------------------------------------------------
# Handcrafted descriptor


def moving_blob(color: tuple[float, float, float], velocity: tuple[float, float], frames: int = 8,
                start: tuple[float, float] = (32.0, 32.0), texture: float = 0.0, seed: int = 0) -> np.ndarray:
    """uint8 [frames, 64, 64, 3]: a Gaussian blob of `color` moving at `velocity` px/frame on noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float64)
    out = []
    for t in range(frames):
        cx, cy = start[0] + velocity[0] * (t - frames / 2), start[1] + velocity[1] * (t - frames / 2)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 7.0 ** 2))
        stripes = 1 + texture * np.sin(xx - velocity[0] * t)
        rgb = blob[..., None] * np.asarray(color) * stripes[..., None] * 230 + rng.uniform(0, 12, (64, 64, 3))
        out.append(np.clip(rgb, 0, 255).astype(np.uint8))
    return np.stack(out)


def test_handcrafted_layout_by_hand():
    red = np.zeros((1, 3, 16, 16, 3), np.uint8)
    red[..., 0] = 255
    grey = np.full((1, 3, 16, 16, 3), 128, np.uint8)
    backbone = build_backbone("handcrafted")
    f_red, f_grey = backbone(backbone.preprocess(np.concatenate([red, grey])))
    assert f_red[0] == 1.0 and f_red[1:12].sum() == 0 and f_red[12] == 1.0  # all chromatic, hue bin 0
    assert f_red[16] == 1.0 and f_red[20] == 1.0  # saturation and value in the top bin
    assert torch.allclose(f_red[21:25], torch.full((4,), 0.299), atol=1e-6)  # grey level of pure red
    assert f_grey[:13].sum() == 0 and f_grey[13] == 1.0 and f_grey[17 + 2] == 1.0  # achromatic, value 0.5
    assert torch.all(f_red[25:33] == 0) and f_red[33] == 0  # flat: no gradient energy
    assert torch.all(f_red[35:] == 0) and torch.all(f_grey[35:] == 0)  # static: no std, no motion


def test_handcrafted_motion_direction():
    backbone = build_backbone("handcrafted")
    clips = np.stack([moving_blob((1, 1, 1), v) for v in [(1.5, 0), (-1.5, 0), (0, 1.5), (0, -1.5)]])
    flow = backbone(backbone.preprocess(clips))[:, 70 + 7:70 + 9]  # mean whole-frame (u, v)
    assert flow[0, 0] > 0.2 and flow[1, 0] < -0.2 and flow[2, 1] > 0.2 and flow[3, 1] < -0.2
    assert flow[0, 1].abs() < 0.05 and flow[2, 0].abs() < 0.05


def test_handcrafted_texture_orientation():
    """Vertical stripes put their gradient energy in orientation bin 0, horizontal ones in bin 4."""
    yy, xx = np.mgrid[0:64, 0:64]
    vertical = np.repeat((127 + 100 * np.sin(xx / 2.0))[..., None], 3, -1)  # [64, 64, 3]
    horizontal = vertical.transpose(1, 0, 2)
    clips = np.stack([np.stack([vertical] * 2), np.stack([horizontal] * 2)]).astype(np.uint8)
    backbone = build_backbone("handcrafted")
    orientation = backbone(backbone.preprocess(clips))[:, 25:33]
    assert orientation[0].argmax() == 0 and orientation[0, 0] > 0.9
    assert orientation[1].argmax() == 4 and orientation[1, 4] > 0.9


def test_handcrafted_is_deterministic():
    clips = random_clips((3, 8, 48, 80, 3), seed=5)
    a = build_backbone("handcrafted")
    b = build_backbone("handcrafted")
    fa, fb = a(a.preprocess(clips)), b(b.preprocess(clips))
    assert fa.shape == (3, FEATURE_DIM) and torch.equal(fa, fb)
    assert torch.equal(handcrafted_features(a.preprocess(clips)), fa)


def test_handcrafted_separates_synthetic_actions():
    """Six 'actions' (colour x motion x texture), jittered start and noise: nearest centroid is perfect."""
    actions = [  # (colour, velocity px/frame, texture)
        ((1, 0.2, 0.2), (1.5, 0), 0.0), ((1, 0.2, 0.2), (-1.5, 0), 0.0), ((0.2, 0.3, 1), (1.5, 0), 0.0),
        ((0.2, 1, 0.3), (0, 0), 0.0), ((0.2, 1, 0.3), (0, 0), 1.0), ((1, 1, 0.2), (0, 1.5), 0.0),
    ]
    rng = np.random.default_rng(0)
    clips, labels = [], []
    for label, (color, velocity, texture) in enumerate(actions):
        for k in range(6):
            start = tuple(rng.uniform(22, 42, 2))
            clips.append(moving_blob(color, velocity, start=start, texture=texture, seed=100 * label + k))
            labels.append(label)
    backbone = build_backbone("handcrafted")
    features = backbone(backbone.preprocess(np.stack(clips))).numpy()  # [36, 104]
    labels_arr = np.asarray(labels)
    train = np.arange(len(labels)) % 6 < 3
    scaled = (features - features[train].mean(0)) / (features[train].std(0) + 1e-3)
    centroids = np.stack([scaled[train & (labels_arr == c)].mean(0) for c in range(len(actions))])
    dist = np.linalg.norm(scaled[~train, None] - centroids[None], axis=2)  # [18 held out, 6 actions]
    assert np.array_equal(dist.argmin(1), labels_arr[~train])
    own = dist[np.arange(len(dist)), labels_arr[~train]]
    other = np.where(np.eye(len(actions), dtype=bool)[labels_arr[~train]], np.inf, dist).min(1)
    assert np.all(other > 1.1 * own)  # measured: the nearest other action is >= 1.24 times farther


def test_frame_pooling_in_parts_equals_one_pass():
    from tal.features.backbones import FramePooled

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    clips = torch.randn(3, 5, 3, 8, 8)  # [B, T, 3, S, S]
    with torch.no_grad():
        whole = FramePooled(net, frames_per_pass=64)(clips)
        parts = FramePooled(net, frames_per_pass=2)(clips)
        by_hand = net(clips.flatten(0, 1)).view(3, 5, 4).mean(1)
    assert whole.shape == (3, 4) and torch.allclose(whole, parts, atol=1e-6) and torch.allclose(whole, by_hand)
