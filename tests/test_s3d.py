"""S3D: default spans by hand, SSD matching and hard-negative mining by hand, losses, padding, a short fit to mAP."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tal.datasets.types import DetectionAnnotations, VideoAnnotation
from tal.errors import TalInputError
from tal.eval.detection import evaluate_detection
from tal.eval.predictions import parse_segment_predictions
from tal.models.a2net import pad_ground_truth
from tal.models.anchors import decode_segments, match_with_best_spans, mine_hard_negatives
from tal.models.s3d import S3D, build_s3d
from tal.ops.segments import pairwise_tiou
from tal.registry import MODELS

from detection_toys import assert_padding_invariant, fit, toy_batch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_cfg(**overrides) -> dict:
    return {"input_dim": 8, "num_classes": 3, "hidden_dim": 16, "num_levels": 4, **overrides}


def tiny_model(**overrides) -> S3D:
    torch.manual_seed(0)
    return build_s3d(tiny_cfg(**overrides))


def full_mask(num_videos: int, num_steps: int) -> torch.Tensor:
    return torch.ones(num_videos, num_steps, dtype=torch.bool)


# ---------------------------------------------------------------------------------------------- default spans


def test_default_spans_per_level_by_hand():
    model = tiny_model(num_levels=3, ratios=[[1.0], [1.0, 2.0], [2.0]])  # strides 1, 2, 4
    assert model.strides == [1, 2, 4] and model.level_lengths(8) == [8, 4, 2] and model.level_lengths(5) == [8, 4, 2]
    level0 = [[j, j + 1.0] for j in range(8)]  # centres 0.5 ... 7.5, width 1
    level1 = [[0.0, 2.0], [-1.0, 3.0], [2.0, 4.0], [1.0, 5.0], [4.0, 6.0], [3.0, 7.0], [6.0, 8.0], [5.0, 9.0]]
    level2 = [[-2.0, 6.0], [2.0, 10.0]]  # centres 2 and 6, width 8
    out = model.outputs(torch.randn(2, 5, 8), torch.tensor([[True] * 5, [True] * 3 + [False] * 2]))
    torch.testing.assert_close(out["anchors"], torch.tensor(level0 + level1 + level2))
    # valid: a position whose span [j * S, (j + 1) * S) holds a valid step, for each of its ratios
    expected = torch.zeros(2, 18, dtype=torch.bool)
    expected[0, :5] = expected[1, :3] = True  # level 0: steps 0-4 | 0-2
    expected[0, 8:14] = expected[1, 8:12] = True  # level 1: positions 0-2 | 0-1, two ratios each
    expected[0, 16:18] = expected[1, 16] = True  # level 2: positions 0-1 | 0
    assert out["valid"].tolist() == expected.tolist()


@pytest.mark.parametrize("num_steps", [64, 50, 7])
def test_output_shapes(num_steps):
    model = tiny_model().eval()  # 4 levels (strides 1, 2, 4, 8), 4 ratios each
    lengths = model.level_lengths(num_steps)
    assert lengths == [-(-num_steps // 8) * 8 // s for s in (1, 2, 4, 8)]
    out = model.outputs(torch.randn(2, num_steps, 8), full_mask(2, num_steps))
    num_spans = 4 * sum(lengths)
    assert out["logits"].shape == (2, num_spans, 4) and out["offsets"].shape == (2, num_spans, 2)
    assert out["anchors"].shape == (num_spans, 2) and out["valid"].shape == (2, num_spans)
    assert int(out["valid"][0].sum()) == 4 * sum(-(-num_steps // s) for s in (1, 2, 4, 8))
    predictions = model.predict({"features": torch.randn(3, num_steps, 8), "mask": full_mask(3, num_steps)})
    assert len(predictions) == 3
    for segments, scores, labels in predictions:
        assert segments.shape == (len(scores), 2) and labels.shape == scores.shape and labels.dtype == torch.long
        assert 0 < len(scores) <= 200 and bool((scores[:-1] >= scores[1:]).all())
        assert float(segments.min()) >= 0.0 and float(segments.max()) <= num_steps


# ---------------------------------------------------------------------------------------------- matching, mining


def test_matching_by_hand_best_span_is_always_positive():
    anchors = torch.tensor([[0.0, 2.0], [2.0, 4.0], [4.0, 6.0], [6.0, 8.0], [0.0, 4.0], [4.0, 8.0], [4.0, 7.0]])
    valid = torch.ones(3, 7, dtype=torch.bool)
    valid[1, 5:] = False  # video 1: spans [4, 8] and [4, 7] sit at padded positions
    gt, _, gt_valid = pad_ground_truth(
        [torch.tensor([[1.0, 4.0], [5.5, 6.5]]), torch.tensor([[1.0, 4.0], [5.5, 6.5]]),
         torch.tensor([[2.5, 8.0], [4.0, 7.4], [1.0, 1.0]])],
        [torch.zeros(2, dtype=torch.long)] * 2 + [torch.zeros(3, dtype=torch.long)], torch.device("cpu"))
    assigned, index, positive = match_with_best_spans(anchors, valid, gt, gt_valid, 0.5)
    # video 0: [1, 4] has tIoU 2/3 with [2, 4] and 3/4 with [0, 4] (both above 0.5); [5.5, 6.5] overlaps
    # nothing above 0.5, its best span [4, 7] (tIoU 1/3; [4, 8] has 1/4) is positive anyway
    assert positive[0].tolist() == [False, True, False, False, True, False, True]
    assert index[0, [1, 4, 6]].tolist() == [0, 0, 1]
    torch.testing.assert_close(assigned[0, [1, 4, 6]], torch.tensor([2 / 3, 3 / 4, 1 / 3]))
    # video 1: without [4, 7] and [4, 8] (tIoU 0.25), [5.5, 6.5] takes [4, 6] (0.2, tied with [6, 8]: the first wins)
    assert positive[1].tolist() == [False, True, True, False, True, False, False]
    assert index[1, 2] == 1
    # video 2: [4, 8] overlaps [4, 7.4] more (0.85) but is the best span of [2.5, 8] (0.727), so it goes to
    # [2.5, 8]; [4, 7] is the best of [4, 7.4] (0.882); [4, 6] is above 0.5 with [4, 7.4] (0.588);
    # the zero-length [1, 1] overlaps nothing and forces nothing
    assert positive[2].tolist() == [False, False, True, False, False, True, True]
    assert index[2, [2, 5, 6]].tolist() == [1, 0, 1]
    torch.testing.assert_close(assigned[2, [2, 5, 6]], torch.tensor([2 / 3.4, 4 / 5.5, 3 / 3.4]))

    no_gt, _, no_gt_valid = pad_ground_truth([torch.zeros(0, 2)], [torch.zeros(0, dtype=torch.long)],
                                             torch.device("cpu"))
    _, _, positive = match_with_best_spans(anchors, valid[:1], no_gt, no_gt_valid, 0.5)
    assert not positive.any()


def test_hard_negatives_are_the_highest_losses_ratio_times_positives():
    loss = torch.tensor([[0.5, 0.9, 0.3, 2.0, 0.7, 0.5],
                         [0.5, 0.9, 0.3, 2.0, 0.7, 0.5],
                         [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    candidates = torch.tensor([[True, True, True, False, True, True],  # index 3 is a positive
                               [True] * 6,
                               [True, False, True, False, True, True]])
    negatives = mine_hard_negatives(loss, candidates, torch.tensor([1, 0, 2]), ratio=3.0)
    assert negatives.tolist() == [
        [True, True, False, False, True, False],  # 3 of them: 0.9, 0.7, then the first 0.5
        [False] * 6,  # no positive, no negative
        [True, False, True, False, True, True],  # 6 wanted, only 4 candidates
    ]


def zero_predictors(model: S3D) -> None:
    with torch.no_grad():
        for conv in model.predictors:
            conv.weight.zero_()
            conv.bias.zero_()


@pytest.mark.parametrize("ratio", [3.0, 1.0])
def test_losses_by_hand_with_one_positive(ratio):
    # one level of stride 1, width 1: the ground truth [3, 4.5] overlaps [3, 4] by 2/3 and [4, 5] by 1/3
    model = tiny_model(num_levels=1, ratios=[1.0], negative_ratio=ratio)
    zero_predictors(model)  # every logit 0 (cross-entropy log 4), every offset 0
    batch = {"features": torch.randn(1, 8, 8), "mask": full_mask(1, 8),
             "segments": [torch.tensor([[3.0, 4.5]])], "labels": [torch.tensor([2])]}
    out = model(batch)
    torch.testing.assert_close(out["loss_cls"], torch.tensor((1 + ratio) * math.log(4)))  # 1 positive + ratio negatives
    dx, dw = 0.25 / 0.1, math.log(1.5) / 0.2  # centre 3.75 vs 3.5, width 1.5 vs 1; scales 0.1, 0.2
    torch.testing.assert_close(out["loss_loc"], torch.tensor((dx - 0.5) + (dw - 0.5)))  # smooth L1, beta 1
    torch.testing.assert_close(out["loss"].detach(), out["loss_cls"] + out["loss_loc"])


def test_loss_weights_and_videos_without_ground_truth():
    model = tiny_model(loss_weights={"loc": 2.0})
    batch = toy_batch(boundary_marks=False)
    batch = {"features": batch["features"].repeat(2, 1, 1), "mask": full_mask(2, 64),
             "segments": [batch["segments"][0], torch.zeros(0, 2)],
             "labels": [batch["labels"][0], torch.zeros(0, dtype=torch.long)]}
    out = model(batch)
    assert set(out) == {"loss", "loss_cls", "loss_loc"}
    torch.testing.assert_close(out["loss"].detach(), out["loss_cls"] + 2 * out["loss_loc"])
    out["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())
    empty = model({"features": batch["features"], "mask": batch["mask"], "segments": [torch.zeros(0, 2)] * 2,
                   "labels": [torch.zeros(0, dtype=torch.long)] * 2})
    assert float(empty["loss"].detach()) == 0.0 and empty["loss"].requires_grad  # no positive: SSD mines no negative


# ---------------------------------------------------------------------------------------------- padding, training


def test_predictions_do_not_depend_on_padding_or_batch_mates():
    alone = assert_padding_invariant(tiny_model().eval())
    assert len(alone[0]) > 0 and float(alone[0].max()) <= 50.0


def test_loss_goes_down_in_30_steps_and_nms_holds():
    model = tiny_model()
    batch = toy_batch(boundary_marks=False)
    losses = fit(model, batch, 30, lr=1e-2)
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5  # about 0.41 here
    model.eval()
    segments, scores, labels = model.predict(batch)[0]
    assert len(labels.unique()) > 1
    for label in labels.unique():  # per-class NMS at tIoU 0.45
        same = segments[labels == label]
        assert float(pairwise_tiou(same, same).fill_diagonal_(0).max()) <= 0.45 + 1e-6
    assert float(scores.min()) >= 0.01


def test_nms_settings_reach_post_processing():
    model = tiny_model().eval()
    batch = toy_batch(boundary_marks=False)
    hard = model.predict(batch)[0]
    model.nms = {"method": "none"}
    candidates = model.predict(batch)[0]  # every (valid span, class) pair
    out = model.outputs(batch["features"], batch["mask"])
    assert len(candidates[1]) == 3 * int(out["valid"].sum()) > len(hard[1])
    probs = out["logits"].softmax(dim=-1)[0, :, 1:].reshape(-1)  # [A * C], span-major
    order = probs.argsort(descending=True, stable=True)
    torch.testing.assert_close(candidates[1], probs[order])
    assert candidates[2].tolist() == (order % 3).tolist()  # labels
    decoded = decode_segments(out["offsets"][0], out["anchors"], model.box_scales).clamp(0.0, 64.0)  # [A, 2]
    torch.testing.assert_close(candidates[0], decoded[order // 3])
    model.nms = {"method": "none", "max_detections": 7}
    assert len(model.predict(batch)[0][1]) == 7


def synthetic_set(num_videos: int, seed: int, num_steps: int = 64, dim: int = 16) -> dict:
    """Videos of noise with 3-24-step actions of 3 classes, each adding its class's signature vector."""
    signatures = 2 * torch.nn.functional.normalize(torch.randn(3, dim, generator=torch.Generator().manual_seed(123)))
    generator = torch.Generator().manual_seed(seed)

    def draw(low: int, high: int) -> int:
        return int(torch.randint(low, high, (1,), generator=generator))

    features, segments, labels = 0.5 * torch.randn(num_videos, num_steps, dim, generator=generator), [], []
    for video in range(num_videos):
        spans, classes, start = [], [], draw(0, 6)
        while (length := draw(3, 25)) + start <= num_steps:
            classes.append(draw(0, 3))
            features[video, start:start + length] += signatures[classes[-1]]
            spans.append([start, start + length])
            start += length + draw(4, 16)
        segments.append(torch.tensor(spans, dtype=torch.float32).reshape(-1, 2))
        labels.append(torch.tensor(classes, dtype=torch.long))
    return {"features": features, "mask": full_mask(num_videos, num_steps), "segments": segments, "labels": labels}


def map_at_half(model: S3D, batch: dict) -> float:
    """mAP@0.5 of the model's predictions by tal's evaluator, one feature step standing for one second."""
    names = ["a", "b", "c"]
    videos = {f"v{i}": VideoAnnotation(f"v{i}", "test", 64.0, s.numpy().astype(np.float64),
                                       [names[c] for c in lab.tolist()])
              for i, (s, lab) in enumerate(zip(batch["segments"], batch["labels"]))}
    model.eval()
    results = {f"v{i}": [{"segment": seg, "score": score, "label": names[label]}
                         for seg, score, label in zip(s.tolist(), p.tolist(), lab.tolist())]
               for i, (s, p, lab) in enumerate(model.predict(batch))}
    result = evaluate_detection(DetectionAnnotations(videos, names, "synthetic"),
                                parse_segment_predictions({"results": results}, "s3d"), [0.5])
    return float(result.mAP[0])


def test_short_fit_reaches_a_useful_map_on_held_out_videos():
    train, test = synthetic_set(32, seed=0), synthetic_set(16, seed=1)
    assert sum(len(s) for s in test["segments"]) > 30
    model = tiny_model(input_dim=16, hidden_dim=32)
    before = map_at_half(model, test)
    fit(model, train, 90)
    after = map_at_half(model, test)
    assert before < 0.1 and after > 0.7, (before, after)


# ---------------------------------------------------------------------------------------------- builder


def test_builder_and_registry():
    model = MODELS.build(tiny_cfg(name="s3d", nms={"iou_threshold": 0.3}, loss_weights={"cls": 2.0}))
    assert isinstance(model, S3D)
    assert model.nms == {"method": "hard", "iou_threshold": 0.3, "score_threshold": 0.01, "max_detections": 200}
    assert model.loss_weights == {"cls": 2.0, "loc": 1.0}
    assert model.ratios == [[1.0, 1.5, 2.0, 3.0]] * 4 and model.negative_ratio == 3.0 and model.match_tiou == 0.5
    assert build_s3d(tiny_cfg(num_levels=2, ratios=[[1], [2, 3]])).ratios == [[1.0], [2.0, 3.0]]


@pytest.mark.parametrize("overrides, message", [
    ({"dropout": 0.1}, r"^unknown model key\(s\) for s3d \['dropout'\]; known: \['box_scales', "),
    ({"loss_weights": {"conf": 1.0}}, r"^unknown model.loss_weights key\(s\) \['conf'\]; known: \['cls', 'loc'\]$"),
    ({"nms": {"threshold": 0.5}}, r"^unknown model.nms key\(s\) \['threshold'\]"),
    ({"num_levels": 0}, r"^model.num_levels must be at least 1, got 0$"),
    ({"ratios": [[1.0], [2.0]]}, r"^model.ratios has 2 lists for 4 levels; give one list per level or one flat list"),
    ({"ratios": [1.0, -2.0]}, r"^model.ratios: every level needs at least one positive number, got \[1.0, -2.0\]$"),
    ({"ratios": [1.0, [2.0]]}, r"^model.ratios mixes numbers and lists, got \[1.0, \[2.0\]\]; give one flat list"),
    ({"ratios": []}, r"^model.ratios: every level needs at least one positive number, got \[\]$"),
    ({"match_tiou": 1.0}, r"^model.match_tiou must be in \[0, 1\), got 1.0$"),
    ({"negative_ratio": -1}, r"^model.negative_ratio must be >= 0, got -1$"),
])
def test_builder_rejects_bad_configs(overrides, message):
    with pytest.raises(TalInputError, match=message):
        build_s3d(tiny_cfg(**overrides))


def test_builder_requires_input_dim_and_num_classes():
    with pytest.raises(TalInputError, match=r"^model.num_classes is required for s3d$"):
        build_s3d({"input_dim": 8})
    with pytest.raises(TalInputError, match=r"^model.input_dim \(the feature dimension D\) is required for s3d$"):
        build_s3d({"num_classes": 3})


def test_decoded_predictions_are_the_decoded_default_spans():
    model = tiny_model(nms={"method": "none", "max_detections": None}).eval()
    batch = toy_batch(boundary_marks=False)
    zero_predictors(model)  # offsets 0: predictions are the default spans themselves, clipped to [0, 64]
    segments, scores, _ = model.predict(batch)[0]
    out = model.outputs(batch["features"], batch["mask"])
    spans = decode_segments(out["offsets"][0], out["anchors"], model.box_scales).clamp(0.0, 64.0)[out["valid"][0]]
    assert {tuple(s) for s in segments.tolist()} == {tuple(s) for s in spans.tolist()}
    torch.testing.assert_close(scores, torch.full_like(scores, 0.25))


def test_unpadded_batches_skip_the_mask_products_with_the_same_numbers(monkeypatch):
    """With every step valid the pyramid skips `x * mask`; loss, outputs and gradients equal the
    always-multiplying path exactly."""
    import tal.models.s3d as s3d

    batch = toy_batch()

    def run() -> tuple[dict, dict]:
        model = tiny_model().train()
        out = model(batch)
        out["loss"].backward()
        out.update(model.outputs(batch["features"], batch["mask"]))
        return out, {name: p.grad.clone() for name, p in model.named_parameters()}

    fast, fast_grads = run()
    monkeypatch.setattr(s3d, "_masked", lambda x, weight, full: x * weight)
    slow, slow_grads = run()
    for key in fast:
        assert torch.equal(fast[key], slow[key]), key
    for name in fast_grads:
        assert torch.equal(fast_grads[name], slow_grads[name]), name
