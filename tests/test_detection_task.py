"""The detection task's data plumbing: time <-> feature steps, windows, rescaling, training targets,
merging windows back, and the two-stage fusion of class-agnostic proposals with video-level classes."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tal.config import load_config
from tal.datasets.synthetic import make_detection_set
from tal.engine.trainer import train
from tal.errors import TalInputError
from tal.features.cache import FeatureMeta
from tal.tasks.detection import (
    Chunk,
    DetectionTask,
    Timing,
    fuse_video_classes,
    read_classification,
    resample_features,
    window_starts,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_timing_follows_the_design_time_rule():
    # fps 30, stride 8, window 16: feature i is centred at (8 i + 8) / 30 s and spans steps [i, i + 1)
    timing = Timing.of(FeatureMeta(fps=30.0, stride=8, window=16, duration=20.0, num_features=75, dim=4))
    centres = timing.to_seconds(np.arange(5) + 0.5)
    assert np.allclose(centres, (8 * np.arange(5) + 8) / 30)
    assert np.allclose(timing.to_steps(timing.to_seconds([[3.0, 10.0]])), [[3.0, 10.0]])
    assert timing.to_seconds([-50.0, 500.0]).tolist() == [0.0, 20.0]  # clipped to the video


def test_window_starts_cover_the_video():
    assert window_starts(50, 64, 0.25) == [0]
    assert window_starts(128, 64, 0.25) == [0, 48, 64]  # the last window ends at the video end
    assert window_starts(160, 64, 0.5) == [0, 32, 64, 96]
    for n in (65, 100, 333):
        starts = window_starts(n, 64, 0.25)
        assert starts[-1] + 64 == n and all(b - a <= 48 for a, b in zip(starts, starts[1:]))


def test_resample_is_linear_between_feature_centres():
    x = torch.arange(4, dtype=torch.float32)[:, None].repeat(1, 2)  # [4, 2]: values 0..3
    assert torch.allclose(resample_features(x, 4), x)
    assert torch.allclose(resample_features(x, 8)[:, 0], torch.tensor([0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3]))
    assert resample_features(torch.randn(37, 5), 16).shape == (16, 5)


def test_fusion_pairs_each_proposal_with_its_videos_top_classes():
    proposals = {"a": [{"score": 0.5, "segment": [1.0, 2.0]}], "b": [{"score": 1.0, "segment": [0.0, 4.0]}]}
    classes = {"a": [("run", 0.8), ("jump", 0.1), ("swim", 0.1)], "b": [("swim", 0.6), ("run", 0.4)]}
    fused = fuse_video_classes(proposals, classes, top_k=2)
    assert fused == {"a": [{"label": "run", "score": 0.4, "segment": [1.0, 2.0]},
                           {"label": "jump", "score": 0.05, "segment": [1.0, 2.0]}],
                     "b": [{"label": "swim", "score": 0.6, "segment": [0.0, 4.0]},
                           {"label": "run", "score": 0.4, "segment": [0.0, 4.0]}]}
    with pytest.raises(TalInputError, match=r"no scores for 1 video\(s\) \(e.g. b\)"):
        fuse_video_classes(proposals, {"a": classes["a"]}, 1)


def test_classification_file_reader(tmp_path, shared_data):
    sample = shared_data / "activitynet13" / "official_samples" / "sample_classification_prediction.json"
    scores = read_classification(sample)
    assert len(scores) > 100 and all(rows == sorted(rows, key=lambda p: -p[1]) for rows in scores.values())
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"results": {"v": [{"label": "x"}]}}))
    with pytest.raises(TalInputError, match="video 'v': each entry needs a 'label' and a numeric 'score'"):
        read_classification(bad)
    bad.write_text(json.dumps({"version": 1}))
    with pytest.raises(TalInputError, match="not a classification file"):
        read_classification(bad)


@pytest.fixture(scope="module")
def detection_set(tmp_path_factory):
    return make_detection_set(tmp_path_factory.mktemp("det"), num_videos=16, num_classes=3, feature_dim=16, seed=3)


def _config(detection_set, *overrides):
    return load_config("configs/synthetic/a2net.yaml", [
        f"dataset.features={detection_set.features}", f"dataset.annotations={detection_set.annotations}",
        "train.epochs=1", *overrides])


def test_training_windows_hold_clipped_instances_in_window_steps(detection_set):
    task = DetectionTask(_config(detection_set, "dataset.num_steps=32", "+dataset.min_coverage=0.5"))
    assert task.classes == detection_set.classes
    for chunk, segments, labels in task.train_items:
        assert segments.shape[0] == labels.shape[0] >= 1
        assert (segments[:, 0] >= 0).all() and (segments[:, 1] <= chunk.num_valid).all()
        assert (segments[:, 1] > segments[:, 0]).all() and set(labels.tolist()) <= {0, 1, 2}
    batch = task.train_batch(None, [0, 1, 2])
    assert batch["features"].shape == (3, 32, 16) and batch["mask"].dtype == torch.bool
    # a window's features are the video's features from its start step
    chunk = task.train_items[1][0]
    video = torch.from_numpy(task.cache.features(chunk.video))
    start = int(chunk.offset)
    assert torch.equal(batch["features"][1, :chunk.num_valid], video[start:start + chunk.num_valid])


def test_rescale_mode_maps_steps_back_to_the_whole_video(detection_set):
    task = DetectionTask(_config(detection_set, "dataset.mode=rescale", "dataset.num_steps=40"))
    (chunk,) = task.chunks("v", 100)
    assert chunk == Chunk("v", 0.0, 2.5, 40)


class _FixedHead(torch.nn.Module):
    """Predicts one segment [2, 6] (chunk steps), class 1, score 0.9, in every chunk."""

    nms = {"method": "hard", "iou_threshold": 0.5}

    def predict(self, batch):
        n = batch["features"].shape[0]
        return [(torch.tensor([[2.0, 6.0]]), torch.tensor([0.9]), torch.tensor([1]))] * n


def test_window_predictions_are_shifted_back_and_merged(detection_set):
    task = DetectionTask(_config(detection_set, "dataset.num_steps=32", "dataset.window_overlap=0.5"))
    timing = Timing(fps=30.0, stride=8, window=16, duration=80 * 8 / 30, num_features=80)
    segments, scores, labels = task.detect_video(_FixedHead(), torch.zeros(80, 16), timing, torch.device("cpu"))
    starts = window_starts(80, 32, 0.5)  # [0, 16, 32, 48]: one detection per window, none overlapping by > 0.5
    assert np.allclose(segments, timing.to_seconds(np.array([[s + 2.0, s + 6.0] for s in starts])))
    assert np.allclose(scores, 0.9) and len(scores) == 4 and labels.tolist() == [1] * 4


def test_proposal_head_with_classification_file_gives_detections(detection_set, tmp_path):
    truth = json.loads(detection_set.annotations.read_text())["database"]
    classes = {"results": {vid: [{"label": v["annotations"][0]["label"], "score": 1.0}]
                           for vid, v in truth.items() if v["annotations"]}}
    (tmp_path / "cls.json").write_text(json.dumps(classes))
    cfg = load_config("configs/synthetic/a2net.yaml", [
        f"dataset.features={detection_set.features}", f"dataset.annotations={detection_set.annotations}",
        "dataset.mode=rescale", "dataset.num_steps=32", f"+dataset.classification={tmp_path / 'cls.json'}",
        "model={name: s2dtan, num_clips: 32, hidden_dim: 8, map_layers: 1, map_kernel: 3}",
        "train.epochs=1", "eval.metric=average_mAP"])
    metrics = train(cfg, tmp_path / "run", progress=False)
    assert {"AR@100", "AUC", "mAP", "average_mAP"} <= set(metrics)
    written = json.loads((tmp_path / "run" / "predictions.json").read_text())
    assert all("label" not in r for rows in written["results"].values() for r in rows)  # proposals
    fused = json.loads((tmp_path / "run" / "predictions_detections.json").read_text())
    assert any(r["label"] for rows in fused["results"].values() for r in rows)


class _SoftHead(torch.nn.Module):
    """Two copies of [2, 6] (scores 0.9, 0.8) per chunk, through its own soft-NMS as heads do."""

    def __init__(self):
        super().__init__()
        self.nms = {"method": "soft-gaussian", "sigma": 0.5}

    def predict(self, batch):
        from tal.ops.nms import postprocess_detections

        segments, scores = torch.tensor([[2.0, 6.0], [2.0, 6.0]]), torch.tensor([0.9, 0.8])
        return [postprocess_detections(segments, scores, torch.zeros(2, dtype=torch.long), **self.nms)
                for _ in range(batch["features"].shape[0])]


def test_windows_are_nmsed_once_after_the_merge(detection_set):
    # the copy decays once, by exp(-1 / 0.5); NMS in every window and again per video decayed it twice
    task = DetectionTask(_config(detection_set, "dataset.num_steps=32", "dataset.window_overlap=0.5"))
    timing = Timing(fps=30.0, stride=8, window=16, duration=80 * 8 / 30, num_features=80)
    head = _SoftHead()
    _, scores, _ = task.detect_video(head, torch.zeros(80, 16), timing, torch.device("cpu"))
    assert sorted(scores.tolist()) == pytest.approx([0.8 * np.exp(-2.0)] * 4 + [0.9] * 4)
    assert head.nms == {"method": "soft-gaussian", "sigma": 0.5}
    task.eval_cfg["nms_per_window"] = True
    _, scores, _ = task.detect_video(head, torch.zeros(80, 16), timing, torch.device("cpu"))
    assert sorted(scores.tolist()) == pytest.approx([0.8 * np.exp(-4.0)] * 4 + [0.9] * 4)


def test_class_agnostic_detection_head_is_labelled_by_the_video_classifier(detection_set, tmp_path):
    # the official A2Net ActivityNet protocol: a class-agnostic detector, labels from video-level scores
    truth = json.loads(detection_set.annotations.read_text())["database"]
    classes = {"results": {vid: [{"label": "zzz", "score": 0.5}] for vid in truth}}
    (tmp_path / "cls.json").write_text(json.dumps(classes))
    cfg = load_config("configs/synthetic/a2net.yaml", [
        f"dataset.features={detection_set.features}", f"dataset.annotations={detection_set.annotations}",
        "dataset.mode=rescale", "dataset.num_steps=32", f"+dataset.classification={tmp_path / 'cls.json'}",
        "+dataset.class_agnostic=true", "+dataset.classes_per_proposal=1", "train.epochs=1"])
    task = DetectionTask(cfg)
    model = task.build_model()
    assert model.num_classes == 1 and task.is_proposal_head(model)
    assert {int(c) for lab in task.train_batch(model, [0, 1, 2])["labels"] for c in lab} == {0}
    train(cfg, tmp_path / "run", progress=False)
    written = json.loads((tmp_path / "run" / "predictions.json").read_text())
    assert all("label" not in r for rows in written["results"].values() for r in rows)
    fused = json.loads((tmp_path / "run" / "predictions_detections.json").read_text())
    rows = [r for rows in fused["results"].values() for r in rows]
    assert rows and {r["label"] for r in rows} == {"zzz"}
    by_video = {vid: {tuple(r["segment"]): r["score"] for r in rows} for vid, rows in written["results"].items()}
    assert all(r["score"] == pytest.approx(0.5 * by_video[vid][tuple(r["segment"])])
               for vid, rows in fused["results"].items() for r in rows)
