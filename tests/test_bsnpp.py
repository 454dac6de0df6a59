"""BSN++: bi-directional fusion, map geometry and sampling, targets, IoU- and scale-balanced sampling, losses,
a short fit that beats sliding windows, builder errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tal.datasets.types import DetectionAnnotations, VideoAnnotation
from tal.errors import TalInputError
from tal.eval.predictions import SegmentPredictions
from tal.eval.proposals import evaluate_proposals
from tal.models.bsnpp import (
    BSNPP,
    backward_to_forward,
    balanced_bce,
    boundary_candidates,
    boundary_targets,
    build_bsnpp,
    duration_bins,
    fuse_boundaries,
    iou_balanced_sample,
    map_sampling_matrix,
    proposal_map,
    reverse_steps,
    scale_balanced_weights,
)
from tal.models.layers import sample_segment_features
from tal.registry import MODELS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

T, D = 32, 8


def tiny_cfg(**overrides) -> dict:
    cfg = {"input_dim": D, "num_steps": T, "base_dim": 16, "cbg_dim": 16, "map_dim": 16, "num_samples": 4,
           "attention_pool": 2}
    return {**cfg, **overrides}


def tiny_model(**overrides) -> BSNPP:
    torch.manual_seed(0)
    return build_bsnpp(tiny_cfg(**overrides))


# ---------------------------------------------------------------------------------------------------
# bi-directional boundary matching


def test_reverse_steps_reverses_the_valid_prefix_only():
    x = torch.arange(12.0).view(2, 6)
    out = reverse_steps(x, torch.tensor([6, 4]))
    assert out.tolist() == [[5, 4, 3, 2, 1, 0], [9, 8, 7, 6, 10, 11]]
    torch.testing.assert_close(reverse_steps(out, torch.tensor([6, 4])), x)


def test_fusion_by_hand_a_backward_end_peak_becomes_a_forward_start():
    # forward pass: start peak at step 2 (0.9), end peak at step 4 (0.8); everything else 0.1
    forward = torch.full((1, 2, 6), 0.1)
    forward[0, 0, 2], forward[0, 1, 4] = 0.9, 0.8
    # backward pass over the reversed video (step t <-> 5 - t): its END peak at reversed step 3 is the
    # forward START at step 2; its START peak at reversed step 1 is the forward END at step 4
    backward = torch.full((1, 2, 6), 0.1)
    backward[0, 1, 3], backward[0, 0, 1] = 0.4, 0.2
    aligned = backward_to_forward(backward, torch.tensor([6]))
    assert aligned[0, 0].argmax() == 2 and aligned[0, 1].argmax() == 4
    fused = fuse_boundaries(forward, backward, torch.tensor([6]))
    expected = torch.full((2, 6), 0.1)
    expected[0, 2], expected[1, 4] = math.sqrt(0.9 * 0.4), math.sqrt(0.8 * 0.2)
    torch.testing.assert_close(fused[0], expected)
    # with 2 padding steps the reversal is within the first 4 steps: reversed step 3 -> forward step 0
    fused = fuse_boundaries(forward, backward, torch.tensor([4]))
    assert fused[0, 0, 0] == pytest.approx(math.sqrt(0.1 * 0.4))
    assert fused[0, 1, 2] == pytest.approx(math.sqrt(0.1 * 0.2))  # backward start at 1 -> forward end at 4 - 1 - 1


def test_model_is_symmetric_under_time_reversal():
    """Fused starts of a video are the re-reversed fused ends of the reversed video (and with padding)."""
    model = tiny_model().eval()
    torch.manual_seed(1)
    features = torch.randn(2, T, D)
    mask = torch.ones(2, T, dtype=torch.bool)
    mask[1, 20:] = False
    num_valid = mask.sum(1)
    fused = model.outputs(features, mask)["boundary"]  # [B, 2, T]
    fused_reversed = model.outputs(reverse_steps(features, num_valid), mask)["boundary"]
    torch.testing.assert_close(fused, backward_to_forward(fused_reversed, num_valid), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------
# proposal map


def test_proposal_map_cells_and_valid_mask():
    segments, valid = proposal_map(6, 4)
    assert segments.shape == (4, 6, 2) and valid.shape == (4, 6)
    assert segments[0, 0].tolist() == [0, 1] and segments[3, 2].tolist() == [2, 6] and segments[3, 5].tolist() == [5, 9]
    expected = torch.tensor([[s + d + 1 <= 6 for s in range(6)] for d in range(4)])
    assert valid.tolist() == expected.tolist() and int(valid.sum()) == 6 + 5 + 4 + 3


def test_sampling_matrix_by_hand_and_against_sample_segment_features():
    # [4, 6] extended by half its length on each side is [3, 7]: 4 points at 3.5 .. 6.5, the centres of
    # features 3 .. 6; [0, 2] extended is [-1, 3]: its first point (-0.5) is outside (0), then features 0, 1, 2
    matrix = map_sampling_matrix(torch.tensor([[4.0, 6.0], [0.0, 2.0]]), 10, 4, 0.5).to_dense().view(2, 4, 10)
    expected = torch.zeros(2, 4, 10)
    expected[0, [0, 1, 2, 3], [3, 4, 5, 6]] = 1.0
    expected[1, [1, 2, 3], [0, 1, 2]] = 1.0
    assert matrix.tolist() == expected.tolist()
    segments = torch.tensor([[1.0, 2.5], [0.0, 10.0], [7.2, 9.9]])
    features = torch.randn(10, 5)
    sampled = (map_sampling_matrix(segments, 10, 3, 0.0).to_dense().view(3, 3, 10) @ features)  # [N, P, 5]
    direct = sample_segment_features(features[None], torch.tensor([10]), torch.zeros(3, dtype=torch.long), segments, 3)
    torch.testing.assert_close(sampled, direct)


def test_cell_features_match_per_cell_sampling():
    """The sparse product equals sampling each cell and applying one linear layer per sample point."""
    model = tiny_model(max_duration=10)
    torch.manual_seed(2)
    base = torch.randn(2, 16, T)
    grid = model.cell_features(base)  # [B, C, D, T]
    assert grid.shape == (2, 16, 10, T)
    d, s = 3, 5  # cell [5, 9], extended to [3, 11]
    points = sample_segment_features(base.transpose(1, 2), torch.tensor([T, T]), torch.tensor([0, 1]),
                                     torch.tensor([[3.0, 11.0], [3.0, 11.0]]), 4)  # [B, P, 16]
    weight = model.sample_proj.weight[:, :, 0].view(4, 16, 16)  # [P, C_out, C_in]
    expected = torch.relu(torch.einsum("bpi,poi->bo", points, weight) + model.sample_bias)
    torch.testing.assert_close(grid[:, :, d, s], expected, rtol=1e-5, atol=1e-5)
    assert not grid[:, :, 9, 23:].any() and grid[:, :, 9, 22].any()  # [23, 33] ends after step 32: invalid


def test_output_shapes_and_a_shorter_video():
    model = tiny_model(max_duration=12).eval()
    mask = torch.ones(2, T, dtype=torch.bool)
    mask[1, 20:] = False
    out = model.outputs(torch.randn(2, T, D), mask)
    assert out["forward"].shape == out["backward"].shape == out["boundary"].shape == (2, 2, T)
    assert out["map"].shape == (2, 2, 12, T) and out["cell_valid"].shape == (2, 12, T)
    ends = model.cell_segments[..., 1]
    assert out["cell_valid"][0].tolist() == (ends <= T).tolist()
    assert out["cell_valid"][1].tolist() == (ends <= 20).tolist()
    assert not out["map"][~out["cell_valid"][:, None].expand_as(out["map"])].any()
    segments, scores, labels = model.predict({"features": torch.randn(2, T, D), "mask": mask})[1]
    assert len(scores) > 0 and float(segments.max()) <= 20.0


def test_features_of_another_length_are_refused():
    with pytest.raises(TalInputError, match=r"features have 40 steps but this BSN\+\+ model was built for "
                                            r"model.num_steps=32: rescale every video to 32 features"):
        tiny_model().outputs(torch.randn(1, 40, D), torch.ones(1, 40, dtype=torch.bool))


# ---------------------------------------------------------------------------------------------------
# targets and losses


def test_boundary_targets_by_hand():
    # [10, 30]: regions of width max(1, 0.1 * 20) = 2 around 10 and 30. Start anchor of step t is
    # [t - 0.5, t + 0.5], end anchor [t + 0.5, t + 1.5].
    targets = boundary_targets(torch.tensor([[[10.0, 30.0], [0.0, 0.0]]]), torch.tensor([[True, False]]), 40, 0.1, 1.0)
    assert targets.shape == (1, 2, 40)
    start, end = targets[0]
    assert start[8:13].tolist() == [0.0, 0.5, 1.0, 0.5, 0.0] and float(start.sum()) == 2.0
    assert end[27:32].tolist() == [0.0, 0.5, 1.0, 0.5, 0.0] and float(end.sum()) == 2.0
    short = boundary_targets(torch.tensor([[[4.25, 6.0]]]), torch.tensor([[True]]), 10, 0.1, 1.0)[0]
    assert short[0, 3:6].tolist() == [0.0, 0.75, 0.25]  # region [3.75, 4.75]


def test_balanced_bce_by_hand():
    logits = torch.tensor([0.0, 0.0, 0.0])
    both = balanced_bce(logits, torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 1.0]))
    assert float(both) == pytest.approx(math.log(2))
    logits = torch.tensor([2.0, -1.0, 3.0])
    value = balanced_bce(logits, torch.tensor([2.0, 1.0, 0.0]), torch.tensor([0.0, 0.0, 1.0]))
    softplus = torch.nn.functional.softplus
    expected = (0.5 * (2 * softplus(torch.tensor(-2.0)) + softplus(torch.tensor(1.0))) / 3
                + 0.5 * softplus(torch.tensor(3.0)))
    assert float(value) == pytest.approx(float(expected))
    assert float(balanced_bce(logits, torch.zeros(3), torch.ones(3))) == pytest.approx(
        0.5 * float(softplus(logits).mean()))  # no positives: only the negative half


def test_iou_balanced_sampling_keeps_the_bins_balanced():
    iou = torch.zeros(2, 6, 10)
    iou[0, 0, :3] = 0.8  # 3 high
    iou[1, 1, :2] = 0.95  # 2 more high: 5 over the batch
    iou[0, 2, :] = 0.5  # 10 medium
    iou[1, 3, :4] = 0.31  # 4 more medium
    iou[1, 4, :7] = 0.1  # 7 low; the other 74 valid cells overlap nothing (IoU 0)
    valid = torch.ones(2, 6, 10, dtype=torch.bool)
    valid[:, 5] = False  # 100 valid cells: 5 high, 14 medium, 7 low, 74 zero
    for seed in range(3):
        high, medium, low = iou_balanced_sample(iou, valid, 0.3, 0.7, torch.Generator().manual_seed(seed))
        assert int(high.sum()) == int(medium.sum()) == int(low.sum()) == 5
        assert bool((iou[high] > 0.7).all())
        assert bool(((iou[medium] > 0.3) & (iou[medium] <= 0.7)).all())
        assert bool(((iou[low] > 0) & (iou[low] <= 0.3)).all())  # BMN's low bin: 0 < IoU <= 0.3
        assert not (high | medium | low)[~valid].any()
    iou[0, 2, 1:] = 0.0  # only 1 + 4 = 5 medium left, and 1 more high: the medium bin gives all it has
    iou[0, 4, 0] = 0.9
    high, medium, low = iou_balanced_sample(iou, valid, 0.3, 0.7, torch.Generator().manual_seed(0))
    assert (int(high.sum()), int(medium.sum()), int(low.sum())) == (6, 5, 6)


def test_scale_balanced_resampling_gives_equal_counts_per_duration_bin():
    # 8 duration rows in 4 bins of 2 rows; positives per bin: 12, 3, 0, 1 -> every non-empty bin gets
    # q = round(16 / 3) = 5 samples: bin 0 keeps 5 of its 12 once, bin 1 gives its 3 cells 2, 2, 1
    # samples, bin 3 repeats its single cell 5 times
    row_bin = duration_bins(8, 4)
    assert row_bin.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    positive = torch.zeros(2, 8, 10, dtype=torch.bool)
    positive[0, 0, :7] = True
    positive[1, 1, :5] = True
    positive[0, 2, [1, 4]] = True
    positive[1, 3, 9] = True
    positive[1, 7, 0] = True
    chosen = []
    for seed in range(3):
        weights = scale_balanced_weights(positive, row_bin, torch.Generator().manual_seed(seed))
        assert not weights[~positive].any()
        per_bin = weights.sum(dim=(0, 2)).view(4, 2).sum(dim=1)
        assert per_bin.tolist() == [5.0, 5.0, 0.0, 5.0]
        assert sorted(weights[:, :2][positive[:, :2]].tolist()) == [0.0] * 7 + [1.0] * 5
        assert sorted(weights[:, 2:4][positive[:, 2:4]].tolist()) == [1.0, 2.0, 2.0]
        assert weights[1, 7, 0] == 5.0
        chosen.append(weights[:, :2].nonzero().tolist())
    assert chosen[0] != chosen[1] or chosen[1] != chosen[2]  # which cells of bin 0 is random
    assert not scale_balanced_weights(torch.zeros(1, 8, 10, dtype=torch.bool), row_bin).any()


def test_boundary_candidates_by_hand():
    prob = torch.tensor([[0.1, 0.5, 0.2, 0.3, 0.25, 0.9]])
    valid = torch.ones(1, 6, dtype=torch.bool)
    # peaks: 1, 3 and 5 (beyond the end is -inf); above 0.5 * 0.9: 1 and 5
    assert boundary_candidates(prob, valid, 0.5)[0].nonzero()[:, 0].tolist() == [1, 3, 5]
    assert boundary_candidates(prob, valid, 0.2)[0].nonzero()[:, 0].tolist() == [1, 2, 3, 4, 5]
    valid[0, 5] = False  # max 0.5 now; step 4 is no peak (0.3 before it) and not above 0.25
    assert boundary_candidates(prob, valid, 0.5)[0].nonzero()[:, 0].tolist() == [1, 3]

    # BMN's post_processing forces the first start and the last end in (start_bins[0] = end_bins[-1] = 1)
    assert boundary_candidates(prob, valid, 0.5, "first")[0].nonzero()[:, 0].tolist() == [0, 1, 3]
    assert boundary_candidates(prob, valid, 0.5, "last")[0].nonzero()[:, 0].tolist() == [1, 3, 4]


def test_proposal_scores_are_bmns_plain_product_with_forced_ends():
    # BMN: score = start * end * clr * reg over candidates that include the first start and the last end
    model = tiny_model().eval()
    x = torch.randn(1, T, D, generator=torch.Generator().manual_seed(0))
    batch = {"features": x, "mask": torch.ones(1, T, dtype=torch.bool)}
    out = model.outputs(x, batch["mask"])
    start, end = out["boundary"][0]
    conf = out["map"][0].sigmoid()
    model.nms = {"method": "none"}
    model.max_proposals = 10**6
    segments, scores, _ = model.predict(batch)[0]
    first, last = segments[:, 0] == 0, segments[:, 1] == T
    assert first.any() and last.any()
    s, e = segments[:, 0].long(), segments[:, 1].long()
    expected = start[s] * end[e - 1] * conf[0, e - s - 1, s] * conf[1, e - s - 1, s]
    torch.testing.assert_close(scores, expected)


def test_map_regression_loss_is_half_the_mean_squared_error(monkeypatch):
    # BMN's pem_reg_loss: 0.5 * sum(weights * (pred - iou)^2) / sum(weights)
    import tal.models.bsnpp as bsnpp_module

    monkeypatch.setattr(bsnpp_module, "iou_balanced_sample",
                        lambda iou, valid, *a, **k: (valid, torch.zeros_like(valid), torch.zeros_like(valid)))
    monkeypatch.setattr(bsnpp_module, "scale_balanced_weights", lambda positive, bins, *a: positive.float())
    model = tiny_model()
    x = torch.randn(1, T, D, generator=torch.Generator().manual_seed(1))
    out = model.outputs(x, torch.ones(1, T, dtype=torch.bool))
    gt, gt_valid = torch.tensor([[[2.0, 9.0]]]), torch.ones(1, 1, dtype=torch.bool)
    losses = model._map_losses(out, gt, gt_valid)
    iou = bsnpp_module.iou_map_targets(model.cell_segments, gt, gt_valid)[out["cell_valid"]]
    reg = out["map"][:, 0].sigmoid()[out["cell_valid"]]
    assert losses["map_reg"].item() == pytest.approx(0.5 * ((reg - iou) ** 2).mean().item(), rel=1e-5)


# ---------------------------------------------------------------------------------------------------
# training and inference


def synthetic_set(num_videos: int, seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Videos of T steps: noise everywhere plus one fixed signature vector inside 1-2 segments of 3-12 steps."""
    generator = torch.Generator().manual_seed(seed)
    signature = 2.0 * torch.nn.functional.normalize(torch.randn(D, generator=torch.Generator().manual_seed(123)), dim=0)
    features, segments = 0.5 * torch.randn(num_videos, T, D, generator=generator), []
    for video in features:
        start, spans = int(torch.randint(0, 4, (1,), generator=generator)), []
        for _ in range(int(torch.randint(1, 3, (1,), generator=generator))):
            length = int(torch.randint(3, 13, (1,), generator=generator))
            if start + length > T:
                break
            video[start:start + length] += signature
            spans.append([start, start + length])
            start += length + int(torch.randint(2, 6, (1,), generator=generator))
        segments.append(torch.tensor(spans, dtype=torch.float32))
    return features, segments


def batch_of(features: torch.Tensor, segments: list[torch.Tensor]) -> dict:
    return {"features": features, "mask": torch.ones(features.shape[:2], dtype=torch.bool), "segments": segments,
            "labels": [torch.zeros(len(s), dtype=torch.long) for s in segments]}


def test_loss_parts_and_a_video_without_ground_truth():
    model = tiny_model()
    features, segments = synthetic_set(2, 0)
    out = model(batch_of(features, [segments[0], torch.zeros(0, 2)]))
    assert set(out) == {"loss", "loss_boundary", "loss_map_reg", "loss_map_cls", "loss_consistency"}
    total = out["loss_boundary"] + 10 * out["loss_map_reg"] + out["loss_map_cls"]
    torch.testing.assert_close(out["loss"].detach(), total)
    assert all(bool(torch.isfinite(v)) for v in out.values())
    out["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())
    weighted = tiny_model(loss_weights={"consistency": 2.0})(batch_of(features, [segments[0], torch.zeros(0, 2)]))
    parts = {k: weighted[f"loss_{k}"] for k in ("boundary", "map_reg", "map_cls", "consistency")}
    torch.testing.assert_close(weighted["loss"].detach(), parts["boundary"] + 10 * parts["map_reg"] + parts["map_cls"]
                               + 2 * parts["consistency"])


def train(model: BSNPP, features: torch.Tensor, segments: list[torch.Tensor], steps: int, batch_size: int,
          lr: float) -> list[float]:
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        index = torch.randperm(len(features))[:batch_size].tolist()
        loss = model(batch_of(features[index], [segments[i] for i in index]))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_loss_goes_down_on_a_tiny_batch():
    features, segments = synthetic_set(2, 0)
    losses = train(tiny_model(), features, segments, 30, 2, 5e-3)
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


def annotations_of(segments: list[torch.Tensor]) -> DetectionAnnotations:
    videos = {f"v{i}": VideoAnnotation(f"v{i}", "test", float(T), s.double().numpy().reshape(-1, 2), ["x"] * len(s))
              for i, s in enumerate(segments)}
    return DetectionAnnotations(videos, ["x"], "synthetic")


def predictions_of(per_video: list[tuple[np.ndarray, np.ndarray]]) -> SegmentPredictions:
    """Feature steps are seconds here (the annotations say duration T)."""
    return SegmentPredictions([f"v{i}" for i in range(len(per_video))], np.array([len(s) for _, s in per_video]),
                              np.concatenate([seg for seg, _ in per_video]).reshape(-1, 2).astype(np.float64),
                              np.concatenate([s for _, s in per_video]).astype(np.float64), None)


def sliding_windows(features: torch.Tensor, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Baseline: windows of 4, 8, 16, 32 steps at half-length strides, ranked by the mean feature norm inside."""
    norm = features.norm(dim=1)  # [T]
    windows = [(s, s + length) for length in (4, 8, 16, 32) for s in range(0, T - length + 1, length // 2)]
    scores = np.array([float(norm[s:e].mean()) for s, e in windows])
    order = np.argsort(-scores, kind="stable")[:top_k]
    return np.array(windows, dtype=np.float64)[order], scores[order]


def test_short_fit_beats_sliding_windows_at_ar10():
    train_features, train_segments = synthetic_set(32, 0)
    test_features, test_segments = synthetic_set(16, 1)
    model = tiny_model()
    losses = train(model, train_features, train_segments, 50, 8, 5e-3)
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5])
    model.eval()
    predicted = model.predict({"features": test_features, "mask": torch.ones(16, T, dtype=torch.bool)})
    for segments, scores, labels in predicted:
        assert labels.dtype == torch.long and not labels.any() and len(scores) <= 100
        assert bool((scores[:-1] >= scores[1:]).all()) and float(segments.min()) >= 0 and float(segments.max()) <= T
    gt = annotations_of(test_segments)
    ours = evaluate_proposals(gt, predictions_of([(s[:10].numpy(), c[:10].numpy()) for s, c, _ in predicted]),
                              max_avg_proposals=10).to_json()["AR@10"]
    baseline = evaluate_proposals(gt, predictions_of([sliding_windows(f, 10) for f in test_features]),
                                  max_avg_proposals=10).to_json()["AR@10"]
    assert 0.3 < baseline < 0.8  # the windows find the actions, with loose boundaries
    assert ours > baseline + 0.2 and ours > 0.85, (ours, baseline)


def test_max_proposals_and_nms_settings_reach_post_processing():
    model = tiny_model(max_proposals=7).eval()
    batch = {"features": torch.randn(1, T, D), "mask": torch.ones(1, T, dtype=torch.bool)}
    segments, scores, labels = model.predict(batch)[0]
    assert segments.shape == (7, 2) and scores.shape == labels.shape == (7,)
    model.nms = {"method": "none"}
    plain = model.predict(batch)[0]
    torch.testing.assert_close(plain[1][0], scores[0])  # the best proposal is never decayed
    assert bool((scores <= plain[1][0]).all()) and model.proposal_head is True


# ---------------------------------------------------------------------------------------------------
# builder


def test_builder_validates_keys_and_values():
    with pytest.raises(TalInputError, match=r"unknown model key\(s\) for bsnpp \['dropout'\]"):
        build_bsnpp(tiny_cfg(dropout=0.1))
    with pytest.raises(TalInputError, match=r"^model.input_dim \(the feature dimension D\) is required for bsnpp$"):
        build_bsnpp({"num_steps": 100})
    with pytest.raises(TalInputError, match=r"unknown model.loss_weights key\(s\) \['tem'\]"):
        build_bsnpp(tiny_cfg(loss_weights={"tem": 1.0}))
    with pytest.raises(TalInputError, match=r"model.nms.max_detections is not used by bsnpp: set model.max_proposals"):
        build_bsnpp(tiny_cfg(nms={"max_detections": 10}))
    with pytest.raises(TalInputError, match=r"unknown model.nms key\(s\) \['alpha'\]"):
        build_bsnpp(tiny_cfg(nms={"alpha": 0.4}))
    with pytest.raises(TalInputError, match=r"model.max_duration must be in \[1, num_steps=32\]"):
        build_bsnpp(tiny_cfg(max_duration=33))
    with pytest.raises(TalInputError, match=r"model.iou_bins must be \[low, high\]"):
        build_bsnpp(tiny_cfg(iou_bins=[0.7, 0.3]))
    with pytest.raises(TalInputError, match=r"model.scale_bins must be <= max_duration=4"):
        build_bsnpp(tiny_cfg(max_duration=4, scale_bins=5))
    with pytest.raises(TalInputError, match=r"model.cbg_depth must be >= 1"):
        build_bsnpp(tiny_cfg(cbg_depth=7))
    with pytest.raises(TalInputError, match=r"model.min_boundary_steps must be > 0"):
        build_bsnpp(tiny_cfg(min_boundary_steps=0))
    model = MODELS.build(tiny_cfg(name="bsnpp", loss_weights={"map_reg": 1.0}))
    assert isinstance(model, BSNPP) and model.max_duration == T
    assert model.loss_weights == {"boundary": 1.0, "map_reg": 1.0, "map_cls": 1.0, "consistency": 0.0}
