import numpy as np
import pytest

from tal.datasets.types import DetectionAnnotations, VideoAnnotation
from tal.errors import TalInputError
from tal.eval.detection import ACTIVITYNET_TIOU
from tal.eval.predictions import parse_segment_predictions
from tal.eval.proposals import evaluate_proposals, evaluate_proposals_files

REFERENCE = {"AR@1": 0.5162758809817634, "AR@5": 0.7862196626902509, "AR@10": 0.8605649252708076,
             "AR@50": 0.9644316467845881, "AR@100": 0.9913067324832031, "AUC": 0.9323396407514055}


def gt_of(videos: dict[str, list[tuple[float, float]]]) -> DetectionAnnotations:
    out = {vid: VideoAnnotation(vid, "val", 100.0, np.array(segs, dtype=np.float64).reshape(-1, 2), ["x"] * len(segs))
           for vid, segs in videos.items()}
    return DetectionAnnotations(out, ["x"], "gt.json")


def proposals_of(results: dict[str, list[tuple[float, float, float]]]):
    return parse_segment_predictions({"results": {
        vid: [{"segment": [s, e], "score": score} for s, e, score in items] for vid, items in results.items()}},
        "proposals.json", with_labels=False)


def test_activitynet_reference_numbers(shared_data):
    result = evaluate_proposals_files(shared_data / "activitynet13/activity_net.v1-3.bsn_derived.json",
                                      shared_data / "reference/anet_val_proposals_seed1.json", "validation", 100)
    out = result.to_json()
    assert list(out) == ["AR@1", "AR@5", "AR@10", "AR@50", "AR@100", "AUC"]
    for key, value in REFERENCE.items():
        assert abs(out[key] - value) < 1e-9, key
    assert abs(result.auc * 100 - 93.23396407514055) < 1e-9  # the official prints percent
    assert result.recall.shape == (10, 100)
    np.testing.assert_allclose(result.avg_num_proposals, np.arange(1, 101), rtol=1e-12)


def test_single_proposal_recall_by_hand():
    # one proposal with tIoU 0.62: recalled at thresholds 0.50, 0.55, 0.60 of the ten
    result = evaluate_proposals(gt_of({"v": [(0, 10)]}), proposals_of({"v": [(0, 6.2, 1.0)]}), max_avg_proposals=1)
    assert result.to_json()["AR@1"] == pytest.approx(0.3, abs=1e-15)
    assert list(result.to_json()) == ["AR@1", "AUC"]  # AR@5 and beyond are past the curve's end


def test_auc_by_hand():
    # two videos, one proposal each, one right: the curve is 0 until AN = 1 where it is 1/2;
    # the AN axis runs 0.01..1, so the area is the last step 0.01 * (0 + 1/2) / 2, over AN 1
    result = evaluate_proposals(gt_of({"a": [(0, 10)], "b": [(0, 10)]}),
                                proposals_of({"a": [(0, 10, 0.5)], "b": [(50, 60, 0.5)]}), max_avg_proposals=1)
    assert result.average_recall[-1] == 0.5 and not result.average_recall[:-1].any()
    assert result.auc == pytest.approx(0.0025, abs=1e-15)


def test_ranking_by_score_and_the_an_axis():
    # one video, proposals ranked wrong, right: AR@1 = 0 and AR@2 (the curve's end) = 1
    gt = gt_of({"v": [(0, 10)]})
    result = evaluate_proposals(gt, proposals_of({"v": [(0, 10, 0.2), (50, 60, 0.9)]}), max_avg_proposals=2)
    np.testing.assert_allclose(result.avg_num_proposals, np.arange(1, 101) / 50, rtol=1e-12)
    assert result.average_recall[49] == 0.0 and result.average_recall[-1] == 1.0
    assert result.ar_at == {1: 0.0}  # AR@5 and beyond are past the curve's end


def test_ar_at_n_between_curve_points():
    # with max_avg_proposals = 3 the curve's points are AN = 0.03, 0.06, ...; AR@1 keeps 1 of 3
    gt = gt_of({"v": [(0, 10)]})
    first = evaluate_proposals(gt, proposals_of({"v": [(0, 10, 0.9), (50, 60, 0.8), (70, 80, 0.7)]}), 3)
    second = evaluate_proposals(gt, proposals_of({"v": [(50, 60, 0.9), (0, 10, 0.8), (70, 80, 0.7)]}), 3)
    assert first.ar_at == {1: 1.0} and second.ar_at == {1: 0.0}


def test_proposals_on_other_videos_count_in_the_budget():
    gt = gt_of({"v": [(0, 10)]})
    own = {"v": [(50, 60, 0.9), (0, 10, 0.8)]}
    alone = evaluate_proposals(gt, proposals_of(own), max_avg_proposals=2)
    assert alone.average_recall[-1] == 1.0
    # 2 more proposals elsewhere: budget 2 * 1 video / 4 proposals = 1/2, so v keeps only its top one
    crowded = evaluate_proposals(gt, proposals_of({**own, "other": [(0, 1, 1.0), (1, 2, 1.0)]}), max_avg_proposals=2)
    assert crowded.average_recall[-1] == 0.0
    assert any(note.startswith("2 proposals on 1 videos that are not in the evaluated subset are ignored, but count "
                               "in the proposal budget") for note in crowded.notes)


def test_ground_truth_of_videos_without_proposals_counts_as_missed():
    gt = gt_of({"a": [(0, 10)], "b": [(0, 10), (20, 30)]})
    result = evaluate_proposals(gt, proposals_of({"a": [(0, 10, 1.0)]}), max_avg_proposals=2)
    assert result.average_recall[-1] == pytest.approx(1 / 3, abs=1e-15)
    assert "1 of 2 ground-truth videos have no proposals" in result.notes


def test_empty_proposals_give_zeros():
    result = evaluate_proposals(gt_of({"v": [(0, 10)]}), proposals_of({}))
    assert result.to_json() == {"AR@1": 0.0, "AR@5": 0.0, "AR@10": 0.0, "AR@50": 0.0, "AR@100": 0.0, "AUC": 0.0}


def test_zero_length_ground_truth_is_never_recalled_and_never_nan():
    result = evaluate_proposals(gt_of({"v": [(5, 5), (0, 10)]}), proposals_of({"v": [(5, 5, 1.0), (0, 10, 0.5)]}),
                                max_avg_proposals=2)
    assert np.isfinite(result.recall).all()
    assert result.average_recall[-1] == 0.5


def test_labels_are_optional_and_ignored():
    preds = parse_segment_predictions({"results": {"v": [{"segment": [0, 10], "score": 1, "label": "zzz"}]}},
                                      with_labels=False)
    assert evaluate_proposals(gt_of({"v": [(0, 10)]}), preds, max_avg_proposals=1).ar_at == {1: 1.0}


def test_bad_budget():
    with pytest.raises(TalInputError, match="max_avg_proposals must be > 0"):
        evaluate_proposals(gt_of({"v": [(0, 10)]}), proposals_of({}), max_avg_proposals=0)


# ---------------------------------------------------------------- against a plain loop of the official protocol

def _loop_recall(gt: dict, proposals: dict, max_avg: float, thresholds: np.ndarray) -> np.ndarray:
    """The official AR-AN recall [T, 100] as plain loops. gt {vid: [(s, e)]}, proposals {vid: [(s, e, score)]}."""
    videos = [v for v, segs in gt.items() if segs]
    total = sum(len(p) for p in proposals.values())
    ratio = max_avg * float(len(videos)) / total
    tious, kept_total = [], 0
    for vid in videos:
        props = proposals.get(vid, [])
        if not props:
            tious.append(np.zeros((len(gt[vid]), 1)))
            continue
        ranked = [props[i] for i in np.argsort(np.array([p[2] for p in props]))[::-1]]
        keep = min(int(len(ranked) * ratio), len(ranked))
        kept_total += keep
        matrix = np.zeros((len(gt[vid]), keep))
        for g, (gs, ge) in enumerate(gt[vid]):
            for k, (ps, pe, _) in enumerate(ranked[:keep]):
                inter = max(min(pe, ge) - max(ps, gs), 0.0)
                union = (ge - gs) + (pe - ps) - inter
                matrix[g, k] = inter / union if union > 0 else 0.0
        tious.append(matrix)
    if kept_total == 0:
        return np.zeros((len(thresholds), 100))
    fractions = np.arange(1, 101) / 100.0 * (max_avg * float(len(videos)) / kept_total)
    recall = np.zeros((len(thresholds), 100))
    num_gt = sum(m.shape[0] for m in tious)
    for t, thr in enumerate(thresholds):
        for j, fraction in enumerate(fractions):
            found = 0
            for matrix in tious:
                n = min(int(matrix.shape[1] * fraction), matrix.shape[1])
                found += sum(bool((row[:n] >= thr).any()) for row in matrix)
            recall[t, j] = found / num_gt
    return recall


@pytest.mark.parametrize("seed", range(6))
def test_matches_plain_loop_on_random_sets_with_ties(seed):
    rng = np.random.default_rng(seed)
    gt, proposals = {}, {}
    for v in range(5):
        starts = rng.integers(0, 30, size=rng.integers(1 if v == 0 else 0, 4)).astype(float)
        gt[f"v{v}"] = [(s, s + float(rng.integers(1, 10))) for s in starts]
    for v in range(6):  # v5 is outside the ground truth
        if v not in (0, 5) and rng.random() < 0.3:
            continue  # a ground-truth video without proposals
        starts = rng.integers(0, 30, size=rng.integers(1, 25)).astype(float)
        proposals[f"v{v}"] = [(s, s + float(rng.integers(0, 10)), float(rng.integers(1, 4)) / 4) for s in starts]
    max_avg = float(rng.choice([1, 3, 10]))
    result = evaluate_proposals(gt_of(gt), proposals_of(proposals), max_avg, ACTIVITYNET_TIOU)
    expected = _loop_recall(gt, proposals, max_avg, ACTIVITYNET_TIOU)
    np.testing.assert_array_equal(result.recall, expected)
    for n, value in result.ar_at.items():
        k = n * 100 / max_avg
        if k == int(k):  # AR@n on a point of the curve is that point
            assert value == expected.mean(axis=0)[int(k) - 1]


def test_ar_at_thumos14_ans_by_hand():
    # 1000 proposals on one video; only the 300th (rank 299) is the ground truth: found from AN 300 on
    from tal.eval.proposals import THUMOS14_AR_AT

    gt = DetectionAnnotations({"v": VideoAnnotation("v", "test", 5000.0, np.array([[0.0, 10.0]]), ["a"])}, ["a"])
    segments = np.array([[100.0 + 4 * i, 102.0 + 4 * i] for i in range(1000)])
    segments[299] = [0.0, 10.0]
    scores = 1.0 - np.arange(1000) / 1000
    preds = parse_segment_predictions({"results": {"v": [{"segment": s.tolist(), "score": float(c)}
                                                         for s, c in zip(segments, scores)]}}, "p.json",
                                      with_labels=False)
    result = evaluate_proposals(gt, preds, 1000, np.linspace(0.5, 1.0, 11), THUMOS14_AR_AT)
    assert result.to_json() == pytest.approx({"AR@50": 0.0, "AR@100": 0.0, "AR@200": 0.0, "AR@500": 1.0,
                                              "AR@1000": 1.0, "AUC": result.auc})
