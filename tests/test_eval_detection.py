import json

import numpy as np
import pytest

from tal.datasets.types import DetectionAnnotations, VideoAnnotation
from tal.errors import TalInputError
from tal.eval.detection import (ACTIVITYNET_TIOU, THUMOS14_TIOU, evaluate_detection, evaluate_detection_files,
                                evaluate_detection_part, evaluate_detection_parts, tiou_keys)
from tal.eval.groundtruth import load_subset
from tal.eval.predictions import parse_segment_predictions, read_segment_predictions

ANET_MAP = [0.7812525119010064, 0.7755749293728378, 0.7654562282964582, 0.7477877740948567, 0.7275237109518256,
            0.6940584084630479, 0.6438802324736355, 0.5698729629387241, 0.3958491543087824, 0.10540731220798484]
THUMOS_MAP = [0.8100924050523559, 0.8037789944961726, 0.794634999921019, 0.7753454466828417, 0.7298979422864058]


def gt_of(videos: dict[str, list[tuple[float, float, str]]], subset: str = "test") -> DetectionAnnotations:
    """Ground truth from {video: [(start_s, end_s, label)]}."""
    out = {}
    for vid, anns in videos.items():
        segments = np.array([[s, e] for s, e, _ in anns], dtype=np.float64).reshape(-1, 2)
        out[vid] = VideoAnnotation(vid, subset, 100.0, segments, [label for _, _, label in anns])
    classes = sorted({label for anns in videos.values() for _, _, label in anns})
    return DetectionAnnotations(out, classes, "gt.json")


def preds_of(results: dict[str, list[tuple[float, float, float, str]]]):
    """Predictions from {video: [(start_s, end_s, score, label)]}."""
    return parse_segment_predictions({"results": {
        vid: [{"segment": [s, e], "score": score, "label": label} for s, e, score, label in items]
        for vid, items in results.items()}}, "pred.json")


# ---------------------------------------------------------------- official reference numbers

def test_activitynet_reference_numbers(shared_data):
    result = evaluate_detection_files(shared_data / "activitynet13/activity_net.v1-3.bsn_derived.json",
                                      shared_data / "reference/anet_val_detection_seed1.json", "validation")
    np.testing.assert_allclose(result.mAP, ANET_MAP, rtol=0, atol=1e-9)
    assert abs(result.average_mAP - 0.620666322500916) < 1e-9
    assert len(result.classes) == 200 and result.ap.shape == (10, 200)
    assert list(result.to_json()["mAP"]) == ["0.50", "0.55", "0.60", "0.65", "0.70", "0.75", "0.80", "0.85",
                                             "0.90", "0.95"]


def test_thumos14_reference_numbers(shared_data):
    result = evaluate_detection_files(shared_data / "thumos14/thumos14_actionformer.json",
                                      shared_data / "reference/thumos14_test_detection_seed1.json", "Test",
                                      THUMOS14_TIOU)
    np.testing.assert_allclose(result.mAP, THUMOS_MAP, rtol=0, atol=1e-9)
    assert abs(result.average_mAP - 0.782749957687759) < 1e-9
    # the reference file has segments clipped to an end before their start: accepted, and said
    assert any("78 predicted segments have end < start" in note for note in result.notes)


# ---------------------------------------------------------------- small cases computed by hand

def test_part_drops_predictions_of_instances_outside_it():
    gt = gt_of({"v": [(0, 1, "a"), (10, 30, "a"), (40, 41, "b"), (50, 80, "b")]})
    preds = preds_of({"v": [(10, 30, 0.9, "a"), (5, 6, 0.8, "a"), (0, 1, 0.7, "a"),
                            (40, 41, 0.6, "b"), (50, 80, 0.5, "b")]})
    short = evaluate_detection_part(gt, preds, np.array([True, False, True, False]), np.array([0.5]))
    # a: the long hit is dropped, then FP (0.8), TP (0.7): AP 1/2; b: TP, the long hit dropped: AP 1
    np.testing.assert_allclose(short.ap, [[0.5, 1.0]])
    assert short.classes == ["a", "b"]
    # filtering the ground truth alone would count the long hits as false positives: (1/3 + 1) / 2
    only_short = gt_of({"v": [(0, 1, "a"), (40, 41, "b")]})
    assert evaluate_detection(only_short, preds, np.array([0.5])).mAP[0] == pytest.approx(2 / 3)
    long = evaluate_detection_part(gt, preds, np.array([False, True, False, True]), np.array([0.5]))
    np.testing.assert_allclose(long.ap, [[1.0, 1.0]])
    # a class without a kept instance is not averaged; a threshold no prediction meets scores 0
    one = evaluate_detection_part(gt, preds, np.array([True, False, False, False]), np.array([0.5, 1.0]))
    assert one.classes == ["a"]
    np.testing.assert_allclose(one.ap, [[0.5], [0.5]])  # (0, 1) against (0, 1) has tIoU 1.0


def test_parts_from_one_matching_equal_each_part_alone():
    gt = gt_of({"v": [(0, 1, "a"), (10, 30, "a")], "w": [(40, 41, "b"), (50, 80, "b")]})
    preds = preds_of({"v": [(10, 30, 0.9, "a"), (5, 6, 0.8, "a"), (0, 1.2, 0.7, "a")],
                      "w": [(40, 41, 0.6, "b"), (55, 80, 0.5, "b"), (0, 1, 0.4, "a")]})
    parts = {"short": np.array([True, False, True, False]), "long": np.array([False, True, False, True]),
             "all": np.ones(4, dtype=bool)}
    tiou = np.array([0.5, 0.7, 0.9])
    together = evaluate_detection_parts(gt, preds, parts, tiou)
    assert list(together) == ["short", "long", "all"]
    for name, keep in parts.items():
        alone = evaluate_detection_part(gt, preds, keep, tiou)
        np.testing.assert_array_equal(together[name].ap, alone.ap)
        assert together[name].classes == alone.classes
    np.testing.assert_array_equal(together["all"].ap, evaluate_detection(gt, preds, tiou).ap)
    with pytest.raises(TalInputError, match="keep has 3 entries"):
        evaluate_detection_parts(gt, preds, {"ok": np.ones(4, dtype=bool), "bad": np.ones(3, dtype=bool)})


def test_part_needs_one_flag_per_instance():
    gt = gt_of({"v": [(0, 1, "a"), (10, 30, "a")]})
    with pytest.raises(TalInputError, match="keep has 3 entries; the ground truth has 2 instances"):
        evaluate_detection_part(gt, preds_of({"v": [(0, 1, 0.5, "a")]}), np.ones(3, dtype=bool))


def test_duplicate_detection_is_a_false_positive():
    gt = gt_of({"v": [(0, 10, "a")]})
    result = evaluate_detection(gt, preds_of({"v": [(0, 10, 0.9, "a"), (0, 10, 0.8, "a")]}), [0.5])
    # precision 1, 1/2 at recall 1, 1: AP 1
    assert result.ap.tolist() == [[1.0]]


def test_interpolated_ap_by_hand():
    gt = gt_of({"v": [(0, 10, "a"), (20, 30, "a")]})
    preds = preds_of({"v": [(0, 10, 0.9, "a"), (50, 60, 0.8, "a"), (20, 30, 0.7, "a")]})
    # ranked TP, FP, TP: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> 1/2 * 1 + 1/2 * 2/3
    assert evaluate_detection(gt, preds, [0.5]).ap[0, 0] == pytest.approx(0.5 + 1 / 3, abs=1e-15)


def test_tiou_threshold_is_inclusive_lower_bound():
    gt = gt_of({"v": [(0, 10, "a")]})
    result = evaluate_detection(gt, preds_of({"v": [(0, 6, 1.0, "a")]}), [0.5, 0.6, 0.7])  # tIoU 0.6
    assert result.ap[:, 0].tolist() == [1.0, 1.0, 0.0]


def test_greedy_takes_highest_tiou_ground_truth_not_yet_taken():
    # GT A [0, 10], B [2, 12]. p1 [2, 11]: tIoU A 8/11, B 9/10 -> takes B.
    # p2 [3, 12]: B 0.9 is taken, A 7/12 = 0.583: TP at 0.5, FP at 0.7.
    gt = gt_of({"v": [(0, 10, "a"), (2, 12, "a")]})
    preds = preds_of({"v": [(2, 11, 0.9, "a"), (3, 12, 0.8, "a")]})
    result = evaluate_detection(gt, preds, [0.5, 0.7])
    assert result.ap[:, 0].tolist() == [1.0, 0.5]


def test_tied_ground_truths_are_taken_in_the_official_argsort_order():
    # p1 [2.5, 12.5] has tIoU 0.6 with both A [0, 10] and B [5, 15]; the official code takes the
    # first of argsort(tious)[::-1]. p2 [5, 15] can only match B (A: 1/3).
    gt = gt_of({"v": [(0, 10, "a"), (5, 15, "a")]})
    preds = preds_of({"v": [(2.5, 12.5, 0.9, "a"), (5, 15, 0.8, "a")]})
    p1_takes_b = np.argsort(np.array([0.6, 0.6]))[::-1][0] == 1
    assert evaluate_detection(gt, preds, [0.5]).ap[0, 0] == (0.5 if p1_takes_b else 1.0)


def test_map_is_the_mean_over_ground_truth_classes_and_missing_class_scores_zero():
    gt = gt_of({"v": [(0, 10, "a"), (20, 30, "b")]})
    result = evaluate_detection(gt, preds_of({"v": [(0, 10, 0.9, "a")]}), [0.5])
    assert result.classes == ["a", "b"]
    assert result.ap.tolist() == [[1.0, 0.0]]
    assert result.mAP.tolist() == [0.5] and result.average_mAP == 0.5
    assert any("1 of 2 classes have no predictions (AP 0): 'b'" in note for note in result.notes)


def test_label_without_ground_truth_is_ignored_and_reported():
    gt = gt_of({"v": [(0, 10, "a")]})
    gt.classes.append("c")  # a class of another subset of the same file
    with_extra = preds_of({"v": [(0, 10, 0.5, "a"), (0, 10, 0.9, "zzz"), (0, 10, 0.9, "c"), (1, 9, 0.8, "zzz")]})
    result = evaluate_detection(gt, with_extra, [0.5])
    assert result.ap.tolist() == [[1.0]]
    assert ("ignored 1 predictions of 1 labels that have no ground truth in this subset: 'c' (1)" in result.notes)
    assert any(note.startswith("ignored 2 predictions of 1 labels that are not classes of gt.json (check the class "
                               "names): 'zzz' (2)") for note in result.notes)


def test_prediction_on_video_outside_subset_is_a_false_positive():
    gt = gt_of({"v": [(0, 10, "a")]})
    preds = preds_of({"other": [(0, 10, 0.9, "a")], "v": [(0, 10, 0.8, "a")]})
    result = evaluate_detection(gt, preds, [0.5])
    assert result.ap.tolist() == [[0.5]]  # FP then TP: precision 1/2 at recall 1
    assert any(note.startswith("1 predictions on 1 videos that are not in the evaluated subset count as false "
                               "positives") for note in result.notes)


def test_empty_predictions_give_zero_map():
    gt = gt_of({"v": [(0, 10, "a")], "w": [(5, 6, "b")]})
    result = evaluate_detection(gt, parse_segment_predictions({"results": {}}), ACTIVITYNET_TIOU)
    assert result.ap.shape == (10, 2) and not result.ap.any()
    assert result.average_mAP == 0.0
    assert result.to_json()["mAP"]["0.50"] == 0.0


def test_zero_length_ground_truth_never_gives_nan():
    gt = gt_of({"v": [(5, 5, "a"), (20, 30, "a")]})
    preds = preds_of({"v": [(4, 6, 0.9, "a"), (20, 30, 0.8, "a"), (5, 5, 0.7, "a")]})
    result = evaluate_detection(gt, preds, [0.5, 0.95])
    assert np.isfinite(result.ap).all()
    # [4, 6] overlaps nothing of length > 0: FP. The zero-length prediction matches the zero-length
    # ground truth, as in the official code (0/0 there, which passes every threshold).
    # FP, TP, TP: precision 0, 1/2, 2/3 at recall 0, 1/2, 1 -> 1/2 * 2/3 + 1/2 * 2/3
    np.testing.assert_allclose(result.ap[:, 0], [2 / 3, 2 / 3], rtol=0, atol=1e-15)


def test_reversed_prediction_is_a_false_positive():
    gt = gt_of({"v": [(0, 10, "a")]})
    result = evaluate_detection(gt, preds_of({"v": [(10, 3, 0.9, "a"), (0, 10, 0.5, "a")]}), [0.5])
    assert result.ap.tolist() == [[0.5]]
    assert any("1 predicted segments have end < start" in note for note in result.notes)
    # exactly as long as the ground truth, reversed: the union is 0 and the official 0/0 matches
    result = evaluate_detection(gt, preds_of({"v": [(10, 0, 0.9, "a")]}), [0.5])
    assert result.ap.tolist() == [[1.0]]


def test_reversed_prediction_with_two_zero_unions_locks_the_official_ground_truth():
    # [17, 13] (length -4) against [2, 6] and [24, 28] (length 4): union 0 twice, the official tIoU is
    # NaN for both, and its argsort()[::-1] of [NaN, NaN, -0, -0] takes [24, 28] first. So [0, 8]
    # (tIoU 0.5 with [2, 6]) is a second true positive: AP = 2/4 (tied +inf would lock [2, 6]: 1/4).
    gt = gt_of({"v": [(2, 6, "a"), (24, 28, "a"), (40, 41, "a"), (43, 44, "a")]})
    result = evaluate_detection(gt, preds_of({"v": [(17, 13, 0.9, "a"), (0, 8, 0.5, "a")]}), [0.5])
    assert result.ap.tolist() == [[0.5]]


def test_per_class_json_and_keys():
    gt = gt_of({"v": [(0, 10, "b"), (20, 30, "a")]})
    result = evaluate_detection(gt, preds_of({"v": [(0, 10, 0.9, "b")]}), [0.5, 0.75])
    out = result.to_json(per_class=True)
    assert out == {"mAP": {"0.50": 0.5, "0.75": 0.5}, "average_mAP": 0.5, "tiou_thresholds": [0.5, 0.75],
                   "per_class_AP": {"a": {"0.50": 0.0, "0.75": 0.0}, "b": {"0.50": 1.0, "0.75": 1.0}}}
    assert list(out["per_class_AP"]) == ["a", "b"]
    assert tiou_keys(np.array([0.5, 0.525])) == ["0.500", "0.525"]
    assert tiou_keys(THUMOS14_TIOU) == ["0.30", "0.40", "0.50", "0.60", "0.70"]


# ---------------------------------------------------------------- against a plain loop of the official protocol

def _official_pair_tiou(pred, gt):
    inter = max(min(pred[1], gt[1]) - max(pred[0], gt[0]), 0.0)
    union = (gt[1] - gt[0]) + (pred[1] - pred[0]) - inter
    return np.float64(inter) / np.float64(union) if union != 0 else np.nan


def _loop_average_precision(gt, preds, thresholds):
    """The official protocol written as plain loops: gt [(video, label, s, e)], preds [(video, label, s, e, score)]."""
    classes = list(dict.fromkeys(label for _, label, _, _ in gt))
    ap = np.zeros((len(thresholds), len(classes)))
    for c, label in enumerate(classes):
        g = [x for x in gt if x[1] == label]
        p = [x for x in preds if x[1] == label]
        if not p:
            continue
        order = np.argsort(np.array([x[4] for x in p]))[::-1]
        taken = np.zeros((len(thresholds), len(g)), dtype=bool)
        tp = np.zeros((len(thresholds), len(p)))
        for rank, i in enumerate(order):
            same_video = [j for j, x in enumerate(g) if x[0] == p[i][0]]
            if not same_video:
                continue
            with np.errstate(invalid="ignore"):
                overlaps = np.array([_official_pair_tiou(p[i][2:4], g[j][2:4]) for j in same_video])
            best_first = np.argsort(overlaps)[::-1]
            for t, thr in enumerate(thresholds):
                for k in best_first:
                    if overlaps[k] < thr:
                        break
                    if taken[t, same_video[k]]:
                        continue
                    taken[t, same_video[k]] = True
                    tp[t, rank] = 1
                    break
        for t in range(len(thresholds)):
            tp_cum = np.cumsum(tp[t])
            precision = tp_cum / np.arange(1, len(p) + 1)
            recall = tp_cum / len(g)
            envelope = np.concatenate([[0.0], precision, [0.0]])
            for i in range(len(envelope) - 2, -1, -1):
                envelope[i] = max(envelope[i], envelope[i + 1])
            steps = np.concatenate([[0.0], recall, [1.0]])
            ap[t, c] = sum((steps[i] - steps[i - 1]) * envelope[i] for i in range(1, len(steps))
                           if steps[i] != steps[i - 1])
    return ap


@pytest.mark.parametrize("seed", range(12))
def test_matches_plain_loop_on_random_sets_with_ties(seed):
    rng = np.random.default_rng(seed)
    videos, labels = ["v0", "v1", "v2", "v3"], ["a", "b", "c"]
    gt = []
    for vid in videos[:3]:  # v3 is outside the ground truth
        for _ in range(rng.integers(1, 6)):
            start = float(rng.integers(0, 20))
            gt.append((vid, str(rng.choice(labels)), start, start + float(rng.integers(0, 8))))  # some zero-length
    preds = []
    for _ in range(rng.integers(0, 60)):
        start = float(rng.integers(0, 20))
        length = float(rng.integers(0, 8)) if rng.random() > 0.05 else -2.5  # a few reversed segments
        preds.append((str(rng.choice(videos)), str(rng.choice(labels)), start, start + length,
                      float(rng.integers(1, 5)) / 4))  # many tied scores
    thresholds = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    annotations = gt_of({vid: [(s, e, label) for v, label, s, e in gt if v == vid]
                         for vid in dict.fromkeys(v for v, _, _, _ in gt)})
    results: dict = {}
    for vid, label, s, e, score in preds:
        results.setdefault(vid, []).append({"segment": [s, e], "score": score, "label": label})
    # the loop reads predictions in the file's order: video by video
    file_order = [(vid, item["label"], *item["segment"], item["score"]) for vid, items in results.items()
                  for item in items]
    result = evaluate_detection(annotations, parse_segment_predictions({"results": results}), thresholds)
    expected = _loop_average_precision(gt, file_order, thresholds)
    assert result.classes == list(dict.fromkeys(label for _, label, _, _ in gt))
    np.testing.assert_allclose(result.ap, expected, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- bad input

def _write(tmp_path, name, obj):
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


@pytest.mark.parametrize("content, message", [
    ({"version": "x"}, "not a prediction file: no top-level 'results' object"),
    ({"results": []}, "'results' must be an object mapping video id to a list of predictions, got list"),
    ({"results": {"v": {}}}, "results['v'] must be a list of predictions, got dict"),
    ({"results": {"v": [{"segment": [0, 1], "label": "a"}]}}, "results['v'][0]: missing key 'score'"),
    ({"results": {"v": [{"score": 1, "label": "a"}]}}, "results['v'][0]: missing key 'segment'"),
    ({"results": {"v": [{"segment": [0, 1], "score": 1}]}}, "results['v'][0]: missing key 'label'"),
    ({"results": {"v": [{"segment": [0, 1], "score": 1, "label": 3}]}}, "results['v'][0]: label must be a string"),
    ({"results": {"v": [{"segment": [0, 1], "score": 1, "label": "a"},
                        {"segment": [0, 1], "score": float("nan"), "label": "a"}]}},
     "results['v'][1]: score nan is not finite"),
    ({"results": {"v": [{"segment": [0, float("inf")], "score": 1, "label": "a"}]}},
     "results['v'][0]: segment [0, inf] is not finite"),
    ({"results": {"v": [{"segment": [0, 1, 2], "score": 1, "label": "a"}]}},
     "results['v'][0]: segment must be [start, end], got [0, 1, 2]"),
    ({"results": {"v": [{"segment": ["a", 1], "score": 1, "label": "a"}]}},
     "results['v'][0]: segment must hold two numbers"),
    ({"results": {"v": [{"segment": [0, 1], "score": "high", "label": "a"}]}},
     "results['v'][0]: score must be a number, got 'high'"),
    ('{"results": {"v": [}', "malformed JSON at line 1"),
])
def test_bad_prediction_files_name_file_and_entry(tmp_path, content, message):
    path = _write(tmp_path, "pred.json", content)
    with pytest.raises(TalInputError) as err:
        read_segment_predictions(path, with_labels=True)
    assert str(err.value).startswith(str(path)) and message in str(err.value)


def test_numeric_strings_are_accepted_like_the_official_reader(tmp_path):
    path = _write(tmp_path, "pred.json", {"results": {"v": [{"segment": ["1.5", "2"], "score": "0.5", "label": "a"}]}})
    preds = read_segment_predictions(path)
    assert preds.segments.tolist() == [[1.5, 2.0]] and preds.scores.tolist() == [0.5] and preds.labels == ["a"]


def test_subset_errors_list_the_subsets(tmp_path):
    gt = _write(tmp_path, "gt.json", {"database": {
        "v": {"subset": "train", "annotations": [{"segment": [0, 1], "label": "a"}]},
        "w": {"subset": "val", "annotations": []}}})
    with pytest.raises(TalInputError, match=r"gt.json: no subset 'test'; the subsets are 'train', 'val'$"):
        load_subset(gt, "test")
    with pytest.raises(TalInputError, match=r"gt.json: has subsets 'train', 'val'; choose one with --subset$"):
        load_subset(gt, None)
    with pytest.raises(TalInputError, match=r"gt.json: subset 'val' has no annotated segments"):
        load_subset(gt, "val")
    assert list(load_subset(gt, "train").videos) == ["v"]


def test_ground_truth_end_before_start_is_an_error(tmp_path):
    gt = _write(tmp_path, "gt.json", {"database": {
        "v": {"subset": "val", "annotations": [{"segment": [5, 1], "label": "a"}]}}})
    with pytest.raises(TalInputError, match=r"video 'v', annotation 0: segment end 1.0 is before its start 5.0"):
        load_subset(gt, "val")
