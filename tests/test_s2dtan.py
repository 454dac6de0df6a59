"""S-2D-TAN: per-scale maps and their segments by hand, max-IoU targets, loss, predict contract, a short fit."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tal.datasets.types import DetectionAnnotations, VideoAnnotation
from tal.errors import TalInputError
from tal.eval.predictions import SegmentPredictions
from tal.eval.proposals import evaluate_proposals
from tal.models.s2dtan import S2DTAN, ScaleMap, build_s2dtan, max_iou_targets, scale_maps
from tal.models.tan2d import scaled_iou_targets, sparse_map_mask
from tal.ops.segments import pairwise_tiou
from tal.registry import MODELS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DIM = 8
STEPS = 32  # num_clips 16 * frame_stride 2


def tiny_cfg(**overrides) -> dict:
    cfg = {"input_dim": DIM, "num_clips": 16, "frame_stride": 2, "scales": [8, 4], "hidden_dim": 16, "map_kernel": 3,
           "map_layers": 2}
    return {**cfg, **overrides}


def tiny_model(**overrides) -> S2DTAN:
    torch.manual_seed(0)
    return build_s2dtan(tiny_cfg(**overrides))


# ---------------------------------------------------------------- maps
def test_scale_maps_by_hand():
    # scale 0: 16 clips of 2 steps, lengths 1..8; scale 1: 8 clips of 4 steps, band 1..8, proposes 5..8
    assert scale_maps(16, [8, 4], frame_stride=2) == [ScaleMap(16, 2, 8, 0), ScaleMap(8, 4, 8, 4)]
    # 2D-TAN's grid: later scales propose lengths 9..16 of their own clips
    assert [(m.num_clips, m.span, m.first_proposal) for m in scale_maps(64, [16, 8, 8])] == [
        (64, 16, 0), (32, 16, 8), (16, 16, 8)]
    model = tiny_model()
    fine, coarse = model.heads
    assert int(fine.band_mask.sum()) == 16 + 15 + 14 + 13 + 12 + 11 + 10 + 9 == 100
    assert torch.equal(fine.proposal_mask, fine.band_mask) and len(fine.cells) == 100
    assert fine.band_mask[0, 7] and not fine.band_mask[0, 8] and not fine.band_mask[1, 0]
    assert fine.segments[:2].tolist() == [[0, 2], [2, 4]]  # clip i -> steps [2i, 2i + 2)
    assert fine.segments[-1].tolist() == [16, 32]  # the one 8-clip moment starting at clip 8
    assert int(coarse.band_mask.sum()) == 8 + 7 + 6 + 5 + 4 + 3 + 2 + 1 == 36  # context + proposals
    assert int(coarse.proposal_mask.sum()) == len(coarse.cells) == 4 + 3 + 2 + 1 == 10
    assert coarse.band_mask[0, 3] and not coarse.proposal_mask[0, 3] and coarse.proposal_mask[0, 4]
    # coarse cell (i, j) spans coarse clips i..j, i.e. steps [4i, 4(j + 1)); 5 clips = 20 steps up to 32
    assert coarse.segments.tolist() == [[0, 20], [4, 24], [8, 28], [12, 32], [0, 24], [4, 28], [8, 32],
                                        [0, 28], [4, 32], [0, 32]]
    assert model.proposals.shape == (110, 2)
    torch.testing.assert_close(model.proposals, torch.cat([fine.segments, coarse.segments]))


def test_proposals_of_all_scales_are_the_2dtan_sparse_candidates():
    model = build_s2dtan({"input_dim": 4, "num_clips": 64, "hidden_dim": 4, "map_kernel": 3, "map_layers": 2})
    assert model.scales == [16, 8, 8]
    # 1..16 of 64 clips, 9..16 of 32, 9..16 of 16
    assert [len(h.cells) for h in model.heads] == [16 * 65 - 136, 8 * 33 - 100, 8 * 17 - 100] == [904, 164, 36]
    starts, ends = sparse_map_mask(64).nonzero(as_tuple=True)
    candidates = {(int(s), int(e) + 1) for s, e in zip(starts, ends)}
    mine = [tuple(int(v) for v in segment) for segment in model.proposals]
    assert len(mine) == len(set(mine)) == 1104 and set(mine) == candidates


@pytest.mark.parametrize("num_clips, scales, message", [
    (15, [8, 4], r"model.scales=\[8, 4\] halves the clips 1 times, so model.num_clips must be a multiple of 2, got 15"),
    (16, [8, 8], r"model.scales=\[8, 8\]: scale 1 has 8 clips but would hold moments of up to 12 of them; give that "
                 r"scale at most 4 lengths"),
    (16, [17], r"scale 0 has 16 clips but would hold moments of up to 17"),
    (16, [8, 0], r"model.scales must be a non-empty list of positive integers"),
    (16, [], r"model.scales must be a non-empty list"),
])
def test_scales_that_do_not_fit_are_refused(num_clips, scales, message):
    with pytest.raises(TalInputError, match=message):
        scale_maps(num_clips, scales)


# ---------------------------------------------------------------- targets and loss
def test_max_iou_targets_over_the_ground_truth_set_by_hand():
    proposals = torch.tensor([[0.0, 1.0], [0.0, 2.0], [0.0, 3.0], [1.0, 3.0], [2.0, 4.0]])
    gt = [torch.tensor([[0.0, 1.0], [1.0, 3.0]]), torch.zeros(0, 2), torch.tensor([[2.0, 4.0]], dtype=torch.float64)]
    expected = torch.tensor([[1.0, 1 / 2, 2 / 3, 1.0, 1 / 3],  # [0, 3]: 1/3 with the first, 2/3 with the second
                             [0.0, 0.0, 0.0, 0.0, 0.0],  # no ground truth
                             [0.0, 0.0, 1 / 4, 1 / 3, 1.0]])
    torch.testing.assert_close(max_iou_targets(proposals, gt), expected)


def random_batch(batch_size: int = 3, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    segments = [torch.tensor([[2.0, 9.0], [14.0, 30.0]]), torch.zeros(0, 2), torch.tensor([[0.0, 32.0]])]
    return {"features": torch.randn(batch_size, STEPS, DIM, generator=gen),
            "mask": torch.ones(batch_size, STEPS, dtype=torch.bool), "segments": segments[:batch_size],
            "labels": [torch.zeros(len(s), dtype=torch.long) for s in segments[:batch_size]]}


def test_loss_weighs_the_scales_equally_as_ms_2d_tan():
    """MS-2D-TAN (run.py) adds each scale's own mean BCE: the 10 long-proposal cells of scale 1 count as
    much as the 100 cells of scale 0."""
    model = tiny_model(loss={"min_iou": 0.3, "max_iou": 0.9})
    batch = random_batch()
    out = model(batch)
    assert set(out) == {"loss", "loss_scale0", "loss_scale1"}
    torch.testing.assert_close(out["loss"].detach(), out["loss_scale0"] + out["loss_scale1"])
    logits = [h.proposal_logits(lg) for h, lg in zip(model.heads, model.scale_logits(batch))]  # [B, 100], [B, 10]
    target = scaled_iou_targets(max_iou_targets(model.proposals, batch["segments"]), 0.3, 0.9).split([100, 10], 1)
    by_hand = sum(F.binary_cross_entropy_with_logits(lg, t) for lg, t in zip(logits, target))
    torch.testing.assert_close(out["loss"], by_hand)
    with pytest.raises(TalInputError, match="model.loss.scale_weighting must be one of equal, cells, got 'area'"):
        tiny_model(loss={"scale_weighting": "area"})


def test_cells_weighting_is_the_bce_over_every_proposal_cell():
    model = tiny_model(loss={"min_iou": 0.3, "max_iou": 0.9, "scale_weighting": "cells"})
    batch = random_batch()
    out = model(batch)
    torch.testing.assert_close(out["loss"].detach(), (100 * out["loss_scale0"] + 10 * out["loss_scale1"]) / 110)
    # the same number straight from the proposal list: BCE of each cell against its scaled max IoU
    logits = torch.cat([h.proposal_logits(lg) for h, lg in zip(model.heads, model.scale_logits(batch))], dim=1)
    target = scaled_iou_targets(max_iou_targets(model.proposals, batch["segments"]), 0.3, 0.9)  # [B, 110]
    torch.testing.assert_close(out["loss"], F.binary_cross_entropy_with_logits(logits, target))
    out["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())


def test_conv_cells_train_too():
    model = tiny_model(prop="conv")
    out = model(random_batch())
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())


# ---------------------------------------------------------------- predict
def test_predict_contract_and_hard_nms():
    model = tiny_model().eval()
    batch = random_batch()
    batch["mask"][1, 20:] = False  # video 1 has 20 valid steps
    outputs = model.predict(batch)
    assert len(outputs) == 3
    for b, (segments, scores, labels) in enumerate(outputs):
        assert segments.shape == (len(scores), 2) and labels.shape == scores.shape
        assert 0 < len(scores) <= 100 and labels.dtype == torch.long and not labels.any()
        assert bool((scores[:-1] >= scores[1:]).all())
        assert float(segments.min()) >= 0 and float(segments.max()) <= (20 if b == 1 else STEPS)
        assert bool((segments[:, 1] > segments[:, 0]).all())
        overlap = pairwise_tiou(segments, segments).fill_diagonal_(0)
        assert float(overlap.max()) <= 0.5


def test_steps_after_the_mask_do_not_matter():
    model = tiny_model().eval()
    batch = random_batch(batch_size=1)
    batch["mask"][0, 20:] = False
    clean = model.predict(batch)[0]
    batch["features"][0, 20:] = 100 * torch.randn(STEPS - 20, DIM)
    for a, b in zip(clean, model.predict(batch)[0]):
        torch.testing.assert_close(a, b)


def test_nms_settings_and_max_proposals_reach_post_processing():
    model = tiny_model().eval()
    batch = random_batch(batch_size=1)
    model.nms = {"method": "none"}
    assert len(model.predict(batch)[0][1]) == 100  # 110 cells, capped
    model.max_proposals = 7
    segments, scores, _ = model.predict(batch)[0]
    assert len(scores) == 7
    model.nms = {"method": "soft-gaussian", "sigma": 0.5}
    soft_segments, soft_scores, _ = model.predict(batch)[0]
    assert len(soft_scores) == 7  # decayed, not dropped
    torch.testing.assert_close(soft_scores[0], scores[0])  # the best is never decayed
    assert float(soft_scores[1]) < float(scores[1])


def test_features_of_the_wrong_length_are_refused():
    model = tiny_model()
    batch = random_batch()
    batch["features"] = batch["features"][:, :30]
    with pytest.raises(TalInputError, match=r"s2dtan expects features \[B, num_clips \* frame_stride = 32, D\], got "
                                            r"\[3, 30, 8\]; rescale each video to 32 steps"):
        model(batch)


# ---------------------------------------------------------------- a short fit
LENGTHS = [4, 6, 8, 12, 16, 24, 32]


def synthetic_set(num_videos: int, seed: int) -> dict:
    """Noise, plus a fixed signature vector on the steps of one action per video (length from LENGTHS)."""
    gen = torch.Generator().manual_seed(seed)
    signature = torch.zeros(DIM)
    signature[:2] = torch.tensor([1.5, 1.0])
    features, segments = 0.5 * torch.randn(num_videos, STEPS, DIM, generator=gen), []
    for b in range(num_videos):
        length = LENGTHS[int(torch.randint(len(LENGTHS), (1,), generator=gen))]
        start = int(torch.randint(0, STEPS - length + 1, (1,), generator=gen))
        features[b, start:start + length] += signature
        segments.append(torch.tensor([[float(start), float(start + length)]]))
    return {"features": features, "mask": torch.ones(num_videos, STEPS, dtype=torch.bool), "segments": segments}


def ground_truth(batch: dict) -> DetectionAnnotations:
    videos = {f"v{b}": VideoAnnotation(f"v{b}", "val", float(STEPS), s.double().numpy(), ["action"] * len(s))
              for b, s in enumerate(batch["segments"])}
    return DetectionAnnotations(videos, ["action"], "synthetic")


def top10(per_video: list[tuple[torch.Tensor, torch.Tensor]]) -> SegmentPredictions:
    """The 10 best proposals of every video (so AR@10 with max_avg_proposals=10 is the top-10 recall)."""
    segments, scores = [], []
    for s, score in per_video:
        order = torch.argsort(score, descending=True, stable=True)[:10]
        assert len(order) == 10
        segments.append(s[order].double().numpy())
        scores.append(score[order].double().numpy())
    return SegmentPredictions([f"v{b}" for b in range(len(per_video))], np.full(len(per_video), 10),
                              np.concatenate(segments), np.concatenate(scores), None, "proposals")


def sliding_windows(num_videos: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Windows of 4, 8, 16 and 32 steps at half-length strides (26 per video), ranked at random."""
    gen = torch.Generator().manual_seed(0)
    windows = torch.tensor([[s, s + w] for w in (4, 8, 16, 32) for s in range(0, STEPS - w + 1, w // 2)],
                           dtype=torch.float32)
    return [(windows, torch.rand(len(windows), generator=gen)) for _ in range(num_videos)]


def test_short_fit_lowers_the_loss_and_beats_sliding_windows_on_ar10():
    model = tiny_model()
    train, test = synthetic_set(32, seed=0), synthetic_set(64, seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    losses = []
    for _ in range(60):
        loss = model(train)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < 0.4 * sum(losses[:5])
    model.eval()
    gt = ground_truth(test)
    ours = evaluate_proposals(gt, top10([(s, p) for s, p, _ in model.predict(test)]), max_avg_proposals=10)
    baseline = evaluate_proposals(gt, top10(sliding_windows(64)), max_avg_proposals=10)
    # about 0.65 against 0.35 at AR@10, and 0.37 against 0.02 at AR@1
    assert ours.ar_at[10] > baseline.ar_at[10] + 0.2, (ours.ar_at, baseline.ar_at)
    assert ours.ar_at[1] > baseline.ar_at[1] + 0.2, (ours.ar_at, baseline.ar_at)


# ---------------------------------------------------------------- builder
def test_registry_builds_a_proposal_head():
    model = MODELS.build(tiny_cfg(name="s2dtan", nms={"method": "soft-linear", "iou_threshold": 0.6},
                                  max_proposals=50, loss={"min_iou": 0.3}))
    assert isinstance(model, S2DTAN) and S2DTAN.proposal_head is True
    assert model.nms == {"method": "soft-linear", "iou_threshold": 0.6} and model.max_proposals == 50
    assert (model.min_iou, model.max_iou, model.bias) == (0.3, 1.0, 0.0)
    assert build_s2dtan({"input_dim": 4, "num_clips": 32, "hidden_dim": 4}).scales == [16, 8]  # 2D-TAN's default


@pytest.mark.parametrize("overrides, message", [
    ({"dropout": 0.1}, r"unknown model key\(s\) for s2dtan \['dropout'\]"),
    ({"loss": {"iou_low": 0.5}}, r"unknown model.loss key\(s\) \['iou_low'\]; known: \['bias', 'max_iou', 'min_iou', "
                                        r"'scale_weighting'\]"),
    ({"nms": {"threshold": 0.5}}, r"unknown model.nms key\(s\) \['threshold'\]"),
    ({"nms": {"max_detections": 10}}, r"^model.nms.max_detections is not used by s2dtan: set model.max_proposals"),
    ({"prop": "mean"}, r"^model.prop must be 'pool' or 'conv', got 'mean'$"),
    ({"max_proposals": 0}, r"^model.max_proposals must be a positive integer, got 0$"),
    ({"frame_stride": 1.5}, r"^model.frame_stride must be a positive integer, got 1.5$"),
    ({"map_kernel": 4, "map_layers": 1}, r"\(map_kernel - 1\) \* map_layers must be even"),
    ({"loss": {"min_iou": 0.7, "max_iou": 0.5}}, r"0 <= min_iou < max_iou <= 1, got min_iou=0.7, max_iou=0.5"),
    ({"scales": [8, 8]}, r"scale 1 has 8 clips"),
])
def test_builder_refuses_bad_settings(overrides, message):
    with pytest.raises(TalInputError, match=message):
        build_s2dtan(tiny_cfg(**overrides))


def test_builder_needs_input_dim():
    with pytest.raises(TalInputError, match=r"^model.input_dim \(the feature dimension D\) is required for s2dtan$"):
        build_s2dtan({"num_clips": 16})
