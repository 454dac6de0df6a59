"""A2Net: pyramid shapes and padding, anchor-free assignment by hand, losses, a short fit, module switches."""
from __future__ import annotations

import pytest
import torch

from tal.errors import TalInputError
from tal.models.a2net import A2Net, af_duration_ranges, assign_points, build_a2net, pad_ground_truth
from tal.models.anchors import decode_segments
from tal.ops.segments import pairwise_tiou
from tal.registry import MODELS

from detection_toys import assert_padding_invariant, fit, toy_batch


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_cfg(**overrides) -> dict:
    cfg = {"input_dim": 8, "num_classes": 3, "base_dim": 16, "pyramid_dims": [16] * 4, "head_dim": 16,
           "anchor_ratios": [0.5, 1.0, 2.0]}
    return {**cfg, **overrides}


def tiny_model(**overrides) -> A2Net:
    torch.manual_seed(0)
    return build_a2net(tiny_cfg(**overrides))


def test_level_lengths_pad_to_the_total_stride():
    model = tiny_model()  # 4 levels: strides 2, 4, 8, 16
    assert model.strides == [2, 4, 8, 16]
    assert model.level_lengths(64) == [32, 16, 8, 4]
    assert model.level_lengths(50) == [32, 16, 8, 4]  # padded to 64
    assert model.level_lengths(65) == [40, 20, 10, 5]  # padded to 80
    assert model.level_lengths(1) == [8, 4, 2, 1]


@pytest.mark.parametrize("num_steps", [64, 50, 65, 7])
def test_output_shapes_and_valid_masks(num_steps):
    model = tiny_model().eval()
    features = torch.randn(2, num_steps, 8)
    mask = torch.ones(2, num_steps, dtype=torch.bool)
    mask[1, num_steps // 2 + 1:] = False
    out = model.outputs(features, mask)
    lengths = model.level_lengths(num_steps)
    num_points, num_anchors = sum(lengths), sum(lengths) * 3
    assert out["ab_logits"].shape == (2, num_anchors, 4)
    assert out["ab_overlap"].shape == (2, num_anchors)
    assert out["ab_segments"].shape == out["ab_offsets"].shape == (2, num_anchors, 2)
    assert out["anchors"].shape == (num_anchors, 2)
    assert out["af_logits"].shape == (2, num_points, 4)
    assert out["af_segments"].shape == out["af_distances"].shape == (2, num_points, 2)
    # first position: centre 1, widths 1, 2, 4; last anchor: last level (stride 16), ratio 2
    torch.testing.assert_close(out["anchors"][:3], torch.tensor([[0.5, 1.5], [0.0, 2.0], [-1.0, 3.0]]))
    last_centre = (lengths[-1] - 0.5) * 16
    torch.testing.assert_close(out["anchors"][-1], torch.tensor([last_centre - 16, last_centre + 16]))
    assert out["points"][:2].tolist() == [1.0, 3.0] and out["points"][-1] == last_centre
    torch.testing.assert_close(out["ab_segments"], decode_segments(out["ab_offsets"], out["anchors"]))
    steps = 2 * out["af_distances"]  # level-0 steps -> feature steps
    torch.testing.assert_close(out["af_segments"], torch.stack([out["points"] - steps[..., 0],
                                                                out["points"] + steps[..., 1]], dim=-1))
    # a position is valid when its span [j * S, (j + 1) * S) holds a valid step: ceil(n / S) per level
    for b, valid_steps in enumerate([num_steps, num_steps // 2 + 1]):
        expected = sum(-(-valid_steps // stride) for stride in model.strides)
        assert int(out["af_valid"][b].sum()) == expected
        assert int(out["ab_valid"][b].sum()) == 3 * expected


def test_predictions_do_not_depend_on_padding_or_batch_mates():
    alone = assert_padding_invariant(tiny_model().eval())
    assert len(alone[0]) > 0 and float(alone[0].max()) <= 50.0 and float(alone[0].min()) >= 0.0


def test_af_duration_ranges_follow_the_level_strides():
    ranges = af_duration_ranges([2, 4, 8])
    assert ranges.tolist() == [[0.0, 4.0], [4.0, 8.0], [8.0, float("inf")]]


def test_anchor_free_assignment_by_hand():
    # strides 2, 4, 8 over 16 steps: centres 1, 3, ..., 15 | 2, 6, 10, 14 | 4, 12
    lengths, strides = [8, 4, 2], [2, 4, 8]
    centres = torch.cat([(torch.arange(n) + 0.5) * s for n, s in zip(lengths, strides)])
    level = torch.cat([torch.full((n,), i) for i, n in enumerate(lengths)])
    gt, labels, valid = pad_ground_truth(
        [torch.tensor([[2.0, 5.0], [8.0, 16.0], [2.0, 6.0]]), torch.zeros(0, 2)],
        [torch.tensor([2, 0, 1]), torch.zeros(0, dtype=torch.long)], torch.device("cpu"))
    classes, distances, _ = assign_points(centres, level, af_duration_ranges(strides), gt, labels, valid)
    expected = torch.zeros(2, 14, dtype=torch.long)
    # [2, 5] (duration 3) -> level 0, centres 3 and 5 (ends included), class 2 + 1; it is listed before
    # [2, 6] (duration 4: levels 0 and 1), which therefore only gets level-1 centres 2 and 6, class 1 + 1;
    # [8, 16] (duration 8: levels 1 and 2) -> level-1 centres 10, 14 and level-2 centre 12, class 0 + 1
    expected[0, [1, 2]] = 3
    expected[0, [8, 9]] = 2
    expected[0, [10, 11, 13]] = 1
    assert classes.tolist() == expected.tolist()
    assert distances[0, [1, 2, 8, 9, 10, 11, 13]].tolist() == [[1, 2], [3, 0], [0, 4], [4, 0], [2, 6], [6, 2], [4, 4]]
    assert not distances[1].any()


def test_loss_parts_and_a_video_without_ground_truth():
    model = tiny_model()
    batch = toy_batch()
    batch = {"features": batch["features"].repeat(2, 1, 1), "mask": batch["mask"].repeat(2, 1),
             "segments": [batch["segments"][0], torch.zeros(0, 2)],
             "labels": [batch["labels"][0], torch.zeros(0, dtype=torch.long)]}
    out = model(batch)
    assert set(out) == {"loss", "loss_ab_cls", "loss_ab_overlap", "loss_ab_loc", "loss_af_cls", "loss_af_reg"}
    weights = {"ab_cls": 1, "ab_overlap": 10, "ab_loc": 10, "af_cls": 30, "af_reg": 1}
    total = sum(w * out[f"loss_{k}"] for k, w in weights.items())
    torch.testing.assert_close(out["loss"].detach(), total)
    assert all(torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())


def recovered(model: A2Net, batch: dict) -> None:
    """predict is sorted, per-class NMS-ed, and its best detection of each class finds that ground truth."""
    model.eval()
    segments, scores, labels = model.predict(batch)[0]
    assert len(scores) > 0 and bool((scores[:-1] >= scores[1:]).all())
    for label in labels.unique():
        same = segments[labels == label]
        overlap = pairwise_tiou(same, same).fill_diagonal_(0)  # [K_c, K_c]
        assert float(overlap.max()) <= model.nms["iou_threshold"] + 1e-6
    for gt, gt_label in zip(batch["segments"][0], batch["labels"][0]):
        best = segments[labels == gt_label][0]
        assert float(pairwise_tiou(best[None], gt[None])) > 0.5, (gt, best)


def test_fit_lowers_the_loss_and_recovers_both_segments():
    model = tiny_model()
    batch = toy_batch()
    losses = fit(model, batch, 50)
    assert sum(losses[-5:]) / 5 < 0.3 * sum(losses[:5]) / 5
    recovered(model, batch)


@pytest.mark.parametrize("module", ["anchor_based", "anchor_free"])
def test_each_module_alone_trains_and_predicts(module):
    other = "anchor_free" if module == "anchor_based" else "anchor_based"
    model = tiny_model(**{other: False})
    batch = toy_batch()
    prefix = "loss_ab" if module == "anchor_based" else "loss_af"
    assert {k for k in model(batch) if k != "loss"} == {k for k in model(batch) if k.startswith(prefix)}
    assert not hasattr(model, "ab_head" if other == "anchor_based" else "af_head")
    losses = fit(model, batch, 50)
    assert sum(losses[-5:]) / 5 < 0.3 * sum(losses[:5]) / 5
    recovered(model, batch)


def test_nms_settings_reach_post_processing():
    model = tiny_model().eval()
    batch = toy_batch()
    hard = model.predict(batch)[0]
    model.nms = {"method": "none"}
    candidates = model.predict(batch)[0]
    assert len(hard[1]) < len(candidates[1])
    model.nms = {"method": "none", "max_detections": 7}
    assert len(model.predict(batch)[0][1]) == 7
    model.nms = {"method": "soft-gaussian", "sigma": 0.5}
    soft = model.predict(batch)[0]
    assert len(soft[1]) == len(candidates[1])  # soft NMS decays instead of dropping
    assert bool((soft[1][:-1] >= soft[1][1:]).all()) and bool((soft[1] <= candidates[1]).all())
    torch.testing.assert_close(soft[1][0], hard[1][0])  # the best detection is never decayed


def test_ab_score_weight_scales_only_merged_anchor_based_scores():
    model = tiny_model(ab_score_weight=0.5, nms={"method": "none", "max_detections": None}).eval()
    batch = toy_batch()
    model.anchor_free = False
    ab = model.predict(batch)[0][1]  # one module alone: the weight does not apply
    model.anchor_free, model.anchor_based = True, False
    af = model.predict(batch)[0][1]
    model.anchor_based = True
    merged = model.predict(batch)[0][1]
    torch.testing.assert_close(merged, torch.cat([af, 0.5 * ab]).sort(descending=True).values)
    model.ab_score_weight = 1.0
    torch.testing.assert_close(model.predict(batch)[0][1], torch.cat([af, ab]).sort(descending=True).values)
    for bad in (0.0, 1.5):
        with pytest.raises(TalInputError, match=rf"model.ab_score_weight={bad}: need a weight in \(0, 1\]"):
            build_a2net(tiny_cfg(ab_score_weight=bad))


def test_anchors_sure_of_background_are_dropped():
    model = tiny_model(anchor_free=False).eval()
    batch = toy_batch()
    assert len(model.predict(batch)[0][1]) > 0
    with torch.no_grad():
        for conv in model.ab_head.convs:
            conv.bias.view(3, 7)[:, 0] = 20.0  # [ratio, values]: background logit of every anchor
    segments, scores, labels = model.predict(batch)[0]
    assert segments.shape == (0, 2) and scores.shape == labels.shape == (0,)


def test_both_modules_off_is_an_error():
    with pytest.raises(TalInputError, match=r"^A2Net needs at least one module: set model.anchor_based or "
                                            r"model.anchor_free to true$"):
        build_a2net(tiny_cfg(anchor_based=False, anchor_free=False))


def test_build_rejects_unknown_and_missing_keys():
    with pytest.raises(TalInputError, match=r"unknown model key\(s\) for a2net \['dropout'\]"):
        build_a2net(tiny_cfg(dropout=0.1))
    with pytest.raises(TalInputError, match=r"^model.num_classes is required for a2net$"):
        build_a2net({"input_dim": 8})
    with pytest.raises(TalInputError, match=r"unknown model.loss_weights key\(s\) \['cls'\]"):
        build_a2net(tiny_cfg(loss_weights={"cls": 1.0}))
    with pytest.raises(TalInputError, match=r"unknown model.nms key\(s\) \['threshold'\]"):
        build_a2net(tiny_cfg(nms={"threshold": 0.5}))
    model = MODELS.build(tiny_cfg(name="a2net", loss_weights={"af_cls": 1.0}))
    assert isinstance(model, A2Net)
    assert model.loss_weights == {"ab_cls": 1.0, "ab_overlap": 10.0, "ab_loc": 10.0, "af_cls": 1.0, "af_reg": 1.0}


def test_activitynet_switches_follow_the_official_class_agnostic_code():
    # official ActivityNet A2Net: anchors not refined, scored by sigmoid(overlap) x CONCAT_AB 0.4, 4 convs per AF branch
    torch.manual_seed(0)
    model = build_a2net({"input_dim": 6, "num_classes": 1, "base_dim": 8, "pyramid_dims": [8, 8, 8], "head_dim": 8,
                         "ab_regression": False, "ab_score": "overlap", "af_convs": 4, "ab_score_weight": 0.4,
                         "anchor_free": False})
    x, mask = torch.randn(1, 16, 6), torch.ones(1, 16, dtype=torch.bool)
    out = model.outputs(x, mask)
    torch.testing.assert_close(out["ab_segments"][0], out["anchors"])
    batch = {"features": x, "mask": mask, "segments": [torch.tensor([[2.0, 9.0]])], "labels": [torch.tensor([0])]}
    assert set(model(batch)) == {"loss", "loss_ab_overlap"}
    model.nms = {"method": "none"}
    _, scores, labels = model.predict(batch)[0]
    expected = torch.sigmoid(out["ab_overlap"][0])
    inside = (out["anchors"][:, 1] > out["anchors"][:, 0]) & (out["anchors"][:, 0] < 16)
    assert sorted(scores.tolist()) == pytest.approx(sorted(expected[inside & (out["anchors"][:, 1] > 0)].tolist()))
    assert set(labels.tolist()) == {0}
    both = build_a2net({"input_dim": 6, "num_classes": 1, "base_dim": 8, "pyramid_dims": [8, 8, 8], "head_dim": 8,
                        "af_convs": 4})
    assert len(both.af_head.cls_tower) == len(both.af_head.reg_tower) == 4


def test_unpadded_batches_skip_the_mask_products_with_the_same_numbers(monkeypatch):
    """With every step valid the pyramid and the anchor-free head skip `x * mask`; losses, outputs and every
    gradient must equal those of the always-multiplying path exactly."""
    import tal.models.a2net as a2net

    batch = toy_batch()

    def run() -> tuple[dict, dict]:
        model = tiny_model().train()
        torch.manual_seed(1)  # the random easy negatives
        out = model(batch)
        out["loss"].backward()
        raw = model.outputs(batch["features"], batch["mask"])
        return {**out, **raw}, {name: p.grad.clone() for name, p in model.named_parameters()}

    fast, fast_grads = run()
    monkeypatch.setattr(a2net, "_masked", lambda x, weight, full: x * weight)
    slow, slow_grads = run()
    for key in fast:
        assert torch.equal(fast[key], slow[key]), key
    for name in fast_grads:
        assert torch.equal(fast_grads[name], slow_grads[name]), name
