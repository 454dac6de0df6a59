"""I3D backbones: the port's checkpoint layout, SAME padding, RAFT flow = torchvision's, the flow stream's
input range, and RGB / flow / two-stream extraction of the sample videos with random weights saved as the
published files (`rgb_imagenet.pt`, `flow_imagenet.pt`, RAFT's torchvision file)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.models.optical_flow as optical_flow

from tal.errors import TalInputError
from tal.features.backbones import build_backbone, get_spec
from tal.features.backbones.flow import RaftFlow
from tal.features.backbones.i3d_net import InceptionI3d, same_padding
from tal.features.weights import digest_of
from backbone_checks import TINY, assert_differ, check_timing, extract, save_state, seeded_state


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Random weights under the published file names and layouts (I3D files without BatchNorm counters)."""
    root = tmp_path_factory.mktemp("weights")
    return {
        "rgb": save_state(seeded_state(lambda: InceptionI3d(3, 400), 1), root / "rgb_imagenet.pt", True),
        "rgb_charades": save_state(seeded_state(lambda: InceptionI3d(3, 157), 2), root / "rgb_charades.pt", True),
        "flow": save_state(seeded_state(lambda: InceptionI3d(2, 400), 3), root / "flow_imagenet.pt", True),
        "flow_other": save_state(seeded_state(lambda: InceptionI3d(2, 400), 4), root / "other" / "flow_imagenet.pt",
                                 True),
        "raft": save_state(seeded_state(optical_flow.raft_small, 5), root / "raft_small_C_T_V2-01064c6d.pth"),
    }


@pytest.fixture(scope="module")
def carphone(sample_videos):
    return [next(p for p in sample_videos if p.stem == "carphone_distorted")]


def test_the_port_layout_and_published_defaults():
    state = InceptionI3d(3, 400).state_dict()
    keys = [k for k in state if not k.endswith("num_batches_tracked")]
    # 3 stem units + 9 Inception blocks x 6 units, each conv weight + 4 BatchNorm tensors; logits weight + bias
    assert len(keys) == (3 + 9 * 6) * 5 + 2
    assert state["Conv3d_1a_7x7.conv3d.weight"].shape == (64, 3, 7, 7, 7)
    assert state["Mixed_4b.b1b.conv3d.weight"].shape == (208, 96, 3, 3, 3)
    assert state["Mixed_5c.b3b.conv3d.weight"].shape == (128, 832, 1, 1, 1)
    assert state["logits.conv3d.weight"].shape == (400, 1024, 1, 1, 1) and "logits.conv3d.bias" in state
    assert InceptionI3d(2).state_dict()["Conv3d_1a_7x7.conv3d.weight"].shape == (64, 2, 7, 7, 7)
    for name, dim in (("i3d", 2048), ("i3d_rgb", 1024), ("i3d_flow", 1024), ("i3d_raft_small", 2048)):
        spec = get_spec(name)
        assert (spec.feature_dim, spec.default_window, spec.default_stride, spec.default_fps, spec.input_size) == (
            dim, 16, 4, 30.0, 224)
    assert "rgb_imagenet.pt" in get_spec("i3d").weights and "raft_large_C_T_SKHT_V2" in get_spec("i3d").weights


def test_same_padding_as_tensorflow():
    # stride 2 over 224: 7 - 2 = 5 pixels, 2 before and 3 after; over an odd 7: 3 - 1 = 2, one each side
    assert same_padding((16, 224, 224), (7, 7, 7), (2, 2, 2)) == (2, 3, 2, 3, 2, 3)
    assert same_padding((7, 7, 7), (3, 3, 3), (2, 2, 2)) == (1, 1, 1, 1, 1, 1)
    assert same_padding((4, 8, 8), (1, 3, 3), (1, 2, 2)) == (0, 1, 0, 1, 0, 0)


def test_raft_flow_equals_torchvision(files, one_torch_thread):
    raft = optical_flow.raft_small(weights=None).eval()
    raft.load_state_dict(torch.load(files["raft"]))
    clips = torch.rand(2, 3, 3, 128, 128) * 2 - 1  # [B, 3, T, S, S] in RAFT's [-1, 1]; 128: its smallest size
    with torch.no_grad():
        mine = RaftFlow(raft, pairs_per_pass=3).flow_px(clips)  # pairs of both clips mixed in passes
        theirs = torch.stack([torch.stack([raft(clips[b, :, t][None], clips[b, :, t + 1][None])[-1][0]
                                           for t in range(2)]) for b in range(2)])
    assert mine.shape == (2, 2, 2, 128, 128)
    torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-4)
    flow_net = build_backbone("i3d_flow_raft_small", f"{files['flow']},{files['raft']}").model.flow.raft
    assert all(torch.equal(v, raft.state_dict()[k]) for k, v in flow_net.state_dict().items())


class ConstantFlow(torch.nn.Module):
    """A stand-in for RAFT whose flow is known: pixel column x moves by values[x] horizontally, -values[x]
    vertically."""

    def __init__(self, values: list[float]):
        super().__init__()
        self.values = torch.tensor(values)

    def forward(self, first, second, num_flow_updates=12):
        n, _, h, w = first.shape
        u = self.values.view(1, 1, 1, w).expand(n, 1, h, w)
        return [torch.zeros(n, 2, h, w), torch.cat([u, -u], dim=1)]


def test_flow_input_is_clipped_at_20_pixels_and_scaled_to_unit_range():
    values = [-35.0, -20.0, -10.0, 0.0, 7.5, 20.0, 35.0, 2.0]
    flow = RaftFlow(ConstantFlow(values))(torch.zeros(1, 3, 4, 8, 8))  # [1, 2, T=4, 8, 8]
    expected = torch.tensor([-1.0, -1.0, -0.5, 0.0, 0.375, 1.0, 1.0, 0.1])
    assert flow.shape == (1, 2, 4, 8, 8) and flow.abs().max() <= 1.0
    assert torch.allclose(flow[0, 0, :, 0], expected.expand(4, 8)) and torch.allclose(flow[0, 1, :, 0], -expected)


def test_rgb_extraction_with_the_published_files(files, carphone, tmp_path):
    a = extract(carphone, tmp_path / "a.h5", "i3d_rgb", str(files["rgb"]))
    check_timing(a, carphone, TINY, 1024)
    assert a["attrs"]["weights"].startswith("file:rgb_imagenet.pt#sha256:")
    assert a["attrs"]["weights_sha256"] == digest_of(files["rgb"])
    b = extract(carphone, tmp_path / "b.h5", "i3d_rgb", str(files["rgb_charades"]))  # 157 logits: loads too
    assert_differ(a["carphone_distorted"], b["carphone_distorted"])
    black_white = np.zeros((1, 2, 300, 400, 3), np.uint8)
    black_white[:, 1] = 255
    x = build_backbone("i3d_rgb", str(files["rgb"])).preprocess(black_white)  # the port's input: [-1, 1]
    assert x.shape == (1, 3, 2, 224, 224) and (x[:, :, 0] == -1).all() and (x[:, :, 1] == 1).all()


def test_two_stream_is_rgb_then_flow(files, carphone, tmp_path, one_torch_thread):
    rgb = extract(carphone, tmp_path / "rgb.h5", "i3d_rgb", str(files["rgb"]))["carphone_distorted"]
    given = f"{files['raft']},{files['flow']},{files['rgb']}"  # any order: roles come from the keys
    both = extract(carphone, tmp_path / "both.h5", "i3d_raft_small", given)
    check_timing(both, carphone, TINY, 2048)
    flow = extract(carphone, tmp_path / "flow.h5", "i3d_flow_raft_small", f"{files['flow']},{files['raft']}")
    assert (both["carphone_distorted"][:, :1024] == rgb).all()
    assert (both["carphone_distorted"][:, 1024:] == flow["carphone_distorted"]).all()
    assert both["attrs"]["weights_sha256"] == digest_of(given) and both["attrs"]["weights"].startswith(
        "file:rgb_imagenet.pt+flow_imagenet.pt+raft_small_C_T_V2-01064c6d.pth#sha256:")
    other = extract(carphone, tmp_path / "other.h5", "i3d_flow_raft_small",
                    f"{files['flow_other']},{files['raft']}")["carphone_distorted"]
    assert_differ(other, flow["carphone_distorted"])


def test_weights_of_the_wrong_role(files):
    with pytest.raises(TalInputError, match=r"rgb_imagenet.pt: rgb weights, but backbone i3d_flow uses flow, "
                                            r"raft_large$"):
        build_backbone("i3d_flow", str(files["rgb"]))
    with pytest.raises(TalInputError, match=r"rgb_imagenet.pt and .*rgb_charades.pt are both rgb weights; give one"):
        build_backbone("i3d_rgb", f"{files['rgb']},{files['rgb_charades']}")
    with pytest.raises(TalInputError, match=r"raft_small_C_T_V2-01064c6d.pth: raft_small weights, but backbone "
                                            r"i3d uses rgb, flow, raft_large"):
        build_backbone("i3d", str(files["raft"]))


def test_published_files_from_the_hub_cache(files, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    hub = tmp_path / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    for key in ("rgb", "flow", "raft"):
        (hub / files[key].name).write_bytes(files[key].read_bytes())
    backbone = build_backbone("i3d_raft_small")
    assert backbone.weights_id == "i3d:rgb_imagenet.pt+i3d:flow_imagenet.pt+torchvision:Raft_Small_Weights.C_T_V2"
    assert backbone.weights.sha256 == digest_of(",".join(str(files[k]) for k in ("rgb", "flow", "raft")))
    first = "Conv3d_1a_7x7.conv3d.weight"
    assert torch.equal(backbone.model.flow_net.state_dict()[first], torch.load(files["flow"])[first])
    (hub / files["flow"].name).unlink()
    with pytest.raises(TalInputError, match=r"^backbone i3d_flow_raft_small: cannot download its weights .*put "
                                            r"flow_imagenet.pt in .*checkpoints, or pass --weights PATH$"):
        build_backbone("i3d_flow_raft_small")
