"""tools/bench/a2net_ablation.py: the duration parts and the paper's duration-table protocol, by hand."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from tal.datasets.types import DetectionAnnotations, VideoAnnotation
from tal.eval.predictions import parse_segment_predictions

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ablation():
    spec = importlib.util.spec_from_file_location("a2net_ablation", REPO / "tools" / "bench" / "a2net_ablation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def truth_of(videos: dict[str, list[tuple[float, float, str]]]) -> DetectionAnnotations:
    out = {vid: VideoAnnotation(vid, "validation", 200.0, np.array([[s, e] for s, e, _ in anns], dtype=float),
                                [label for _, _, label in anns]) for vid, anns in videos.items()}
    return DetectionAnnotations(out, sorted({lab for anns in videos.values() for _, _, lab in anns}), "gt")


def preds_of(results: dict[str, list[tuple[float, float, float, str]]]):
    return parse_segment_predictions({"results": {
        vid: [{"segment": [s, e], "score": c, "label": lab} for s, e, c, lab in items]
        for vid, items in results.items()}}, "pred")


# durations 1, 20, 2, 30, 3 (v0) and 4, 40, 5, 50, 6 (v1): ES = the 2 shortest (1, 2), EL = the 2 longest (40, 50)
TRUTH = {"v0": [(0, 1, "a"), (10, 30, "a"), (40, 42, "b"), (50, 80, "b"), (90, 93, "a")],
         "v1": [(0, 4, "a"), (10, 50, "b"), (60, 65, "a"), (100, 150, "b"), (90, 96, "b")]}


def test_fifths_by_count_after_a_stable_sort(ablation):
    durations = np.array([1.0, 20, 2, 30, 3, 4, 40, 5, 50, 6])
    shortest, longest = ablation.duration_fifths(durations)
    assert np.flatnonzero(shortest).tolist() == [0, 2] and np.flatnonzero(longest).tolist() == [6, 8]
    tied = ablation.duration_fifths(np.array([2.0, 1, 1, 1, 1]))  # int(0.2 * 5) = 1: the first of the ties
    assert np.flatnonzero(tied[0]).tolist() == [1] and np.flatnonzero(tied[1]).tolist() == [0]


def test_each_prediction_goes_to_the_instance_it_overlaps_most_any_class(ablation):
    truth = truth_of({"v0": TRUTH["v0"], "v1": TRUTH["v1"][:3]})
    preds = preds_of({"v0": [(0, 1, 0.9, "b"), (12, 35, 0.8, "a"), (31, 39, 0.7, "a"), (41, 60, 0.6, "a")],
                      "v1": [(59, 64, 0.5, "a")], "v9": [(0, 1, 0.4, "a")]})
    # (41, 60) overlaps (40, 42) by 1/20 and (50, 80) by 10/40; (31, 39) overlaps nothing; v9 has no truth
    assert ablation.nearest_instances(truth, preds).tolist() == [0, 1, -1, 3, 7, -1]


def test_paper_protocol_scores_each_part_with_its_own_detections_only(ablation):
    truth = truth_of(TRUTH)
    preds = preds_of({"v0": [(0, 1, 0.9, "a"), (40, 41, 0.8, "b"), (10, 30, 0.7, "a"), (200, 300, 0.99, "a")],
                      "v1": [(10, 50, 0.6, "b"), (89, 97, 0.5, "b")]})
    parts = ablation.paper_table_parts(truth, preds)
    # ES = v0 (0, 1) "a" and v0 (40, 42) "b": (0, 1) hits "a" (AP 1); (40, 41) has tIoU 0.5 with (40, 42): AP 1
    # for "b"; the long (10, 30) detection and the one overlapping nothing are not in this part
    assert parts["mAP@0.5_ES"] == pytest.approx(1.0) and parts["instances_ES"] == 2
    # EL = v1 (10, 50) "b" and v1 (100, 150) "b": one found -> AP 0.5 for "b", the only class there
    assert parts["mAP@0.5_EL"] == pytest.approx(0.5) and parts["instances_EL"] == 2


def test_one_tiny_run_scores_every_variant_and_both_branches(ablation, tmp_path, one_torch_thread):
    from tal.datasets.synthetic import make_detection_set

    make_detection_set(tmp_path / "set", num_videos=8, feature_dim=8, num_steps=(32, 48))
    rows = ablation.run(str(REPO / "configs/synthetic/a2net.yaml"), tmp_path / "set", tmp_path / "runs",
                        ["train.epochs=1", "eval.interval=1", "dataset.num_steps=64",
                         "model.pyramid_dims=[8,8,8]", "model.base_dim=8", "model.head_dim=8"], [0])
    assert [r["variant"] for r in rows] == ["both", "both: AB outputs", "both: AF outputs", "anchor_based",
                                           "anchor_free"]
    assert {p.name for p in (tmp_path / "runs" / "both_seed0").glob("predictions*.json")} == {
        "predictions.json", "predictions_AB_outputs.json", "predictions_AF_outputs.json"}
    files = [(tmp_path / "runs" / "both_seed0" / f"predictions{s}.json").read_bytes() for s in ("", "_AB_outputs",
                                                                                            "_AF_outputs")]
    assert len(set(files)) == 3
    assert all(0 <= r["mAP@0.5_all"] <= 1 and r["instances_all"] == rows[0]["instances_all"] for r in rows)
    assert [m["variant"] for m in ablation.summary(rows)] == ["both", "anchor_based", "anchor_free",
                                                             "both: AB outputs", "both: AF outputs"]
