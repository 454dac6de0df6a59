"""`tal detect VIDEO` and `tal query --video VIDEO` with heads trained on the features of each new backbone
(random weights saved as the published files, two sample videos, tiny clips): the video file is extracted
again with the recorded backbone and weights and answers as its cached features do."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torchvision.models as models
import torchvision.models.optical_flow as optical_flow

import tal
from tal.cli.main import main
from tal.features.backbones.c3d import C3D
from tal.features.backbones.i3d_net import InceptionI3d

from backbone_checks import extract, save_state, seeded_state, train_head, write_annotations

VIDEOS = ("bikes", "carphone_distorted")


def _i3d_rgb(root: Path) -> str:
    return str(save_state(seeded_state(lambda: InceptionI3d(3), 1), root / "rgb_imagenet.pt", True))


def _i3d_two_stream(root: Path) -> str:
    flow = save_state(seeded_state(lambda: InceptionI3d(2), 2), root / "flow_imagenet.pt", True)
    raft = save_state(seeded_state(optical_flow.raft_small, 3), root / "raft_small_C_T_V2-01064c6d.pth")
    return f"{_i3d_rgb(root)},{flow},{raft}"


def _vgg16(root: Path) -> str:
    return str(save_state(seeded_state(models.vgg16, 1), root / "vgg16-397923af.pth"))


def _c3d_pca(root: Path) -> str:
    """The conversion's file and a 16-component PCA: inference must find both again."""
    net = save_state(seeded_state(lambda: C3D("fc7"), 1), root / "c3d.pickle")
    rng = np.random.default_rng(0)
    pca = root / "pca.npz"
    np.savez(pca, mean=rng.normal(size=4096).astype(np.float32),
             components=np.linalg.qr(rng.normal(size=(4096, 16)))[0].T.astype(np.float32))
    return f"{net},{pca}"


def _clip(root: Path) -> str:
    logging.disable(logging.WARNING)  # open_clip: "no pretrained weights loaded"
    try:
        return str(save_state(seeded_state(lambda: open_clip.create_model("ViT-B-32", force_quick_gelu=True), 1),
                              root / "ViT-B-32.pt"))
    finally:
        logging.disable(logging.NOTSET)


CASES = {
    "i3d_rgb": _i3d_rgb,
    "i3d_raft_small": _i3d_two_stream,
    "vgg16": _vgg16,
    "c3d": _c3d_pca,
    "clip": _clip,
}


# 40-90 s each on this CPU: video-file inference is covered fast by test_video_inference.py (r3d_18), the
# several-file weights identity by test_backbone_registry.py, each extraction by its backbone's test file
@pytest.mark.slow
@pytest.mark.parametrize("backbone", list(CASES))
def test_detect_and_query_a_video_file(backbone, sample_videos, tmp_path, capsys):
    videos = [p for p in sample_videos if p.stem in VIDEOS]
    weights = CASES[backbone](tmp_path / "weights")
    features = tmp_path / "feats.h5"
    extract(videos, features, backbone, weights)
    detection, grounding = write_annotations(features, tmp_path)
    detector = train_head("detection", features, detection, grounding, tmp_path / "det")
    retriever = train_head("grounding", features, detection, grounding, tmp_path / "gnd")
    video = next(p for p in videos if p.stem == "carphone_distorted")
    capsys.readouterr()
    assert main(["detect", "--checkpoint", str(detector), str(video), "--top-k", "2"]) == 0
    rows = json.loads(capsys.readouterr().out)["results"]["carphone_distorted"]
    cached = tal.ActionDetector.from_checkpoint(detector, features=features).detect("carphone_distorted", top_k=2)
    assert [(r["label"], r["score"], r["segment"]) for r in rows] == [(c["label"], c["score"], [c["start"], c["end"]])
                                                                      for c in cached]
    assert main(["query", "--checkpoint", str(retriever), "--video", str(video), "a man talks on the phone",
                 "--top-k", "2"]) == 0
    moments = json.loads(capsys.readouterr().out)["moments"]
    cached_moments = tal.MomentRetriever.from_checkpoint(retriever, features=features).query(
        "carphone_distorted", "a man talks on the phone", top_k=2)
    assert [[m["start"], m["end"], m["score"]] for m in moments] == [[m["start"], m["end"], m["score"]]
                                                                    for m in cached_moments]
