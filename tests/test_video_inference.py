"""The README walkthrough's own-video path with a torchvision backbone: extract features from real videos,
train small heads, then `tal detect VIDEO.mp4`, `tal query --video VIDEO.mp4` and the Python classes on the
video files, for each weights source (the published file in the torch hub cache, `--weights FILE`,
`random`). Weights are random values saved in the published layout; nothing is downloaded."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torchvision.models.video as video_models

import tal
from tal.cli.main import main
from tal.errors import TalInputError
from tal.features.backbones import weights_file_name
from tal.features.cache import open_feature_cache
from tal.features.weights import sha256_of

from backbone_checks import train_head, write_annotations

BACKBONE = "r3d_18"
SETTINGS = ["--fps", "4", "--window", "4", "--stride", "2"]  # few, small clips: the CPU runs a 3D CNN


def _random_r3d(path: Path, seed: int) -> Path:
    """A full r3d_18 state dict (classifier included, as published) of seeded random values."""
    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(video_models.r3d_18(weights=None).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """An empty torch hub dir holding only random r3d_18 weights under the published file name."""
    root = tmp_path_factory.mktemp("hub")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.hub, "_hub_dir", str(root))
        _random_r3d(root / "checkpoints" / weights_file_name(BACKBONE), seed=1)
        yield root / "checkpoints"


@pytest.fixture(scope="module")
def walkthrough(hub, sample_videos, tmp_path_factory):
    """README step 2 on the sample videos: extract with the published weights, train both heads."""
    out = tmp_path_factory.mktemp("walk")
    features = out / "feats.h5"
    assert main(["extract-features", *map(str, sample_videos), "--out", str(features), "--backbone", BACKBONE,
                 *SETTINGS, "--workers", "0", "--no-progress"]) == 0
    detection, grounding = write_annotations(features, out)
    return {"out": out, "features": features, "videos": {v.stem: v for v in sample_videos},
            "detector": train_head("detection", features, detection, grounding, out / "det"),
            "retriever": train_head("grounding", features, detection, grounding, out / "gnd")}


def test_the_cache_and_checkpoint_record_which_weights(walkthrough, hub):
    published = hub / weights_file_name(BACKBONE)
    with open_feature_cache(walkthrough["features"]) as cache:
        assert cache.attrs["weights"] == "torchvision:R3D_18_Weights.KINETICS400_V1"
        assert cache.attrs["weights_sha256"] == sha256_of(published)
        assert cache.attrs["weights_path"] == str(published.resolve())
    state = torch.load(walkthrough["detector"], weights_only=False)
    assert state["meta"]["features"]["weights_sha256"] == sha256_of(published)


def test_detect_and_query_a_video_file_with_published_weights(walkthrough, capsys):
    bikes = walkthrough["videos"]["bikes"]
    assert main(["detect", "--checkpoint", str(walkthrough["detector"]), str(bikes), "--top-k", "3"]) == 0
    result = json.loads(capsys.readouterr().out)
    rows = result["results"]["bikes"]
    assert len(rows) == 3 and {r["label"] for r in rows} <= {"bunny", "ride", "talk"}
    assert all(0 <= r["segment"][0] < r["segment"][1] <= 10.0 + 1e-6 for r in rows)
    assert main(["query", "--checkpoint", str(walkthrough["retriever"]), "--video", str(bikes),
                 "people ride bikes", "--top-k", "2"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert len(answer["moments"]) == 2 and "warnings" not in answer
    assert all(0 <= m["start"] < m["end"] <= 10.0 + 1e-6 for m in answer["moments"])


def test_the_python_classes_on_a_video_file_equal_the_cached_features(walkthrough):
    """A video file is extracted with the recorded settings: the same answer as its id in the training cache."""
    video = walkthrough["videos"]["carphone_pristine"]
    detector = tal.ActionDetector.from_checkpoint(walkthrough["detector"])
    cached = tal.ActionDetector.from_checkpoint(walkthrough["detector"], features=walkthrough["features"])
    from_file = detector.detect(video, top_k=5)
    assert len(from_file) == 5
    assert from_file == cached.detect("carphone_pristine", top_k=5)
    retriever = tal.MomentRetriever.from_checkpoint(walkthrough["retriever"])
    moments = retriever.query(video, "a man talks on the phone", top_k=3)
    assert len(moments) == 3 and moments.warnings == []
    cached_r = tal.MomentRetriever.from_checkpoint(walkthrough["retriever"], features=walkthrough["features"])
    assert list(moments) == list(cached_r.query("carphone_pristine", "a man talks on the phone", 3))


def test_an_unknown_sentence_is_answered_with_a_warning(walkthrough, capsys):
    retriever = tal.MomentRetriever.from_checkpoint(walkthrough["retriever"], features=walkthrough["features"])
    moments = retriever.query("bikes", "zebras juggle xylophones", top_k=2)
    assert len(moments) == 2
    assert moments.warnings == ["none of the words of 'zebras juggle xylophones' were seen in training (zebras, "
                                "juggle, xylophones): the moments are ranked without the sentence's meaning"]
    assert retriever.query("bikes", "zebras ride", top_k=2).warnings == []  # one known word is enough
    assert main(["query", "--checkpoint", str(walkthrough["retriever"]), "--features", str(walkthrough["features"]),
                 "--video", "bikes", "zebras juggle xylophones"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["warnings"] == moments.warnings
    assert "tal query: warning: none of the words of 'zebras juggle xylophones'" in captured.err


def test_published_weights_elsewhere_or_different(walkthrough, hub, tmp_path, capsys):
    """The published file moved away: --weights names it; another file with other values is refused."""
    bikes = str(walkthrough["videos"]["bikes"])
    published = hub / weights_file_name(BACKBONE)
    moved = tmp_path / "my_copy.pth"
    shutil.move(published, moved)
    try:
        code = main(["detect", "--checkpoint", str(walkthrough["detector"]), bikes])
        err = capsys.readouterr().err
        assert code == 2 and f"put {published.name} in {published.parent}, or pass --weights PATH" in err
        assert main(["detect", "--checkpoint", str(walkthrough["detector"]), bikes, "--weights", str(moved)]) == 0
        assert json.loads(capsys.readouterr().out)["results"]["bikes"]
        other = _random_r3d(tmp_path / "other.pth", seed=2)
        code = main(["detect", "--checkpoint", str(walkthrough["detector"]), bikes, "--weights", str(other)])
        err = capsys.readouterr().err
        assert code == 2
        assert (f"--weights {other} (sha256 {sha256_of(other)[:12]}) are not the weights the features of "
                f"{walkthrough['detector']} were made with (torchvision:R3D_18_Weights.KINETICS400_V1 (sha256 "
                f"{sha256_of(moved)[:12]})); pass that file instead") in err
    finally:
        shutil.move(moved, published)


def test_a_weights_file_and_random_weights(walkthrough, tmp_path, capsys):
    """Features made with --weights FILE or --weights random: inference finds the same weights again."""
    video = walkthrough["videos"]["carphone_distorted"]
    detection, grounding = write_annotations(walkthrough["features"], tmp_path)
    mine = _random_r3d(tmp_path / "mine.pth", seed=3)
    for weights in (str(mine), "random"):
        features = tmp_path / f"feats_{Path(weights).stem}.h5"
        assert main(["extract-features", *map(str, walkthrough["videos"].values()), "--out", str(features),
                     "--backbone", BACKBONE, "--weights", weights, *SETTINGS, "--workers", "0", "--no-progress"]) == 0
        checkpoint = train_head("detection", features, detection, grounding, tmp_path / f"det_{Path(weights).stem}")
        expected = tal.ActionDetector.from_checkpoint(checkpoint, features=features).detect(video.stem)
        assert tal.ActionDetector.from_checkpoint(checkpoint).detect(video) == expected
    moved = shutil.move(mine, tmp_path / "renamed.pth")
    checkpoint = tmp_path / "det_mine" / "checkpoint_best.pt"
    with pytest.raises(TalInputError, match=r"made with the backbone weights file:mine\.pth#sha256:\w{12} \(recorded "
                                            r"at .*mine\.pth, which is missing\); pass that file with --weights PATH"):
        tal.ActionDetector.from_checkpoint(checkpoint).detect(video)
    found = tal.ActionDetector.from_checkpoint(checkpoint, weights=str(moved)).detect(video)
    assert found == tal.ActionDetector.from_checkpoint(checkpoint, features=tmp_path / "feats_mine.h5").detect(video.stem)
    random_ckpt = tmp_path / "det_random" / "checkpoint_best.pt"
    with pytest.raises(TalInputError, match="trained on features made with random weights; use --weights random"):
        tal.ActionDetector.from_checkpoint(random_ckpt, weights=str(moved)).detect(video)
    with pytest.raises(TalInputError, match="--weights random: .* not random weights"):
        tal.ActionDetector.from_checkpoint(checkpoint, weights="random").detect(video)


def test_messages_that_point_the_right_way(walkthrough, tmp_path, capsys):
    """A missing file without a cache is 'no such file'; a cache of other settings says to leave it out."""
    assert main(["detect", "--checkpoint", str(walkthrough["detector"]), str(tmp_path / "missing.mp4")]) == 2
    assert capsys.readouterr().err.strip().endswith("missing.mp4: no such video file")
    import numpy as np

    from tal.features.cache import write_feature_cache

    other = tmp_path / "other.h5"
    write_feature_cache(other, [("v", np.zeros((10, 512), np.float32), {"fps": 4.0, "stride": 4, "window": 4,
                                                                          "duration": 10.0})],
                        {"backbone": BACKBONE, "weights": "random(seed=0)", "window": 4, "stride": 4})
    code = main(["detect", "--checkpoint", str(walkthrough["detector"]), str(walkthrough["videos"]["bikes"]),
                 "--features", str(other)])
    err = capsys.readouterr().err
    assert code == 2 and "stride 4 (trained with 2)" in err
    assert "weights random(seed=0) (trained with torchvision:R3D_18_Weights.KINETICS400_V1 (sha256" in err
    assert "or leave this cache out: video files given without it are extracted with the recorded settings" in err
    assert "pass the video path" not in err
    code = main(["detect", "--checkpoint", str(walkthrough["detector"]), "nope", "--features",
                 str(walkthrough["features"])])
    assert code == 2 and "unknown video 'nope': not a video id of" in capsys.readouterr().err


def test_detect_keeps_the_json_when_the_plots_cannot_be_written(walkthrough, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = tmp_path / "det.json"
    code = main(["detect", "--checkpoint", str(walkthrough["detector"]), "bikes", "--features",
                 str(walkthrough["features"]), "--out", str(out), "--plot", str(blocker / "plots")])
    err = capsys.readouterr().err
    assert code == 2 and f"--plot {blocker / 'plots'}: cannot write the timelines" in err
    assert "the detections were written already" in err and json.loads(out.read_text())["results"]["bikes"]
    code = main(["detect", "--checkpoint", str(walkthrough["detector"]), "bikes", "--features",
                 str(walkthrough["features"]), "--score-threshold", "nan"])
    assert code == 2 and "--score-threshold must be a number, got nan" in capsys.readouterr().err


def test_a_changed_video_file_is_extracted_again(walkthrough, tmp_path):
    """`tal detect --features CACHE clip.mp4` after clip.mp4 was replaced answers for the new content."""
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(walkthrough["videos"]["carphone_pristine"].read_bytes())
    cache = tmp_path / "kept.h5"
    detector = tal.ActionDetector.from_checkpoint(walkthrough["detector"], cache=cache)
    first = detector.detect(clip)
    assert first == detector.detect(walkthrough["videos"]["carphone_pristine"])
    clip.write_bytes(walkthrough["videos"]["bikes"].read_bytes())
    again = tal.ActionDetector.from_checkpoint(walkthrough["detector"], features=cache, cache=cache).detect(clip)
    assert again == detector.detect(walkthrough["videos"]["bikes"]) and again != first
