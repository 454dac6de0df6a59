"""The reduced demo end to end (real mp4 files, handcrafted features, two trained heads), then the inference
surfaces on its checkpoints: tal detect / ActionDetector on a video never seen, tal query / MomentRetriever,
tal serve with the real retriever, and the refusal of a cache made with other settings."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import tal
from tal.cli.main import main
from tal.demo import DemoSettings, run_demo
from tal.errors import TalInputError
from tal.ops.segments import tiou

NEW_VIDEO_ACTIONS = [("bounce", 2.0, 8.0), ("spin", 12.0, 17.0), ("wave", 20.0, 26.0)]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    result = run_demo(DemoSettings(out=out, num_videos=24, epochs_scale=1.0, progress=False))
    return out, result


@pytest.fixture(scope="module")
def new_video(tmp_path_factory):
    from tal.datasets.synthetic_render import render_video

    path = tmp_path_factory.mktemp("new") / "unseen.mp4"
    render_video(path, NEW_VIDEO_ACTIONS, 30.0, seed=12345)
    return path


def _image_is_a_picture(path: Path) -> None:
    import matplotlib.image

    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 300
    assert float(pixels[..., :3].std()) > 0.05  # not blank
    assert len(np.unique(pixels[..., :3].reshape(-1, 3), axis=0)) > 50  # drawn content, not a flat fill


def test_demo_writes_everything_and_learns(demo):
    out, result = demo
    for part in ("detection", "grounding"):
        for name in ("config.yaml", "checkpoint_last.pt", "checkpoint_best.pt", "metrics.json", "train.log"):
            assert (out / part / name).is_file(), f"{part}/{name} missing"
    assert (out / "detection" / "predictions.json").is_file() and (out / "grounding" / "predictions.jsonl").is_file()
    # far above chance, with the seeded reduced demo (24 videos): measured 0.223 vs 0.036 and 0.184 vs 0.051
    assert result.detection["mAP"]["0.50"] >= 0.15 >= 3 * result.detection_chance["mAP"]["0.50"]
    assert result.grounding["R@1,IoU=0.5"] >= 0.12 >= 2 * result.grounding_chance["R@1,IoU=0.5"]
    assert result.detection == json.loads((out / "detection" / "metrics.json").read_text())
    report = result.report.read_text()
    assert f"{100 * result.detection['mAP']['0.50']:.1f}" in report and "chance" in report
    # the demo has no grounding val split: the best epoch is picked on the reported queries, and it says so
    assert result.grounding["selected_on"] == "test" and "validation queries" not in report
    assert "picked on these same held-out queries" in report
    grounding_cfg = yaml.safe_load((out / "grounding" / "config.yaml").read_text())
    assert grounding_cfg["model"]["text"]["word_vectors"] == "learned"  # no GloVe, asked for by name
    assert len(result.images) == 5
    for png in result.images:
        assert f"]({png.relative_to(out).as_posix()})" in report
        _image_is_a_picture(png)


def test_demo_rerun_reuses_finished_steps(demo, capsys):
    out, result = demo
    assert main(["demo", "--out", str(out), "--videos", "24", "--no-progress"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["detection"]["mAP@0.5"] == result.detection["mAP"]["0.50"]
    assert captured.err.count("already trained with these settings: reusing it") == 2


def _finds(detections: list[dict], top: int = 10) -> list[bool]:
    """For each action of the unseen video: a detection of its class with tIoU >= 0.5 among the first `top`."""
    found = []
    for label, start, end in NEW_VIDEO_ACTIONS:
        hits = [tiou(np.array([d["start"], d["end"]]), np.array([start, end])) >= 0.5
                for d in detections[:top] if d["label"] == label]
        found.append(any(hits))
    return found


def test_action_detector_finds_the_actions_of_an_unseen_video(demo, new_video):
    out, _ = demo
    detector = tal.ActionDetector.from_checkpoint(out / "detection" / "checkpoint_best.pt")
    assert detector.classes == sorted(detector.classes) and "bounce" in detector.classes
    detections = detector.detect(new_video, top_k=10)
    assert len(detections) == 10
    assert [d["score"] for d in detections] == sorted((d["score"] for d in detections), reverse=True)
    assert all(0 <= d["start"] < d["end"] <= 30.0 + 1e-6 for d in detections)
    assert _finds(detections) == [True, True, True]


def test_tal_detect_cli_writes_submission_json_and_a_timeline(demo, new_video, tmp_path, capsys):
    out, _ = demo
    cache = tmp_path / "unseen.h5"
    args = ["detect", "--checkpoint", str(out / "detection" / "checkpoint_best.pt"), str(new_video),
            "--features", str(cache), "--out", str(tmp_path / "det.json"), "--plot", str(tmp_path / "plots"),
            "--top-k", "10"]
    assert main(args) == 0
    data = json.loads((tmp_path / "det.json").read_text())
    assert set(data) == {"version", "results", "external_data"}
    rows = data["results"]["unseen"]
    detections = [{"label": r["label"], "score": r["score"], "start": r["segment"][0], "end": r["segment"][1]}
                  for r in rows]
    assert _finds(detections) == [True, True, True]
    _image_is_a_picture(tmp_path / "plots" / "unseen.png")
    assert cache.is_file()  # the extracted features were kept; a second run reads them
    assert main(args) == 0
    assert json.loads((tmp_path / "det.json").read_text()) == data


def test_a_cache_made_with_other_settings_is_refused(demo, tmp_path, capsys):
    from tal.features.cache import write_feature_cache

    out, _ = demo
    other = tmp_path / "other.h5"
    write_feature_cache(other, [("v", np.zeros((10, 104), np.float32),
                                 {"fps": 10.0, "stride": 8, "window": 8, "duration": 8.0})],
                        {"backbone": "handcrafted", "window": 8, "stride": 8})
    with pytest.raises(TalInputError, match=r"other.h5: features were made with other settings .* stride 8 "
                                             r"\(trained with 4\)"):
        tal.ActionDetector.from_checkpoint(out / "detection" / "checkpoint_best.pt", features=other)
    code = main(["detect", "--checkpoint", str(out / "detection" / "checkpoint_best.pt"), "v", "--features",
                 str(other)])
    assert code == 2 and "stride 8 (trained with 4)" in capsys.readouterr().err
    with pytest.raises(TalInputError, match="a detection checkpoint; MomentRetriever needs a grounding one"):
        tal.MomentRetriever.from_checkpoint(out / "detection" / "checkpoint_best.pt")


def test_query_cli_and_retriever_agree(demo, capsys):
    out, _ = demo
    query = json.loads((out / "grounding" / "predictions.jsonl").read_text().splitlines()[0])
    ckpt, feats = str(out / "grounding" / "checkpoint_best.pt"), str(out / "features.h5")
    assert main(["query", "--checkpoint", ckpt, "--features", feats, "--video", query["video"], query["query"],
                 "--top-k", "5"]) == 0
    printed = json.loads(capsys.readouterr().out)
    retriever = tal.MomentRetriever.from_checkpoint(ckpt, features=feats)
    moments = retriever.query(query["video"], query["query"], top_k=5)
    assert printed["moments"] == moments
    # the same ranking the training run wrote for this query
    assert np.allclose([[m["start"], m["end"], m["score"]] for m in moments], query["moments"], atol=1e-6)
    assert main(["query", "--checkpoint", ckpt, "--features", feats, "--video", "no_such_video", "a ball"]) == 2
    assert "unknown video 'no_such_video'" in capsys.readouterr().err


def test_query_batch_runs_each_video_once_and_answers_as_single_queries(demo):
    out, _ = demo
    queries = [json.loads(line) for line in (out / "grounding" / "predictions.jsonl").read_text().splitlines()]
    first = queries[0]
    other = next(q for q in queries if q["video"] != first["video"])
    retriever = tal.MomentRetriever.from_checkpoint(out / "grounding" / "checkpoint_best.pt",
                                                    features=out / "features.h5")
    requests = [(first["video"], first["query"], 5), (other["video"], other["query"], 3),
                (first["video"], other["query"], 2)]
    batched = retriever.query_batch(requests)
    for (video, sentence, top_k), got in zip(requests, batched):
        alone = retriever.query(video, sentence, top_k)
        assert len(got) == top_k and [(m["start"], m["end"]) for m in got] == [(m["start"], m["end"]) for m in alone]
        assert np.allclose([m["score"] for m in got], [m["score"] for m in alone], atol=1e-6)
    clips = [retriever._video_clips(v)[0] for v, _, _ in requests]
    batch = retriever.task.make_batch(retriever.model, clips, [s for _, s, _ in requests], [1.0] * 3)
    assert batch["features"].shape[0] == 2 and batch["video_index"].tolist() == [0, 1, 0]


def test_http_api_with_the_real_retriever(demo):
    import httpx

    from tal.serve import BackgroundServer

    out, _ = demo
    retriever = tal.MomentRetriever.from_checkpoint(out / "grounding" / "checkpoint_best.pt",
                                                    features=out / "features.h5")
    video = retriever.videos()[-1]
    with BackgroundServer(retriever) as server:
        reply = httpx.post(f"{server.url}/query", json={"video": video, "query": "a red ball bounces", "top_k": 3})
        assert reply.status_code == 200
        assert reply.json()["moments"] == retriever.query(video, "a red ball bounces", top_k=3)
        assert httpx.post(f"{server.url}/query", json={"video": "nope", "query": "x y"}).status_code == 404
        assert httpx.get(f"{server.url}/videos").json()["videos"] == retriever.videos()
