"""Anchor generation, centre/log-width coding, tIoU matching and negative mining, checked by hand."""
from __future__ import annotations

import math

import torch

from tal.models.anchors import (
    anchor_centres_widths,
    anchor_segments,
    decode_segments,
    encode_segments,
    match_segments,
    mine_negatives,
)


def test_anchor_segments_by_hand():
    # level 0: 2 positions at stride 2 (centres 1, 3); level 1: 1 position at stride 4 (centre 2)
    anchors = anchor_segments([2, 1], [2, 4], [0.5, 1.0, 2.0])
    expected = torch.tensor([
        [0.5, 1.5], [0.0, 2.0], [-1.0, 3.0],  # centre 1, widths 1, 2, 4
        [2.5, 3.5], [2.0, 4.0], [1.0, 5.0],  # centre 3
        [1.0, 3.0], [0.0, 4.0], [-2.0, 6.0],  # centre 2, widths 2, 4, 8
    ])
    torch.testing.assert_close(anchors, expected)
    _, _, level = anchor_centres_widths([2, 1], [2, 4], [0.5, 1.0, 2.0])
    assert level.tolist() == [0] * 6 + [1] * 3


def test_encode_by_hand_and_decode_inverts_it():
    anchors = torch.tensor([[0.0, 2.0], [0.0, 2.0]])  # centre 1, width 2
    segments = torch.tensor([[1.0, 3.0], [0.5, 4.5]])  # centre 2 width 2; centre 2.5 width 4
    offsets = encode_segments(segments, anchors)
    torch.testing.assert_close(offsets, torch.tensor([[5.0, 0.0], [7.5, math.log(2) / 0.1]]))
    torch.testing.assert_close(decode_segments(offsets, anchors), segments)

    generator = torch.Generator().manual_seed(0)
    anchors = anchor_segments([8, 4], [2, 4], [0.5, 1.0, 2.0])
    starts = torch.rand(len(anchors), generator=generator) * 20
    segments = torch.stack([starts, starts + 0.1 + torch.rand(len(anchors), generator=generator) * 30], dim=1)
    for scales in [(0.1, 0.1), (1.0, 0.5)]:
        round_trip = decode_segments(encode_segments(segments, anchors, scales), anchors, scales)
        torch.testing.assert_close(round_trip, segments, rtol=1e-5, atol=1e-4)


def test_match_two_ground_truths_by_hand():
    gt = torch.tensor([[0.0, 4.0], [6.0, 8.0], [0.0, 0.0]])  # the last one is padding
    gt_valid = torch.tensor([True, True, False])
    segments = torch.tensor([[0.0, 4.0], [1.0, 5.0], [2.0, 6.0], [5.0, 8.0], [6.0, 10.0], [20.0, 22.0]])
    best, index, positive = match_segments(segments, gt, gt_valid, threshold=0.5)
    # [1,5] vs [0,4]: 3 / 5; [2,6] vs [0,4]: 2 / 6; [5,8] vs [6,8]: 2 / 3; [6,10] vs [6,8]: 2 / 4
    torch.testing.assert_close(best, torch.tensor([1.0, 0.6, 1 / 3, 2 / 3, 0.5, 0.0]))
    assert index[:5].tolist() == [0, 0, 0, 1, 1]
    assert positive.tolist() == [True, True, False, True, False, False]  # 0.5 is not > 0.5


def test_match_batched_and_without_ground_truth():
    segments = torch.tensor([[[0.0, 4.0], [6.0, 8.0]], [[0.0, 4.0], [6.0, 8.0]]])  # [B=2, A=2, 2]
    gt = torch.tensor([[[6.0, 8.0]], [[6.0, 8.0]]])  # [2, 1, 2]
    gt_valid = torch.tensor([[True], [False]])  # the second video has no ground truth
    best, _, positive = match_segments(segments, gt, gt_valid, 0.5)
    assert best.tolist() == [[0.0, 1.0], [0.0, 0.0]]
    assert positive.tolist() == [[False, True], [False, False]]
    best, index, positive = match_segments(segments[0], gt[0, :0], gt_valid[0, :0], 0.5)
    assert best.tolist() == [0.0, 0.0] and index.tolist() == [0, 0] and not positive.any()


def test_mine_negatives_ratio_hard_and_invalid():
    best = torch.zeros(100)
    best[:4] = 0.8  # 4 positives
    predicted = torch.zeros(100)
    predicted[[2, 10, 11, 12]] = 0.9  # anchor 2 is positive, 10..12 are hard negatives
    valid = torch.ones(100, dtype=torch.bool)
    valid[50:] = False  # 46 valid candidates left: 13..49 and 4..9
    generator = torch.Generator().manual_seed(0)
    positive, hard, easy = mine_negatives(best, predicted, valid, 0.5, ratio=1.0, generator=generator)
    assert positive.nonzero().flatten().tolist() == [0, 1, 2, 3]
    assert hard.nonzero().flatten().tolist() == [10, 11, 12]
    assert int(easy.sum()) == 4
    assert not (easy & (positive | hard | ~valid)).any()

    _, _, easy = mine_negatives(best, predicted, valid, 0.5, ratio=3.0, generator=generator)
    assert int(easy.sum()) == 12
    _, _, easy = mine_negatives(best, predicted, valid, 0.5, ratio=100.0, generator=generator)
    assert int(easy.sum()) == 50 - 4 - 3  # every valid candidate
    positive, _, easy = mine_negatives(torch.zeros(100), predicted, valid, 0.5, ratio=1.0, generator=generator)
    assert not positive.any() and int(easy.sum()) == (50 - 4) // 2  # no positive: half of the candidates


def test_mine_negatives_is_uniform_over_candidates():
    best, predicted = torch.zeros(10), torch.zeros(10)
    best[0] = 1.0
    valid = torch.ones(10, dtype=torch.bool)
    generator = torch.Generator().manual_seed(0)
    counts = torch.zeros(10)
    for _ in range(900):
        counts += mine_negatives(best, predicted, valid, 0.5, ratio=1.0, generator=generator)[2].float()
    assert counts[0] == 0
    assert counts[1:].min() > 60 and counts[1:].max() < 140  # 100 expected each
