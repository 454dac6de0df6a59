"""vgg16: fc7 (after its ReLU) of every frame, averaged over the window: the Charades-STA features of 2D-TAN.
Random weights saved in torchvision's published layout (classifier included), from --weights and from the
torch hub cache."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.models as models

from tal.features.backbones import build_backbone, get_spec, weights_file_name
from tal.features.decode import iter_clips

from backbone_checks import TINY, assert_differ, check_timing, extract, save_state, seeded_state


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("vgg")
    return {seed: save_state(seeded_state(models.vgg16, seed), root / str(seed) / "vgg16-397923af.pth")
            for seed in (1, 2)}


def test_published_defaults():
    spec = get_spec("vgg16")
    assert (spec.feature_dim, spec.kind, spec.input_size, spec.default_window, spec.default_stride,
            spec.default_fps) == (4096, "frame", 224, 1, 4, 24.0)
    assert spec.resize_size == (256,) and spec.mean == (0.485, 0.456, 0.406) and "Charades-STA" in spec.reproduces
    assert weights_file_name("vgg16") == "vgg16-397923af.pth"


def test_fc7_of_each_frame_averaged(files, sample_videos, tmp_path, one_torch_thread):
    videos = [p for p in sample_videos if p.stem == "carphone_distorted"]
    a = extract(videos, tmp_path / "a.h5", "vgg16", str(files[1]))
    check_timing(a, videos, TINY, 4096)
    assert_differ(a["carphone_distorted"], extract(videos, tmp_path / "b.h5", "vgg16", str(files[2]))[
        "carphone_distorted"])
    net = models.vgg16().eval()
    net.load_state_dict(torch.load(files[1]))
    backbone = build_backbone("vgg16", str(files[1]))
    _, clip = next(iter_clips(videos[0], TINY["window"], TINY["stride"], TINY["fps"], "pyav", 256))
    frames = backbone.preprocess(clip[None])[0]  # [T, 3, 224, 224]
    with torch.no_grad():
        fc6 = torch.relu(net.classifier[0](torch.flatten(net.avgpool(net.features(frames)), 1)))
        fc7 = torch.relu(net.classifier[3](fc6)).mean(0)  # [4096], averaged over the window's frames
    assert (a["carphone_distorted"] >= 0).all()  # after the ReLU, as Caffe's in-place fc7 blob
    np.testing.assert_allclose(a["carphone_distorted"][0], fc7.numpy(), rtol=1e-4, atol=1e-6 * float(fc7.abs().max()))


def test_published_file_from_the_hub_cache(files, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    cached = tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(files[2].read_bytes())
    backbone = build_backbone("vgg16")
    assert backbone.weights_id == "torchvision:VGG16_Weights.IMAGENET1K_V1"
    head = backbone.model.net.classifier
    assert len(head) == 5 and torch.equal(head[3].weight, torch.load(files[2])["classifier.3.weight"])
