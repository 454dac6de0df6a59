import json

import numpy as np
import pytest

from tal.errors import TalInputError
from tal.eval.grounding import evaluate_grounding, evaluate_grounding_files
from tal.eval.predictions import read_grounding_predictions

CHARADES_NMS_050 = {"R@1,IoU=0.5": 0.8494623655913979, "R@1,IoU=0.7": 0.6755376344086022,
                    "R@5,IoU=0.5": 0.992741935483871, "R@5,IoU=0.7": 0.8223118279569892, "mIoU": 0.7286777675935968}
CHARADES_NMS_045 = {"R@1,IoU=0.5": 0.8494623655913979, "R@1,IoU=0.7": 0.6755376344086022,
                    "R@5,IoU=0.5": 0.9876344086021506, "R@5,IoU=0.7": 0.7922043010752688, "mIoU": 0.7286777675935968}


@pytest.mark.parametrize("nms, expected", [(0.5, CHARADES_NMS_050), (0.45, CHARADES_NMS_045)])
def test_charades_reference_numbers(shared_data, nms, expected):
    result = evaluate_grounding_files(shared_data / "reference/charades_sta_test_predictions_seed1.jsonl",
                                      recalls=(1, 5), ious=(0.5, 0.7), nms_threshold=nms)
    out = result.to_json()
    assert list(out) == list(expected)
    for key, value in expected.items():
        assert abs(out[key] - value) < 1e-9, key


def test_nms_lets_a_lower_ranked_distinct_moment_into_the_top_n():
    moments = [np.array([[0, 10], [1, 10], [20, 30]], dtype=float)]
    gt = np.array([[20, 30]], dtype=float)
    with_nms = evaluate_grounding(moments, gt, recalls=(1, 2), ious=(0.5,), nms_threshold=0.5)
    without = evaluate_grounding(moments, gt, recalls=(1, 2), ious=(0.5,), nms_threshold=1.0)
    assert with_nms.recall.tolist() == [[0.0], [1.0]]  # [1, 10] overlaps [0, 10] by 0.9: suppressed
    assert without.recall.tolist() == [[0.0], [0.0]]


def test_nms_keeps_overlap_equal_to_the_threshold():
    # [0, 10] and [0, 5] overlap by exactly 0.5: 2D-TAN keeps overlap <= threshold
    result = evaluate_grounding([np.array([[0, 10], [0, 5]], dtype=float)], np.array([[0, 5]], dtype=float),
                                recalls=(2,), ious=(0.9,), nms_threshold=0.5)
    assert result.recall.tolist() == [[1.0]]


def test_iou_strictly_greater_unless_iou_ge():
    moments, gt = [np.array([[0, 5]], dtype=float)], np.array([[0, 10]], dtype=float)  # IoU exactly 0.5
    assert evaluate_grounding(moments, gt, recalls=(1,), ious=(0.5,)).recall.tolist() == [[0.0]]
    assert evaluate_grounding(moments, gt, recalls=(1,), ious=(0.5,), iou_ge=True).recall.tolist() == [[1.0]]


def test_miou_is_the_mean_top1_iou():
    moments = [np.array([[0, 5], [0, 10]], dtype=float), np.array([[20, 30]], dtype=float)]
    result = evaluate_grounding(moments, np.array([[0, 10], [20, 30]], dtype=float), recalls=(1, 5), ious=(0.7,))
    assert result.mean_iou == 0.75  # (0.5 + 1) / 2, the better second moment of query 1 does not count
    assert result.recall.tolist() == [[0.5], [1.0]]


def test_iou_uses_the_hull_as_union_and_never_nan():
    # disjoint: 0; zero-length ground truth inside a moment: 0; identical zero-length: 0 (2D-TAN: NaN)
    moments = [np.array([[0, 2]], dtype=float), np.array([[0, 10]], dtype=float), np.array([[3, 3]], dtype=float)]
    result = evaluate_grounding(moments, np.array([[5, 8], [4, 4], [3, 3]], dtype=float), recalls=(1,), ious=(0.0,),
                                iou_ge=False)
    assert result.mean_iou == 0.0 and result.recall.tolist() == [[0.0]]


def test_query_without_moments_is_a_miss():
    result = evaluate_grounding([np.zeros((0, 2)), np.array([[0, 10]], dtype=float)],
                                np.array([[0, 10], [0, 10]], dtype=float), recalls=(1,), ious=(0.5,))
    assert result.recall.tolist() == [[0.5]] and result.mean_iou == 0.5
    assert "1 queries have no moments: they count as misses with IoU 0" in result.notes


def test_json_keys():
    result = evaluate_grounding([np.array([[0, 10]], dtype=float)], np.array([[0, 10]], dtype=float))
    assert list(result.to_json()) == ["R@1,IoU=0.3", "R@1,IoU=0.5", "R@1,IoU=0.7", "R@5,IoU=0.3", "R@5,IoU=0.5",
                                      "R@5,IoU=0.7", "mIoU"]


# ---------------------------------------------------------------- against a plain loop of 2D-TAN's protocol

def _loop_grounding(moments, gts, recalls, ious, threshold):
    hits = np.zeros((len(recalls), len(ious)))
    top1 = []
    for segs, (gs, ge) in zip(moments, gts):
        keep, order = [], list(range(len(segs)))
        while order and len(keep) < max(recalls):
            i = order.pop(0)
            keep.append(i)
            survivors = []
            for j in order:
                inter = max(0.0, min(segs[i][1], segs[j][1]) - max(segs[i][0], segs[j][0]))
                denom = (segs[i][1] - segs[i][0]) + (segs[j][1] - segs[j][0]) - inter
                if denom != 0 and inter / denom <= threshold:
                    survivors.append(j)
            order = survivors
        overlaps = []
        for i in keep:
            inter = max(0.0, min(segs[i][1], ge) - max(segs[i][0], gs))
            union = max(0.0, max(segs[i][1], ge) - min(segs[i][0], gs))
            overlaps.append(inter / union if union > 0 else 0.0)
        top1.append(overlaps[0] if overlaps else 0.0)
        for a, n in enumerate(recalls):
            for b, m in enumerate(ious):
                hits[a, b] += any(o > m for o in overlaps[:n])
    return hits / len(moments), float(np.mean(top1))


@pytest.mark.parametrize("seed", range(6))
def test_matches_plain_loop_on_random_queries(seed):
    rng = np.random.default_rng(seed)
    moments, gts = [], []
    for _ in range(40):
        starts = rng.integers(0, 20, size=rng.integers(0, 12)).astype(float)
        moments.append(np.stack([starts, starts + rng.integers(0, 8, size=len(starts))], axis=1))  # some zero-length
        start = float(rng.integers(0, 20))
        gts.append((start, start + float(rng.integers(1, 8))))
    result = evaluate_grounding(moments, np.array(gts), recalls=(1, 2, 5), ious=(0.3, 0.5, 0.7), nms_threshold=0.4)
    recall, miou = _loop_grounding([m.tolist() for m in moments], gts, (1, 2, 5), (0.3, 0.5, 0.7), 0.4)
    np.testing.assert_array_equal(result.recall, recall)
    assert result.mean_iou == pytest.approx(miou, abs=1e-15)


# ---------------------------------------------------------------- files and --gt matching

def _jsonl(tmp_path, name, rows):
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_moments_are_sorted_by_score_and_segment_is_the_default_ground_truth(tmp_path):
    pred = _jsonl(tmp_path, "pred.jsonl", [
        {"video": "v", "query": "q", "segment": [0, 10], "moments": [[20, 30, 0.1], [0, 10, 0.9]]}])
    assert read_grounding_predictions(pred)[0].moments.tolist() == [[0, 10], [20, 30]]
    assert evaluate_grounding_files(pred, recalls=(1,), ious=(0.5,)).to_json() == {"R@1,IoU=0.5": 1.0, "mIoU": 1.0}


def test_gt_file_matched_by_line_order_or_by_key(tmp_path):
    gt = _jsonl(tmp_path, "gt.jsonl", [{"video": "v", "query": "a", "duration": 30, "segment": [0, 10]},
                                       {"video": "v", "query": "b", "duration": 30, "segment": [20, 30]}])
    same_order = _jsonl(tmp_path, "p1.jsonl", [{"video": "v", "query": "a", "moments": [[0, 10, 1]]},
                                               {"video": "v", "query": "b", "moments": [[0, 10, 1]]}])
    shuffled = _jsonl(tmp_path, "p2.jsonl", [{"video": "v", "query": "b", "moments": [[0, 10, 1]]},
                                             {"video": "v", "query": "a", "moments": [[0, 10, 1]]}])
    for pred in (same_order, shuffled):
        assert evaluate_grounding_files(pred, gt, recalls=(1,), ious=(0.5,)).to_json()["R@1,IoU=0.5"] == 0.5


def test_gt_matching_errors(tmp_path):
    gt = _jsonl(tmp_path, "gt.jsonl", [{"video": "v", "query": "a", "duration": 30, "segment": [0, 10]},
                                       {"video": "v", "query": "b", "duration": 30, "segment": [20, 30]}])
    extra = _jsonl(tmp_path, "extra.jsonl", [{"video": "v", "query": "zzz", "moments": []}])
    with pytest.raises(TalInputError, match=r"extra.jsonl:1: video 'v', query 'zzz' is not in .*gt.jsonl$"):
        evaluate_grounding_files(extra, gt)
    partial = _jsonl(tmp_path, "partial.jsonl", [{"video": "v", "query": "b", "moments": []}])
    with pytest.raises(TalInputError, match=r"partial.jsonl: no prediction for 1 ground-truth queries of .*gt.jsonl, "
                                            r"e.g. video 'v', query 'a'$"):
        evaluate_grounding_files(partial, gt)
    twice = _jsonl(tmp_path, "twice.jsonl", [{"video": "v", "query": "a", "duration": 30, "segment": [0, 10]},
                                             {"video": "v", "query": "a", "duration": 30, "segment": [5, 10]}])
    with pytest.raises(TalInputError, match=r"twice.jsonl: query 2 \(video 'v', query 'a'\) repeats query 1 with "
                                            r"another segment"):
        evaluate_grounding_files(_jsonl(tmp_path, "p.jsonl", [{"video": "v", "query": "a", "moments": []}] * 3), twice)


@pytest.mark.parametrize("row, message", [
    ({"video": "v", "query": "q", "segment": [0, 1]}, ":1: missing key 'moments'"),
    ({"query": "q", "segment": [0, 1], "moments": []}, ":1: missing key 'video'"),
    ({"video": "v", "query": "q", "moments": []},
     ":1: missing key 'segment' (the ground truth; or give --gt GT.jsonl)"),
    ({"video": "v", "query": "q", "segment": [3, 1], "moments": []},
     ":1: 'segment': segment end 1.0 is before its start"),
    ({"video": "v", "query": "q", "segment": [0, 1], "moments": [[0, 1, float("nan")]]},
     ":1: moment 0 [0, 1, nan] is not finite"),
    ({"video": "v", "query": "q", "segment": [0, 1], "moments": [[0, 1, 0.5], [0, 1]]},
     ":1: moments must all have the same length"),
    ({"video": "v", "query": "q", "segment": [0, 1], "moments": [[0, "x", 1]]}, ":1: moment 0 must hold numbers"),
    ({"video": "v", "query": "q", "segment": [0, 1], "moments": {"a": 1}}, ":1: 'moments' must be a list"),
    ('{"video": "v", "query"', ":1: malformed JSON line"),
])
def test_bad_grounding_lines_name_file_and_line(tmp_path, row, message):
    path = _jsonl(tmp_path, "pred.jsonl", [row])
    with pytest.raises(TalInputError) as err:
        evaluate_grounding_files(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value)


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "pred.jsonl"
    path.write_text("\n")
    with pytest.raises(TalInputError, match="pred.jsonl: no queries in the file"):
        evaluate_grounding_files(path)
