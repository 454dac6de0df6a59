"""tal.ops.nms against the textbook greedy loops (written here in plain Python) and hand-computed cases."""
import math
import random

import numpy as np
import pytest
import torch

from tal.ops.nms import batched_nms, nms, postprocess_detections, score_voting, soft_nms

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def assert_segments(actual, expected):
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype), rtol=0, atol=1e-12)


# --- the textbook loops -----------------------------------------------------------------------------


def ref_tiou(a, b, real=float):
    """tIoU computed in `real` arithmetic (float: double; numpy.float32: single, as torchvision's kernel)."""
    a, b = [real(x) for x in a], [real(x) for x in b]
    inter = max(real(0.0), min(a[1], b[1]) - max(a[0], b[0]))
    union = (b[1] - b[0]) + (a[1] - a[0]) - inter
    return float(inter / union) if union > 0 else 0.0


def ref_hard(segments, scores, labels, threshold, real=float):
    """Greedy NMS: visit by score (ties: lower index first), keep unless a kept one of its label overlaps > t
    (the tIoU in `real` arithmetic, the threshold a double)."""
    kept = []
    for i in sorted(range(len(scores)), key=lambda i: (-scores[i], i)):
        if all(labels[k] != labels[i] or ref_tiou(segments[k], segments[i], real) <= threshold for k in kept):
            kept.append(i)
    return kept


def ref_soft(segments, scores, labels, method, threshold, sigma, score_threshold=None, real=float):
    """Bodla et al.'s soft NMS per label: pick the best remaining, decay the rest, drop those below the floor."""
    picked = []
    for label in sorted(set(labels)):
        remaining = {i: scores[i] for i in range(len(scores))
                     if labels[i] == label and (score_threshold is None or scores[i] >= score_threshold)}
        while remaining:
            best = max(remaining, key=lambda i: (remaining[i], -i))
            picked.append((best, remaining.pop(best)))
            for i in list(remaining):
                overlap = ref_tiou(segments[best], segments[i])
                if method == "linear":
                    above = ref_tiou(segments[best], segments[i], real) > threshold
                    remaining[i] *= 1.0 - overlap if above else 1.0
                else:
                    remaining[i] *= math.exp(-overlap * overlap / sigma)
                if score_threshold is not None and remaining[i] < score_threshold:
                    del remaining[i]
    return sorted(picked, key=lambda p: (-p[1], p[0]))


def random_case(seed, n, num_classes):
    """Segments on a 1/8 s grid (exact in float32, so tIoU decisions agree across dtypes), some of zero length."""
    rng = random.Random(seed)
    segments = []
    for _ in range(n):
        start = rng.randrange(0, 400) / 8
        length = 0.0 if rng.random() < 0.1 else rng.randrange(1, 120) / 8
        segments.append([start, start + length])
    scores = [rng.random() for _ in range(n)]
    labels = [rng.randrange(num_classes) for _ in range(n)]
    return segments, scores, labels


def as_tensors(segments, scores, labels, dtype, device="cpu"):
    return (torch.tensor(segments, dtype=dtype, device=device).reshape(-1, 2),
            torch.tensor(scores, dtype=dtype, device=device),
            torch.tensor(labels, dtype=torch.long, device=device))


# --- random inputs against the reference ------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("seed", range(6))
def test_hard_nms_matches_greedy_loop(seed, dtype):
    segments, scores, labels = random_case(seed, n=120, num_classes=3)
    seg, sc, lab = as_tensors(segments, scores, labels, dtype)
    ranked = sc.tolist()  # the reference ranks the scores the function sees (float32-rounded too)
    real = np.float32 if dtype == torch.float32 else float
    for threshold in (0.0, 0.3, 0.5, 0.75, 1.0):
        expected = ref_hard(segments, ranked, labels, threshold, real)
        assert batched_nms(seg, sc, lab, threshold).tolist() == expected
        assert nms(seg, sc, threshold).tolist() == ref_hard(segments, ranked, [0] * len(labels), threshold, real)
        # blocks of any size give the same decisions
        for block_size in (1, 7, 50):
            assert batched_nms(seg, sc, lab, threshold, block_size=block_size).tolist() == expected
        assert batched_nms(seg, sc, lab, threshold, max_detections=5).tolist() == expected[:5]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("method", ["linear", "gaussian"])
@pytest.mark.parametrize("seed", range(4))
def test_soft_nms_matches_reference(seed, method, dtype):
    segments, scores, labels = random_case(100 + seed, n=60, num_classes=3)
    seg, sc, lab = as_tensors(segments, scores, labels, dtype)
    scores_in = sc.tolist()
    for score_threshold, class_labels in ((None, labels), (0.05, labels), (0.05, None)):
        ref = ref_soft(segments, scores_in, class_labels or [0] * len(labels), method, 0.4, 0.5, score_threshold,
                       np.float32 if dtype == torch.float32 else float)
        keep, decayed = soft_nms(seg, sc, None if class_labels is None else lab, method, 0.4, 0.5, score_threshold)
        assert keep.tolist() == [i for i, _ in ref]
        assert decayed.dtype == dtype
        assert decayed.tolist() == pytest.approx([s for _, s in ref], abs=1e-6, rel=0)
        # max_detections stops early but must give the first picks of the full run
        keep, decayed = soft_nms(seg, sc, None if class_labels is None else lab, method, 0.4, 0.5,
                                 score_threshold, max_detections=7)
        assert keep.tolist() == [i for i, _ in ref[:7]]
        assert decayed.tolist() == pytest.approx([s for _, s in ref[:7]], abs=1e-6, rel=0)


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_soft_nms_repacked_planes_give_the_reference(monkeypatch, share):
    """COMPACT_SHARE 1.0 re-packs the planes every 16 picks, 0.0 never: both are the reference's picks."""
    import tal.ops.nms as nms_module

    segments, scores, labels = random_case(7, n=400, num_classes=2)
    seg, sc, lab = as_tensors(segments, scores, labels, torch.float32)
    ref = ref_soft(segments, sc.tolist(), labels, "gaussian", 0.4, 0.5, 0.05, np.float32)
    assert len(ref) > 64  # enough picks for several re-packs
    monkeypatch.setattr(nms_module, "COMPACT_SHARE", share)
    keep, decayed = soft_nms(seg, sc, lab, "gaussian", 0.4, 0.5, 0.05)
    assert keep.tolist() == [i for i, _ in ref]
    assert decayed.tolist() == pytest.approx([s for _, s in ref], abs=1e-6, rel=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("method", ["linear", "gaussian", "adaptive"])
@pytest.mark.parametrize("seed", range(3))
def test_one_group_band_scan_gives_the_row_planes(seed, method, dtype):
    """One group runs the band scan; with a far-away second group the same segments go through the row
    planes: same picks, same scores, bit for bit. Scores on a 1/8 grid tie often, and long segments
    reach far back."""
    segments, scores, _ = random_case(200 + seed, n=150, num_classes=1)
    segments[3] = [0.0, 60.0]  # a band that spans most of the video
    scores = [round(score * 8) / 8 + 0.01 for score in scores]
    seg, sc, _ = as_tensors(segments, scores, [0] * len(scores), dtype)
    options = dict(method=method, iou_threshold=0.3, sigma=0.5, width_scale=50.0)
    for score_threshold, max_detections in ((None, None), (0.05, None), (0.05, 9)):
        keep, decayed = soft_nms(seg, sc, None, score_threshold=score_threshold, max_detections=max_detections,
                                 **options)
        far_seg = torch.cat([seg, torch.tensor([[1e4, 1e4 + 1]], dtype=dtype)])
        far_sc = torch.cat([sc, torch.tensor([1.0], dtype=dtype)])
        labels = torch.tensor([0] * len(sc) + [1])
        rows_keep, rows_decayed = soft_nms(far_seg, far_sc, labels, score_threshold=score_threshold,
                                           max_detections=None if max_detections is None else max_detections + 1,
                                           **options)
        ours = rows_keep != len(sc)
        assert keep.tolist() == rows_keep[ours].tolist()
        assert torch.equal(decayed, rows_decayed[ours])


def test_band_scan_breaks_ties_by_input_index_not_start():
    """Equal scores: the earlier input is picked first even where it starts later, as the reference does."""
    segments = [[4.0, 12.0], [2.0, 10.0], [3.0, 11.0], [30.0, 31.0]]
    scores = [0.5, 0.5, 0.5, 0.5]
    seg, sc, _ = as_tensors(segments, scores, [0] * 4, torch.float32)
    ref = ref_soft(segments, sc.tolist(), [0] * 4, "gaussian", 0.5, 0.5, None, np.float32)
    keep, decayed = soft_nms(seg, sc, method="gaussian", sigma=0.5)
    assert keep.tolist() == [i for i, _ in ref] == [0, 3, 1, 2]  # 1 overlaps 0 less than 2 does
    assert decayed.tolist() == pytest.approx([s for _, s in ref], abs=1e-7, rel=0)


def test_hard_nms_pair_budget_splits_blocks_without_changing_the_result(monkeypatch):
    """A tiny pair budget forces dense blocks to be halved again and again."""
    import tal.ops.nms as nms_module

    segments, scores, labels = random_case(11, n=150, num_classes=2)
    segments += [[100.0 + i / 64, 110.0 + i / 64] for i in range(60)]  # a dense late cluster
    scores += [0.01 * (1 - i / 100) for i in range(60)]
    labels += [0] * 60
    seg, sc, lab = as_tensors(segments, scores, labels, torch.float64)
    expected = ref_hard(segments, scores, labels, 0.5)
    monkeypatch.setattr(nms_module, "PAIR_BUDGET", 3)
    assert batched_nms(seg, sc, lab, 0.5).tolist() == expected
    assert batched_nms(seg, sc, lab, 0.5, block_size=64).tolist() == expected


def test_soft_nms_step_tiou_is_segments_tiou():
    """The per-pick tIoU of soft NMS, for row planes and for one pick's scalar bounds, is bit for bit segments.tiou."""
    from tal.ops.nms import _tiou_to
    from tal.ops.segments import tiou

    def picks_against_planes(seg, col, empty=True):
        start, end = seg[..., 0].numpy().copy(), seg[..., 1].numpy().copy()
        rows = np.arange(len(col))
        return torch.from_numpy(_tiou_to(start[rows, col][:, None], end[rows, col][:, None], start, end,
                                         end - start, empty))

    segments, _, _ = random_case(5, n=3 * 40, num_classes=1)
    seg = torch.tensor(segments, dtype=torch.float32).reshape(3, 40, 2) * 1.37  # off the grid
    seg[1, 5] = seg[1, 7] = torch.tensor([3.0, 3.0])  # a zero-length pick against a zero-length segment
    col = np.array([0, 5, 39])
    expected = tiou(seg, seg[torch.arange(3), torch.from_numpy(col)][:, None, :])
    actual = picks_against_planes(seg, col)
    assert torch.equal(actual, expected)
    assert actual[1, 7] == 0
    start, end = seg[1, :, 0].numpy().copy(), seg[1, :, 1].numpy().copy()
    assert torch.equal(torch.from_numpy(_tiou_to(start[5], end[5], start, end, end - start)), expected[1])
    seg[1, 5] = seg[1, 7] = torch.tensor([3.0, 3.5])  # without empty segments the union check may be skipped
    expected = tiou(seg, seg[torch.arange(3), torch.from_numpy(col)][:, None, :])
    assert torch.equal(picks_against_planes(seg, col, empty=False), expected)


def test_hard_nms_chain_needs_many_rounds():
    """Sliding windows with falling scores: each kept window's decision waits on the previous one."""
    segments = [[i / 4, i / 4 + 10.0] for i in range(300)]
    scores = [1.0 - i / 1000 for i in range(300)]
    seg, sc, _ = as_tensors(segments, scores, [0] * 300, torch.float64)
    expected = ref_hard(segments, scores, [0] * 300, 0.5)
    assert len(expected) > 20
    assert nms(seg, sc, 0.5).tolist() == expected


@pytest.mark.parametrize("after_rounds, budget", [(1, 16_000_000), (10**9, 16_000_000), (1, 0)])
def test_hard_nms_rounds_and_scan_decide_alike(monkeypatch, after_rounds, budget):
    """Rounds alone, the sequential scan after the first round, and a scan refused by its budget (rounds go
    on) all give the reference's picks, on random clusters and on a chain that needs hundreds of rounds."""
    import tal.ops.nms as nms_module

    monkeypatch.setattr(nms_module, "SCAN_AFTER_ROUNDS", after_rounds)
    monkeypatch.setattr(nms_module, "SCAN_BUDGET", budget)
    cases = [random_case(seed, 300, 3) for seed in range(4)]
    cases.append(([[i / 4, i / 4 + 10.0] for i in range(600)], [1.0 - i / 1000 for i in range(600)], [0] * 600))
    for segments, scores, labels in cases:
        seg, sc, lab = as_tensors(segments, scores, labels, torch.float64)
        assert batched_nms(seg, sc, lab, 0.5, block_size=128).tolist() == ref_hard(segments, scores, labels, 0.5)


def test_uncapped_hard_nms_decides_up_to_one_block_at_once(monkeypatch):
    """Uncapped, up to ONE_BLOCK candidates are decided in one block (no cross pairs between blocks);
    capped, and above ONE_BLOCK, blocks start at DEFAULT_BLOCK_SIZE. Same picks either way."""
    import tal.ops.nms as nms_module

    calls = []
    cross_pairs = nms_module._cross_pairs
    monkeypatch.setattr(nms_module, "_cross_pairs", lambda *args: calls.append(len(args[0])) or cross_pairs(*args))
    monkeypatch.setattr(nms_module, "DEFAULT_BLOCK_SIZE", 64)
    monkeypatch.setattr(nms_module, "ONE_BLOCK", 200)
    segments, scores, labels = random_case(21, 200, 3)
    seg, sc, lab = as_tensors(segments, scores, labels, torch.float64)
    expected = ref_hard(segments, scores, labels, 0.5)
    assert batched_nms(seg, sc, lab, 0.5).tolist() == expected and calls == []
    assert batched_nms(seg, sc, lab, 0.5, max_detections=len(sc)).tolist() == expected and len(calls) == 2
    calls.clear()
    more = random_case(22, 201, 3)
    seg, sc, lab = as_tensors(*more, torch.float64)
    assert batched_nms(seg, sc, lab, 0.5).tolist() == ref_hard(*more, 0.5) and len(calls) == 2


def test_hard_nms_matches_torchvision():
    """1D tIoU equals the 2D IoU of boxes of height 1, and torchvision's compiled NMS also drops IoU > t."""
    import torchvision
    g = torch.Generator().manual_seed(0)
    start = torch.rand(3000, generator=g, dtype=torch.float64) * 600
    seg = torch.stack([start, start + torch.rand(3000, generator=g, dtype=torch.float64) * 60], 1)
    sc = torch.rand(3000, generator=g, dtype=torch.float64)
    lab = torch.randint(0, 20, (3000,), generator=g)
    boxes = torch.stack([seg[:, 0], torch.zeros(3000, dtype=torch.float64), seg[:, 1],
                         torch.ones(3000, dtype=torch.float64)], 1)
    expected = torchvision.ops.batched_nms(boxes, sc, lab, 0.5)
    assert batched_nms(seg, sc, lab, 0.5).tolist() == expected.tolist()


# --- hand-computed cases ----------------------------------------------------------------------------


def test_hard_nms_by_hand():
    seg = torch.tensor([[0.0, 10.0], [1.0, 11.0], [20.0, 30.0], [0.0, 5.0]])
    sc = torch.tensor([0.9, 0.8, 0.7, 0.6])
    # tIoU(0, 1) = 9/11 > 0.5 drops 1; tIoU(0, 3) = 5/10 is not above 0.5, so 3 stays
    assert nms(seg, sc, 0.5).tolist() == [0, 2, 3]
    assert nms(seg, sc, 0.4).tolist() == [0, 2]
    assert nms(seg, sc, 0.9).tolist() == [0, 1, 2, 3]
    assert nms(seg, sc, 0.5, score_threshold=0.7).tolist() == [0, 2]
    assert nms(seg, sc, 0.5, max_detections=2).tolist() == [0, 2]


def test_batched_nms_by_hand():
    seg = torch.tensor([[0.0, 10.0], [1.0, 11.0], [20.0, 30.0], [0.0, 5.0]])
    sc = torch.tensor([0.9, 0.8, 0.7, 0.6])
    lab = torch.tensor([0, 1, 0, 0])
    # 1 is another class, so nothing suppresses it; 3 (tIoU 0.5 with 0) goes at 0.4
    assert batched_nms(seg, sc, lab, 0.4).tolist() == [0, 1, 2]
    assert batched_nms(seg, sc, torch.tensor([0, 0, 0, 1]), 0.4).tolist() == [0, 2, 3]


def test_soft_nms_linear_by_hand():
    seg = torch.tensor([[0.0, 10.0], [0.0, 5.0], [20.0, 30.0]], dtype=torch.float64)
    sc = torch.tensor([0.9, 0.8, 0.5], dtype=torch.float64)
    # pick 0; tIoU(0, 1) = 0.5 > 0.3 -> 0.8 * (1 - 0.5) = 0.4, now below segment 2
    keep, decayed = soft_nms(seg, sc, method="linear", iou_threshold=0.3)
    assert keep.tolist() == [0, 2, 1]
    assert decayed.tolist() == pytest.approx([0.9, 0.5, 0.4], abs=1e-12)
    # at iou_threshold 0.5 the overlap is not above it: no decay
    keep, decayed = soft_nms(seg, sc, method="linear", iou_threshold=0.5)
    assert keep.tolist() == [0, 1, 2]
    assert decayed.tolist() == pytest.approx([0.9, 0.8, 0.5], abs=1e-12)
    # the score floor applies after decay: 0.4 < 0.45 drops segment 1
    keep, decayed = soft_nms(seg, sc, method="linear", iou_threshold=0.3, score_threshold=0.45)
    assert keep.tolist() == [0, 2]
    keep, _ = soft_nms(seg, sc, method="linear", iou_threshold=0.3, max_detections=2)
    assert keep.tolist() == [0, 2]


def test_soft_nms_gaussian_by_hand():
    seg = torch.tensor([[0.0, 10.0], [0.0, 5.0], [20.0, 30.0], [2.0, 7.0]], dtype=torch.float64)
    sc = torch.tensor([0.9, 0.8, 0.5, 0.3], dtype=torch.float64)
    keep, decayed = soft_nms(seg, sc, method="gaussian", sigma=0.5)
    # pick 0 (0.9): 1 has tIoU 0.5 -> 0.8 e^-0.5 = 0.485; 3 has tIoU 0.5 -> 0.3 e^-0.5 = 0.182
    # pick 2 (0.5): overlaps nothing. pick 1 (0.485): tIoU(1, 3) = 3/7 -> 0.182 e^(-(9/49)/0.5)
    assert keep.tolist() == [0, 2, 1, 3]
    expected = [0.9, 0.5, 0.8 * math.exp(-0.5), 0.3 * math.exp(-0.5) * math.exp(-(9 / 49) / 0.5)]
    assert decayed.tolist() == pytest.approx(expected, abs=1e-12)
    # per class: 1 is alone in class 1, so it keeps 0.8
    keep, decayed = soft_nms(seg, sc, torch.tensor([0, 1, 0, 0]), method="gaussian", sigma=0.5)
    assert keep.tolist() == [0, 1, 2, 3]
    assert decayed.tolist() == pytest.approx([0.9, 0.8, 0.5, 0.3 * math.exp(-0.5)], abs=1e-12)


def test_score_voting_by_hand():
    seg = torch.tensor([[0.0, 10.0], [1.0, 11.0], [2.0, 12.0]], dtype=torch.float64)
    sc = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    keep = torch.tensor([0])
    # tIoU with segment 0: itself 1, segment 1 9/11 = 0.82, segment 2 8/12 = 0.67
    voted = score_voting(seg, sc, None, keep, 0.7, voting_weight="score")
    assert_segments(voted, [[(0.3 * 1) / 0.9, (0.6 * 10 + 0.3 * 11) / 0.9]])
    voted = score_voting(seg, sc, None, keep, 0.6, voting_weight="score")
    assert_segments(voted, [[0.5, 10.5]])
    # per class, segment 2 (class 1) does not vote for segment 0
    voted = score_voting(seg, sc, torch.tensor([0, 0, 1]), torch.tensor([0, 2]), 0.6, voting_weight="score")
    assert_segments(voted, [[1 / 3, 31 / 3], [2.0, 12.0]])


def test_score_voting_weights_by_score_times_tiou_as_actionformer():
    seg = torch.tensor([[0.0, 10.0], [1.0, 11.0], [2.0, 12.0]], dtype=torch.float64)
    sc = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    # ActionFormer's seg_voting: weights score x tIoU = 0.6 x 1 and 0.3 x 9/11 (segment 2: 8/12 < 0.7)
    w0, w1 = 0.6, 0.3 * 9 / 11
    expected = [[w1 / (w0 + w1), (10 * w0 + 11 * w1) / (w0 + w1)]]
    assert_segments(score_voting(seg, sc, None, torch.tensor([0]), 0.7), expected)
    out_seg, _, _ = postprocess_detections(seg, sc, method="hard", iou_threshold=0.5, voting_threshold=0.7)
    assert_segments(out_seg, expected)
    with pytest.raises(ValueError, match="voting_weight must be one of score-tiou, score"):
        score_voting(seg, sc, None, torch.tensor([0]), 0.7, voting_weight="tiou")


def test_float32_tiou_is_compared_with_the_threshold_in_float64():
    # tIoU([13, 20], [19, 23]) = 1/10; in float32 that is 0.10000000149 > 0.1, and torchvision
    # compares its float IoU with a double threshold, so it keeps one segment
    import torchvision
    seg = torch.tensor([[13.0, 20.0], [19.0, 23.0]])
    sc = torch.tensor([0.9, 0.8])
    boxes = torch.stack([seg[:, 0], torch.zeros(2), seg[:, 1], torch.ones(2)], 1)
    assert torchvision.ops.nms(boxes, sc, 0.1).tolist() == [0]
    assert nms(seg, sc, 0.1).tolist() == [0]
    keep, decayed = soft_nms(seg, sc, method="linear", iou_threshold=0.1)
    assert keep.tolist() == [0, 1] and decayed.tolist() == pytest.approx([0.9, 0.8 * 0.9])

def test_postprocess_hard_with_voting_by_hand():
    seg = torch.tensor([[0.0, 10.0], [1.0, 11.0], [2.0, 12.0], [30.0, 40.0]], dtype=torch.float64)
    sc = torch.tensor([0.6, 0.3, 0.1, 0.2], dtype=torch.float64)
    out_seg, out_sc, out_lab = postprocess_detections(seg, sc, method="hard", iou_threshold=0.5,
                                                      voting_threshold=0.6, voting_weight="score")
    # 1 and 2 are suppressed by 0 and vote for it with their input scores; 3 votes for itself alone
    assert_segments(out_seg, [[0.5, 10.5], [30.0, 40.0]])
    assert out_sc.tolist() == pytest.approx([0.6, 0.2])
    assert out_lab.tolist() == [0, 0]


def test_postprocess_soft_gaussian_votes_with_input_scores():
    seg = torch.tensor([[0.0, 10.0], [1.0, 11.0], [2.0, 12.0]], dtype=torch.float64)
    sc = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    out_seg, out_sc, _ = postprocess_detections(seg, sc, method="soft-gaussian", sigma=0.5, voting_threshold=0.7,
                                                voting_weight="score")
    # all three are kept; 1 is decayed by 0 (tIoU 9/11), 2 by 0 (8/12) and then by 1 (9/11)
    d1 = 0.3 * math.exp(-(9 / 11) ** 2 / 0.5)
    d2 = 0.1 * math.exp(-(8 / 12) ** 2 / 0.5) * math.exp(-(9 / 11) ** 2 / 0.5)
    assert out_sc.tolist() == pytest.approx([0.6, d1, d2], abs=1e-12)
    assert_segments(out_seg, [[1 / 3, 31 / 3], [0.5, 10.5], [1.25, 11.25]])


def test_postprocess_options_by_hand():
    seg = torch.tensor([[0.0, 10.0], [1.0, 11.0], [20.0, 30.0], [50.0, 60.0], [0.0, 9.0]])
    sc = torch.tensor([0.5, 0.9, 0.05, 0.7, 0.8])
    lab = torch.tensor([3, 3, 1, 1, 7])
    out_seg, out_sc, out_lab = postprocess_detections(seg, sc, lab, method="hard", iou_threshold=0.5)
    # 0 is suppressed by 1 (same class, 9/11); 4 is another class; sorted by score
    assert out_sc.tolist() == pytest.approx([0.9, 0.8, 0.7, 0.05])
    assert out_lab.tolist() == [3, 7, 1, 1]
    assert out_seg.tolist() == [[1.0, 11.0], [0.0, 9.0], [50.0, 60.0], [20.0, 30.0]]
    _, out_sc, out_lab = postprocess_detections(seg, sc, lab, method="hard", class_agnostic=True)
    assert out_lab.tolist() == [3, 1, 1]  # 4 (tIoU 8/11 with 1) now goes too
    _, out_sc, _ = postprocess_detections(seg, sc, lab, method="none", score_threshold=0.1, max_detections=3)
    assert out_sc.tolist() == pytest.approx([0.9, 0.8, 0.7])
    # pre-NMS top-2 keeps 1 and 4 only
    _, out_sc, out_lab = postprocess_detections(seg, sc, lab, method="hard", pre_nms_top_k=2)
    assert out_lab.tolist() == [3, 7]
    _, out_sc, _ = postprocess_detections(seg, sc, lab, method="soft-linear", iou_threshold=0.5, max_detections=2)
    assert out_sc.tolist() == pytest.approx([0.9, 0.8])


# --- edge cases -------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_empty_input(device):
    seg = torch.zeros(0, 2, device=device)
    sc = torch.zeros(0, device=device)
    lab = torch.zeros(0, dtype=torch.long, device=device)
    assert nms(seg, sc, 0.5).shape == (0,)
    assert batched_nms(seg, sc, lab, 0.5).shape == (0,)
    keep, decayed = soft_nms(seg, sc, lab, "gaussian")
    assert keep.shape == (0,) and decayed.shape == (0,)
    for method in ("hard", "soft-linear", "soft-gaussian", "none"):
        out_seg, out_sc, out_lab = postprocess_detections(seg, sc, lab, method=method, voting_threshold=0.7)
        assert out_seg.shape == (0, 2) and out_sc.shape == (0,) and out_lab.shape == (0,)
        assert out_seg.device.type == device
    # everything below the score floor is the same as no input
    out_seg, _, _ = postprocess_detections(torch.tensor([[0.0, 1.0]]), torch.tensor([0.1]), score_threshold=0.5)
    assert out_seg.shape == (0, 2)


def test_equal_scores_rank_by_input_index():
    seg = torch.tensor([[0.0, 10.0], [0.0, 10.0], [40.0, 50.0], [20.0, 30.0], [0.0, 10.0]])
    sc = torch.full((5,), 0.5)
    assert nms(seg, sc, 0.5).tolist() == [0, 2, 3]
    keep, decayed = soft_nms(seg, sc, method="linear", iou_threshold=0.5)
    # duplicates of 0 decay to 0 and come last, in input order
    assert keep.tolist() == [0, 2, 3, 1, 4]
    assert decayed.tolist() == [0.5, 0.5, 0.5, 0.0, 0.0]
    out_seg, _, _ = postprocess_detections(seg, sc, method="none")
    assert out_seg[:, 0].tolist() == [0.0, 0.0, 40.0, 20.0, 0.0]


def test_zero_length_segments_overlap_nothing():
    seg = torch.tensor([[5.0, 5.0], [5.0, 5.0], [0.0, 10.0], [5.0, 5.0]])
    sc = torch.tensor([0.9, 0.8, 0.7, 0.6])
    assert nms(seg, sc, 0.0).tolist() == [0, 1, 2, 3]
    keep, decayed = soft_nms(seg, sc, method="gaussian")
    assert keep.tolist() == [0, 1, 2, 3]
    assert decayed.tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6])
    voted = score_voting(seg, sc, None, torch.tensor([0, 2]), 0.5)
    assert not voted.isnan().any()
    assert voted.tolist() == [[5.0, 5.0], [0.0, 10.0]]


@pytest.mark.parametrize("fn", [
    lambda s, c: nms(s, c, 0.5),
    lambda s, c: soft_nms(s, c),
    lambda s, c: postprocess_detections(s, c, method="soft-linear"),
])
def test_nan_scores_are_refused(fn):
    seg = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    with pytest.raises(ValueError, match=r"scores contain NaN at index 1 \(2 of 3 not finite\)"):
        fn(seg, torch.tensor([0.5, math.nan, math.nan]))
    with pytest.raises(ValueError, match="scores contain an infinite value at index 2"):
        fn(seg, torch.tensor([0.5, 0.1, math.inf]))


def test_bad_segments_are_refused():
    sc = torch.tensor([0.5, 0.4])
    with pytest.raises(ValueError, match=r"nms: segment 1 ends before it starts \(\[3.0, 2.0\]\); 1 of 2"):
        nms(torch.tensor([[0.0, 1.0], [3.0, 2.0]]), sc, 0.5)
    with pytest.raises(ValueError, match="segment 0 is not finite"):
        soft_nms(torch.tensor([[math.nan, 1.0], [2.0, 3.0]]), sc)
    with pytest.raises(ValueError, match=r"segments must have shape \[N, 2\]"):
        nms(torch.zeros(2, 3), sc, 0.5)
    with pytest.raises(ValueError, match=r"scores must have shape \[2\]"):
        nms(torch.zeros(2, 2), torch.zeros(3), 0.5)
    with pytest.raises(ValueError, match="labels must be integers"):
        batched_nms(torch.zeros(2, 2), sc, torch.tensor([0.0, 1.0]), 0.5)


def test_bad_options_are_refused():
    seg, sc = torch.tensor([[0.0, 1.0]]), torch.tensor([0.5])
    with pytest.raises(ValueError, match=r"iou_threshold must be in \[0, 1\], got 1.5"):
        nms(seg, sc, 1.5)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        soft_nms(seg, sc, sigma=0.0)
    with pytest.raises(ValueError, match="unknown method 'soft'"):
        postprocess_detections(seg, sc, method="soft")
    with pytest.raises(ValueError, match="max_detections must be >= 1"):
        postprocess_detections(seg, sc, max_detections=0)
    with pytest.raises(ValueError, match=r"voting_threshold must be in \(0, 1\]"):
        postprocess_detections(seg, sc, voting_threshold=0.0)
    with pytest.raises(ValueError, match="scores must be >= 0; score 0 is -0.5"):
        postprocess_detections(seg, -sc, voting_threshold=0.5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_outputs_keep_dtype_and_device(dtype, device):
    segments, scores, labels = random_case(7, n=50, num_classes=2)
    seg, sc, lab = as_tensors(segments, scores, labels, dtype, device)
    for method in ("hard", "soft-linear", "soft-gaussian", "none"):
        out_seg, out_sc, out_lab = postprocess_detections(seg, sc, lab, method=method, voting_threshold=0.7,
                                                          max_detections=10)
        assert out_seg.dtype == dtype and out_sc.dtype == dtype and out_lab.dtype == torch.long
        assert {out_seg.device.type, out_sc.device.type, out_lab.device.type} == {device}
        assert out_seg.shape == (10, 2)
        assert out_sc.tolist() == sorted(out_sc.tolist(), reverse=True)
        assert not out_seg.isnan().any()


def test_adaptive_soft_nms_decays_only_above_bmn_threshold():
    # BMN's soft_nms (alpha 0.4, t1 0.5, t2 0.9, widths / video length 10): decay where tIoU > 0.5 + 0.4 * width
    seg = torch.tensor([[0.0, 4.0], [0.0, 3.0], [0.0, 2.0]], dtype=torch.float64)
    sc = torch.tensor([0.9, 0.8, 0.7], dtype=torch.float64)
    keep, decayed = soft_nms(seg, sc, method="adaptive", iou_threshold=0.5, sigma=0.4, high_threshold=0.9,
                             width_scale=10.0)
    # pick [0, 4] (limit 0.66): [0, 3] (tIoU 3/4) decays, [0, 2] (1/2) does not; pick [0, 2] (limit 0.58):
    # [0, 3] (tIoU 2/3) decays again
    assert keep.tolist() == [0, 2, 1]
    assert decayed.tolist() == pytest.approx([0.9, 0.7, 0.8 * math.exp(-0.5625 / 0.4) * math.exp(-(4 / 9) / 0.4)],
                                             abs=1e-12)
    out_seg, out_sc, _ = postprocess_detections(seg, sc, method="soft-adaptive", iou_threshold=0.5, sigma=0.4,
                                                width_scale=10.0)
    assert out_sc.tolist() == pytest.approx(decayed.tolist(), abs=1e-12)
    with pytest.raises(ValueError, match="adaptive soft NMS needs width_scale > 0"):
        soft_nms(seg, sc, method="adaptive")
