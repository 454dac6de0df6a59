"""The backbone registry (tal's own entries, third-party ones through the `tal.backbones` entry-point group)
and published weights that download: progress, checksum, atomic rename, the offline message. Nothing here
touches the network: downloads read `file://` URLs."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import torch

from tal.errors import TalInputError
from tal.features import download
from tal.features.backbones import build_backbone, list_backbones
from tal.features.download import PublishedFile, published_path
from tal.registry import Registry

REPO = Path(__file__).resolve().parents[1]
TOY_MODULE = '''
import torch
from tal.features.backbones import BackboneEntry, BackboneSpec, LoadedWeights, Preprocessor

def _spec():
    return BackboneSpec(name="toy", feature_dim=3, kind="descriptor", input_size=8, default_window=2,
                        default_fps=None, weights="none", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                        resize_size=(8, 8), default_stride=1, reproduces="a plug-in's own")

class MeanColour(torch.nn.Module):
    def forward(self, clips):  # [B, T, 3, 8, 8] -> [B, 3]
        return clips.mean(dim=(1, 3, 4))

def _build(spec, weights):
    return MeanColour(), Preprocessor("descriptor", (8, 8), 8, spec.mean, spec.std), LoadedWeights("none")

ENTRY = BackboneEntry(spec=_spec, build=_build)
'''


@pytest.fixture
def toy_plugin(tmp_path, monkeypatch) -> Path:
    """A package installed the way pip would: a module and a dist-info folder declaring the entry point."""
    site = tmp_path / "site"
    (site / "toy_backbone-0.1.dist-info").mkdir(parents=True)
    (site / "toy_backbone.py").write_text(TOY_MODULE)
    (site / "toy_backbone-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-backbone\n"
                                                                  "Version: 0.1\n")
    (site / "toy_backbone-0.1.dist-info" / "entry_points.txt").write_text("[tal.backbones]\ntoy = toy_backbone:ENTRY\n")
    monkeypatch.syspath_prepend(str(site))
    return site


def test_tal_registers_its_backbones_in_order():
    names = [s.name for s in list_backbones()]
    assert names[:8] == ["r2plus1d_18", "r3d_18", "s3d", "mvit_v2_s", "swin3d_t", "resnet50", "vgg16", "handcrafted"]
    with pytest.raises(TalInputError, match=r"^unknown backbone 'nope': choose one of r2plus1d_18, r3d_18, .*"
                                            r"\(tal extract-features --list-backbones\)$"):
        build_backbone("nope")


def test_entry_point_backbone_is_found_and_built(toy_plugin):
    registry = Registry("backbone", entry_point_group="tal.backbones")
    assert "toy" in registry and registry.in_order() == ["toy"]
    entry = registry.get("toy")
    model, preprocessor, weights = entry.build(entry.spec(), None)
    clips = torch.zeros(1, 2, 8, 8, 3, dtype=torch.uint8).numpy()
    clips[..., 1] = 255
    assert model(preprocessor(clips)).tolist() == [[0.0, 1.0, 0.0]] and weights.id == "none"


def test_entry_point_backbone_in_the_cli_listing(toy_plugin):
    env = {**os.environ, "PYTHONPATH": f"{toy_plugin}{os.pathsep}{REPO}"}
    out = subprocess.run([sys.executable, "-m", "tal", "extract-features", "--list-backbones"], env=env,
                         capture_output=True, text=True, check=True).stdout
    toy = next(line.split() for line in out.splitlines() if line.startswith("toy "))
    assert toy[:7] == ["toy", "descriptor", "8", "3", "2", "1", "native"] and toy[-3:] == ["a", "plug-in's", "own"]


def test_a_broken_entry_point_is_a_warning(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "bad-0.1.dist-info").mkdir(parents=True)
    (site / "bad-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: bad\nVersion: 0.1\n")
    (site / "bad-0.1.dist-info" / "entry_points.txt").write_text("[tal.backbones]\nbad = no_such_module:X\n")
    monkeypatch.syspath_prepend(str(site))
    registry = Registry("backbone", entry_point_group="tal.backbones")
    with pytest.warns(UserWarning, match=r"backbone 'bad': entry point no_such_module:X failed to load "
                                         r"\(ModuleNotFoundError"):
        assert "bad" not in registry


# ------------------------------------------------------------------------------------------------
# Downloads


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    return tmp_path / "hub" / "checkpoints"


@pytest.fixture
def file_urls(monkeypatch):
    """Downloads allowed, for file:// URLs only."""
    def local_only(url, *args, **kwargs):
        assert url.startswith("file://"), url
        return urllib.request.urlopen(url, *args, **kwargs)

    monkeypatch.setattr(download, "_urlopen", local_only)


def _published(tmp_path: Path, name: str, payload: bytes) -> Path:
    source = tmp_path / "server" / name
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(payload)
    return source


def test_download_into_the_hub_cache_with_the_name_checksum(tmp_path, hub, file_urls, capsys):
    payload = os.urandom(3 << 20)  # 3 MiB: several read blocks
    prefix = hashlib.sha256(payload).hexdigest()[:8]
    source = _published(tmp_path, f"net-{prefix}.pth", payload)
    path = published_path("net", PublishedFile(source.as_uri()), progress=True)
    assert path == hub / source.name and path.read_bytes() == payload
    bar = capsys.readouterr().err
    assert f"download {source.name}" in bar and "3.00M/3.00M" in bar
    assert list(hub.iterdir()) == [path]  # no partial file left
    source.unlink()
    assert published_path("net", PublishedFile(source.as_uri())) == path  # cached: no second download


def test_download_with_a_full_published_sha256(tmp_path, hub, file_urls):
    payload = b"weights"
    source = _published(tmp_path, "i3d.pt", payload)
    good = PublishedFile(source.as_uri(), sha256=hashlib.sha256(payload).hexdigest())
    assert published_path("i3d", good).read_bytes() == payload


def test_a_corrupt_download_is_refused_and_not_kept(tmp_path, hub, file_urls):
    source = _published(tmp_path, "net-0123abcd.pth", b"not the published bytes")
    actual = hashlib.sha256(b"not the published bytes").hexdigest()[:16]
    with pytest.raises(TalInputError, match=rf"^backbone net: {source.as_uri()} downloaded with sha256 {actual}, "
                                            rf"not the published 0123abcd; the file is corrupt or was replaced"):
        published_path("net", PublishedFile(source.as_uri()))
    assert not hub.exists() or not list(hub.iterdir())


def test_offline_message_names_url_file_and_folder(hub, monkeypatch):
    url = "https://example.org/models/rgb_imagenet.pt"
    expected_hint = (f"download {url} on a machine with internet and put rgb_imagenet.pt in {hub}, "
                     f"or pass --weights PATH")
    with pytest.raises(TalInputError) as caught:  # the conftest fixture refuses every URL, as offline
        published_path("i3d_rgb", PublishedFile(url))
    assert str(caught.value) == (f"backbone i3d_rgb: cannot download its weights (tests never download ({url})); "
                                 f"{expected_hint}")
    monkeypatch.setenv("TAL_OFFLINE", "1")
    with pytest.raises(TalInputError) as caught:
        published_path("i3d_rgb", PublishedFile(url))
    assert str(caught.value) == (f"backbone i3d_rgb: weights {hub / 'rgb_imagenet.pt'} not cached and TAL_OFFLINE "
                                 f"is set; {expected_hint}")


# ------------------------------------------------------------------------------------------------
# Several weight files (I3D two-stream + RAFT, C3D + PCA): one identity, found again at inference


def test_several_files_have_one_order_free_digest_found_again_at_inference(tmp_path):
    from tal.features.backbones import LoadedWeights, loaded_file
    from tal.features.backbones.base import combine_loaded
    from tal.features.weights import digest_of, inference_weights

    a, b, c = (tmp_path / "rgb.pt", tmp_path / "flow.pt", tmp_path / "other.pt")
    for path, payload in ((a, b"rgb"), (b, b"flow"), (c, b"other")):
        path.write_bytes(payload)
    hand = hashlib.sha256("\n".join(sorted(hashlib.sha256(p).hexdigest() for p in (b"rgb", b"flow"))).encode())
    assert digest_of(f"{a},{b}") == digest_of(f"{b},{a}") == hand.hexdigest()
    loaded = combine_loaded([loaded_file(a), loaded_file(b)])
    assert loaded.id == f"file:rgb.pt+flow.pt#sha256:{hand.hexdigest()[:12]}" and loaded.sha256 == hand.hexdigest()
    recorded = {"backbone": "i3d", **loaded.attrs()}
    assert inference_weights(recorded, None, "ckpt.pt") == f"{a.resolve()},{b.resolve()}"  # the recorded files
    assert inference_weights(recorded, f"{b},{a}", "ckpt.pt") == f"{b},{a}"  # any order
    with pytest.raises(TalInputError, match=r"are not the weights the features of ckpt.pt were made with"):
        inference_weights(recorded, f"{a},{c}", "ckpt.pt")
    with pytest.raises(TalInputError, match=r"^--weights .*missing.pt: no such file$"):
        inference_weights(recorded, f"{a},{tmp_path / 'missing.pt'}", "ckpt.pt")
    b.unlink()
    with pytest.raises(TalInputError, match=r"which is missing\); pass that file with --weights PATH"):
        inference_weights(recorded, None, "ckpt.pt")
    published = combine_loaded([LoadedWeights("i3d:rgb_imagenet.pt", "1" * 64, "/hub/rgb_imagenet.pt"),
                                LoadedWeights("torchvision:Raft_Small_Weights.C_T_V2", "2" * 64, "/hub/raft.pth")])
    assert published.id == "i3d:rgb_imagenet.pt+torchvision:Raft_Small_Weights.C_T_V2"
    assert inference_weights({"backbone": "i3d", **published.attrs()}, None, "ckpt.pt") is None  # the hub cache
