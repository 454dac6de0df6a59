"""TCN: proposals and context windows by hand, interpolated sampling vs brute force, label rules, loss, a short fit."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tal.errors import TalInputError
from tal.models.a2net import pad_ground_truth
from tal.models.layers import sample_segment_features, segment_sample_points
from tal.models import tcn
from tal.models.tcn import (
    HARD_NEGATIVE,
    IGNORED,
    POSITIVE,
    SCALE_NEGATIVE,
    TCN,
    TemporalConvBranch,
    assign_proposals,
    build_tcn,
    proposal_centres,
    sample_proposals,
    tcn_proposals,
)
from tal.ops.nms import postprocess_detections
from tal.ops.segments import pairwise_tiou
from tal.registry import MODELS

from detection_toys import assert_padding_invariant, fit, toy_batch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_cfg(**overrides) -> dict:
    cfg = {"input_dim": 8, "num_classes": 3, "base_length": 4, "num_scales": 4, "class_tiou": [0.4, 0.45, 0.5, 0.55],
           "conv_channels": 8, "rank_hidden_dim": 32, "cls_hidden_dim": 32}
    return {**cfg, **overrides}


def tiny_model(**overrides) -> TCN:
    torch.manual_seed(0)
    return build_tcn(tiny_cfg(**overrides))


# ---------------------------------------------------------------------------------------------------
# proposals and context windows


def test_centres_every_half_base_while_the_smallest_proposal_fits():
    assert proposal_centres(10, 2.0, 1.0).tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9]  # 9 + 1 <= 10
    assert proposal_centres(11, 4.0, 2.0).tolist() == [2, 4, 6, 8]  # 8 + 2 <= 11 < 10 + 2
    assert proposal_centres(12, 4.0, 2.0).tolist() == [2, 4, 6, 8, 10]  # ends exactly at the video end: kept
    assert proposal_centres(3, 4.0, 2.0).tolist() == [2]  # shorter than the base: the first centre only


def test_proposals_and_contexts_by_hand_with_clipping():
    # base 2, scales 2, 4, 8, centres every step; video 0 has 10 steps, video 1 has 5 (padded to 10)
    proposals, contexts, valid = tcn_proposals(torch.tensor([10, 5]), 10, 2.0, 3, 1.0)
    assert proposals.shape == contexts.shape == (2, 9, 3, 2)
    assert valid.tolist() == [[True] * 9, [True] * 4 + [False] * 5]  # video 1: centres 1..4 (4 + 1 <= 5)
    # centre 1: [0, 2], [-1, 3] -> [0, 3], [-3, 5] -> [0, 5]; contexts twice the *clipped* length, same centre
    assert proposals[0, 0].tolist() == [[0, 2], [0, 3], [0, 5]]
    assert contexts[0, 0].tolist() == [[-1, 3], [-1.5, 4.5], [-2.5, 7.5]]
    # centre 5 of the long video: nothing clipped
    assert proposals[0, 4].tolist() == [[4, 6], [3, 7], [1, 9]]
    assert contexts[0, 4].tolist() == [[3, 7], [1, 9], [-3, 13]]
    # centre 9: [8, 10], [7, 11] -> [7, 10], [5, 13] -> [5, 10]
    assert proposals[0, 8].tolist() == [[8, 10], [7, 10], [5, 10]]
    assert contexts[0, 8].tolist() == [[7, 11], [5.5, 11.5], [2.5, 12.5]]
    # centre 4 of the 5-step video: [3, 5], [2, 6] -> [2, 5], [0, 8] -> [0, 5]
    assert proposals[1, 3].tolist() == [[3, 5], [2, 5], [0, 5]]
    assert contexts[1, 3].tolist() == [[2, 6], [0.5, 6.5], [-2.5, 7.5]]
    assert proposals[1, 8].tolist() == [[5, 5]] * 3  # an unused centre past the short video: zero length


def test_context_ratio_and_centre_stride_are_honoured():
    proposals, contexts, valid = tcn_proposals(torch.tensor([12]), 12, 4.0, 2, 3.0, context_ratio=3.0)
    assert valid.tolist() == [[True, True, True]]  # centres 3, 6, 9 (9 + 2 <= 12)
    assert proposals[0, :, 0].tolist() == [[1, 5], [4, 8], [7, 11]]
    assert proposals[0, 1, 1].tolist() == [2, 10]
    assert contexts[0, 1].tolist() == [[0, 12], [-6, 18]]


def test_the_model_uses_half_the_base_length_as_default_stride():
    model = tiny_model()
    assert model.centre_stride == 2.0
    proposals, _, valid = model.proposals(torch.tensor([64]), 64)
    assert proposals.shape == (1, 31, 4, 2) and bool(valid.all())  # centres 2, 4, ..., 62
    assert proposals[0, 4].tolist() == [[8, 12], [6, 14], [2, 18], [0, 26]]


# ---------------------------------------------------------------------------------------------------
# feature sampling


def test_sample_points_are_the_centres_of_equal_parts():
    points = segment_sample_points(torch.tensor([[1.0, 3.0], [-1.0, 3.0]]), 4)
    assert points.tolist() == [[1.25, 1.75, 2.25, 2.75], [-0.5, 0.5, 1.5, 2.5]]


def test_sampling_a_linear_ramp_by_hand():
    features = torch.arange(6, dtype=torch.float32)[None, :, None].repeat(1, 1, 2)  # feature i = i, centred at i + 0.5
    segments = torch.tensor([[1.0, 3.0], [-1.0, 3.0], [4.0, 8.0]])
    sampled = sample_segment_features(features, torch.tensor([6]), torch.zeros(3, dtype=torch.long), segments, 4)
    assert sampled.shape == (3, 4, 2)
    # inside: value = point - 0.5; in [0, 0.5) the first feature; before 0 zero padding
    assert sampled[0, :, 0].tolist() == [0.75, 1.25, 1.75, 2.25]
    assert sampled[1, :, 0].tolist() == [0.0, 0.0, 1.0, 2.0]
    # points 4.5, 5.5, 6.5, 7.5: 4, the last feature 5 (in (5.5, 6]), then past the end (6) zero
    assert sampled[2, :, 1].tolist() == [4.0, 5.0, 0.0, 0.0]


def brute_force_samples(features: np.ndarray, num_valid: np.ndarray, video: np.ndarray, segments: np.ndarray,
                        num_points: int) -> np.ndarray:
    out = np.zeros((len(segments), num_points, features.shape[2]))
    for i, ((start, end), b) in enumerate(zip(segments, video)):
        n = num_valid[b]
        centres = np.arange(n) + 0.5
        for j in range(num_points):
            t = start + (j + 0.5) * (end - start) / num_points
            if 0 <= t <= n:
                out[i, j] = [np.interp(t, centres, features[b, :n, d]) for d in range(features.shape[2])]
    return out


def test_sampling_equals_brute_force_interpolation():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(3, 20, 5, generator=generator)
    num_valid = torch.tensor([20, 7, 1])
    start = torch.rand(40, generator=generator) * 30 - 8
    segments = torch.stack([start, start + torch.rand(40, generator=generator) * 15], dim=1)  # some outside the video
    video = torch.randint(0, 3, (40,), generator=generator)
    sampled = sample_segment_features(features, num_valid, video, segments, 12)
    expected = brute_force_samples(features.numpy(), num_valid.numpy(), video.numpy(), segments.numpy(), 12)
    np.testing.assert_allclose(sampled.numpy(), expected, rtol=1e-5, atol=1e-5)
    assert (sampled == 0).all(dim=-1).any() and not (sampled == 0).all()  # both zero-padded and real points occur


def test_sampling_ignores_the_padding():
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(1, 9, 3, generator=generator)
    padded = torch.cat([features, 1e3 * torch.ones(1, 5, 3)], dim=1)
    segments = torch.tensor([[-2.0, 12.0], [6.0, 9.0]])
    video = torch.zeros(2, dtype=torch.long)
    torch.testing.assert_close(sample_segment_features(padded, torch.tensor([9]), video, segments, 7),
                               sample_segment_features(features, torch.tensor([9]), video, segments, 7))


# ---------------------------------------------------------------------------------------------------
# labels and sampling


def test_assign_proposals_by_hand():
    # base 2, scales 2, 4, 8, centres 1..15 over 16 steps; ground truth [4, 8] of class 1; a second video of
    # 6 steps without ground truth
    proposals, _, valid = tcn_proposals(torch.tensor([16, 6]), 16, 2.0, 3, 1.0)
    gt, labels, gt_valid = pad_ground_truth([torch.tensor([[4.0, 8.0]]), torch.zeros(0, 2)],
                                            [torch.tensor([1]), torch.zeros(0, dtype=torch.long)], torch.device("cpu"))
    kind, classes, _ = assign_proposals(proposals, valid, gt, labels, gt_valid, 0.7, 0.3, torch.tensor([0.4, 0.5, 0.6]))
    assert kind.shape == classes.shape == (2, 15, 3)
    expected = torch.full((2, 15, 3), IGNORED)
    # centre 6: [5, 7] 0.5, [4, 8] 1.0, [2, 10] 0.5 -> the best scale is positive, the others scale negatives
    expected[0, 5] = torch.tensor([SCALE_NEGATIVE, POSITIVE, SCALE_NEGATIVE])
    # best tIoU < 0.3: centre 1 (0.125: [0, 5]), centre 2 (0.25: [0, 6]), centres 10..15 (0.2 at most: [6, 14])
    # ignored (best in [0.3, 0.7]): centre 3 (0.375), 4 (0.5), 5 (0.6), 7 (0.6), 8 (0.5), 9 (0.333: [5, 13])
    expected[0, [0, 1, 9, 10, 11, 12, 13, 14]] = HARD_NEGATIVE
    expected[1, :5] = HARD_NEGATIVE  # no ground truth: every valid centre (1..5) is a hard negative
    assert kind.tolist() == expected.tolist()
    # class 1 + 1 where tIoU >= class_tiou[scale]: [5, 7] 0.5 >= 0.4, [4, 8] 1 >= 0.5, [2, 10] 0.5 < 0.6
    assert classes[0, 5].tolist() == [2, 2, 0]
    assert classes[0, 4].tolist() == [2, 2, 0]  # ignored centre 5: [4, 6] 0.5, [3, 7] 0.6, [1, 9] 0.5 < 0.6
    assert not classes[kind == HARD_NEGATIVE].any()


def test_best_scale_ties_go_to_the_shortest_scale_and_labels_follow_the_best_ground_truth():
    proposals = torch.tensor([[[[0.0, 4.0], [0.0, 4.0]], [[10.0, 12.0], [9.0, 13.0]]]])  # [1, 2 centres, 2 scales, 2]
    gt, labels, gt_valid = pad_ground_truth([torch.tensor([[0.0, 4.0], [9.5, 13.0]])], [torch.tensor([0, 2])],
                                            torch.device("cpu"))
    kind, classes, _ = assign_proposals(proposals, torch.ones(1, 2, dtype=torch.bool), gt, labels, gt_valid, 0.7, 0.3,
                                     torch.tensor([0.5, 0.5]))
    assert kind.tolist() == [[[POSITIVE, SCALE_NEGATIVE], [SCALE_NEGATIVE, POSITIVE]]]  # [10, 12] 2/3.5, [9, 13] 3.5/4
    assert classes.tolist() == [[[1, 1], [3, 3]]]


def test_sample_proposals_caps_each_kind_per_video():
    kind = torch.tensor([[POSITIVE] * 5 + [SCALE_NEGATIVE] * 2 + [HARD_NEGATIVE] * 10 + [IGNORED] * 3,
                         [HARD_NEGATIVE] * 4 + [IGNORED] * 16])
    torch.manual_seed(0)
    draws = [sample_proposals(kind, {POSITIVE: 3, SCALE_NEGATIVE: 3, HARD_NEGATIVE: 6}) for _ in range(20)]
    for selected in draws:
        counts = [int((selected[0] & (kind[0] == k)).sum()) for k in (POSITIVE, SCALE_NEGATIVE, HARD_NEGATIVE)]
        assert counts == [3, 2, 6]
        assert int(selected[1].sum()) == 4 and bool((kind[1][selected[1]] == HARD_NEGATIVE).all())
        assert not (selected & (kind == IGNORED)).any()
    assert len({tuple(s[0].nonzero().flatten().tolist()) for s in draws}) > 1  # random draws


# ---------------------------------------------------------------------------------------------------
# model


def test_registered_and_shapes_of_the_official_network():
    assert "tcn" in MODELS.names()
    model = MODELS.build({"name": "tcn", "input_dim": 202, "num_classes": 200})
    # the official pair net: [12, 202] per window -> conv 5 -> 8 -> avg pool 3 -> 6; 2 x 6 x 202 -> 500 -> 2
    assert model.proposal_branch.weight.shape == (1, 5)
    assert [layer.weight.shape for layer in model.rank_head] == [(500, 2 * 6 * 202), (2, 500)]
    assert [layer.weight.shape for layer in model.class_head] == [(2000, 6 * 202), (201, 2000)]
    assert model.class_tiou.tolist() == pytest.approx([0.4, 0.45, 0.5, 0.55, 0.6, 0.7])
    samples = torch.randn(3, 12, 202)
    assert model.rank_logits(samples, samples).shape == (3, 2)
    assert model.class_logits(samples).shape == (3, 201)


def test_branch_equals_the_official_conv_and_pooling_layers():
    torch.manual_seed(0)
    branch = TemporalConvBranch(num_samples=12, channels=3, kernel_size=5, pool_size=3)
    with torch.no_grad():
        branch.bias.normal_()
    x = torch.randn(4, 12, 7)  # [N, samples, D]
    # Caffe blob [N, 1, samples, D], conv kernel_h 5 kernel_w 1, ReLU, AVE pooling kernel_h 3 stride 1
    conv = F.conv2d(x[:, None], branch.weight[:, None, :, None], branch.bias)  # [N, 3, 8, 7]
    expected = F.avg_pool2d(F.relu(conv), (3, 1), stride=1)  # [N, 3, 6, 7]
    torch.testing.assert_close(branch(x), expected.flatten(1))
    assert branch.out_steps == 6


def test_rank_scores_every_valid_proposal():
    model = tiny_model().eval()
    features = torch.randn(2, 64, 8)
    mask = torch.ones(2, 64, dtype=torch.bool)
    mask[1, 30:] = False
    ranked = model.rank({"features": features, "mask": mask})
    assert [len(s) for s, _ in ranked] == [31 * 4, 14 * 4]  # centres 2..62 and 2..28 (28 + 2 <= 30)
    for segments, scores in ranked:
        assert bool(((scores > 0) & (scores < 1)).all())
    assert float(ranked[1][0].max()) == 30.0 and float(ranked[1][0].min()) == 0.0


def test_ranking_in_chunks_changes_nothing(monkeypatch):
    model = tiny_model().eval()
    batch = {"features": torch.randn(2, 64, 8), "mask": torch.ones(2, 64, dtype=torch.bool)}
    whole = model.rank(batch)
    monkeypatch.setattr(tcn, "RANK_CHUNK", 7)
    for (segments, scores), (chunked_segments, chunked_scores) in zip(whole, model.rank(batch)):
        assert torch.equal(segments, chunked_segments)
        torch.testing.assert_close(scores, chunked_scores)


def test_loss_parts_and_a_video_without_ground_truth():
    model = tiny_model(loss_weights={"cls": 0.5})
    batch = toy_batch()
    batch = {"features": batch["features"].repeat(2, 1, 1), "mask": batch["mask"].repeat(2, 1),
             "segments": [batch["segments"][0], torch.zeros(0, 2)],
             "labels": [batch["labels"][0], torch.zeros(0, dtype=torch.long)]}
    out = model(batch)
    assert set(out) == {"loss", "loss_rank", "loss_cls"}
    torch.testing.assert_close(out["loss"].detach(), out["loss_rank"] + 0.5 * out["loss_cls"])
    assert all(bool(torch.isfinite(v)) for v in out.values())
    out["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())


def test_predictions_do_not_depend_on_padding_or_batch_mates():
    alone = assert_padding_invariant(tiny_model(drop_background=False).eval())
    assert len(alone[0]) > 0
    assert float(alone[0].max()) <= 50.0 and float(alone[0].min()) >= 0.0


def test_loss_goes_down_over_50_steps():
    losses = fit(tiny_model(), toy_batch(), 50)
    assert sum(losses[-5:]) / 5 < 0.3 * sum(losses[:5]) / 5


def test_fit_recovers_both_segments_with_their_labels():
    model = tiny_model()
    batch = toy_batch()
    fit(model, batch, 100)
    model.eval()
    segments, scores, labels = model.predict(batch)[0]
    assert len(scores) > 0 and bool((scores[:-1] >= scores[1:]).all())
    overlap = pairwise_tiou(segments, segments).fill_diagonal_(0)
    assert float(overlap.max()) <= 0.45 + 1e-6  # proposal NMS, class-agnostic
    gt_segments, gt_labels = batch["segments"][0], batch["labels"][0]
    for gt, gt_label in zip(gt_segments, gt_labels):
        best = segments[labels == gt_label][0]
        assert float(pairwise_tiou(best[None], gt[None])) > 0.5, (gt, best)
    # the two best detections are the two actions, each with its label (a sliding window of any one
    # scale could not find both: their lengths are 4 and 32)
    hit = (pairwise_tiou(segments[:2], gt_segments) > 0.5) & (labels[:2, None] == gt_labels[None])  # [2, 2]
    assert bool(hit.any(dim=0).all()), (segments[:2], labels[:2])


def test_nms_settings_reach_post_processing():
    model = tiny_model(drop_background=False).eval()
    batch = toy_batch()
    assert len(model.predict(batch)[0][1]) == 20  # official: 20 proposals kept, top-1 class each
    model.proposal_nms = {"method": "none", "max_detections": 50}
    model.nms = {"method": "none"}
    assert len(model.predict(batch)[0][1]) == 50
    model.classes_per_proposal = 3
    segments, scores, labels = model.predict(batch)[0]
    assert len(scores) == 150 and sorted(labels.tolist()) == [0] * 50 + [1] * 50 + [2] * 50
    ranked = dict(zip(map(tuple, model.rank(batch)[0][0].tolist()), model.rank(batch)[0][1].tolist()))
    # a detection scores ranking x class probability, so it never beats its proposal's ranking score
    assert all(score <= ranked[tuple(segment)] + 1e-6 for segment, score in zip(segments.tolist(), scores.tolist()))
    model.nms = {"method": "hard", "iou_threshold": 0.1, "max_detections": 7}
    assert len(model.predict(batch)[0][1]) == 7


def test_proposals_most_likely_background_are_dropped():
    model = tiny_model().eval()
    batch = toy_batch()
    with torch.no_grad():
        model.class_head[1].bias[0] = 50.0  # background logit
    segments, scores, labels = model.predict(batch)[0]
    assert segments.shape == (0, 2) and scores.shape == labels.shape == (0,)
    model.drop_background = False
    assert len(model.predict(batch)[0][1]) > 0


def test_build_rejects_bad_configs():
    with pytest.raises(TalInputError, match=r"unknown model key\(s\) for tcn \['dropout'\]"):
        build_tcn(tiny_cfg(dropout=0.1))
    with pytest.raises(TalInputError, match=r"^model.num_classes is required for tcn$"):
        build_tcn({"input_dim": 8})
    with pytest.raises(TalInputError, match=r"^model.class_tiou needs one value per scale for num_scales=4 "):
        build_tcn(tiny_cfg(class_tiou=None))
    with pytest.raises(TalInputError, match=r"^model.class_tiou has 2 values but model.num_scales is 4$"):
        build_tcn(tiny_cfg(class_tiou=[0.5, 0.5]))
    with pytest.raises(TalInputError, match=r"^model.num_samples=6 is too few for conv_kernel=5 and pool_kernel=3; "
                                            r"need at least 7$"):
        build_tcn(tiny_cfg(num_samples=6))
    with pytest.raises(TalInputError, match=r"unknown model.nms key\(s\) \['threshold'\]"):
        build_tcn(tiny_cfg(nms={"threshold": 0.5}))
    with pytest.raises(TalInputError, match=r"unknown model.samples_per_video key\(s\) \['negative'\]"):
        build_tcn(tiny_cfg(samples_per_video={"negative": 3}))
    model = build_tcn(tiny_cfg(name="tcn", class_tiou=0.5, samples_per_video={"hard_negative": 8}))
    assert model.class_tiou.tolist() == [0.5] * 4
    assert model.samples_per_video == {"positive": 32, "scale_negative": 32, "hard_negative": 8}


def test_classifier_draws_mostly_positives_as_the_official_sampler():
    # official train_proposal_class2.load_data: 960 positives, 32 scale and 32 hard negatives per 1024
    from tal.models.tcn import HARD_NEGATIVE, KIND_NAMES, OFFICIAL_CLS_SAMPLES_PER_VIDEO, POSITIVE, sample_proposals

    kind = torch.tensor([[POSITIVE] * 40 + [2] * 40 + [HARD_NEGATIVE] * 40] * 30)  # 30 videos
    counts = {KIND_NAMES[k]: n for k, n in OFFICIAL_CLS_SAMPLES_PER_VIDEO.items()}
    drawn = kind[sample_proposals(kind, counts, torch.Generator().manual_seed(0))]
    assert (drawn == POSITIVE).sum() == 960 and len(drawn) == 1020
    assert float((drawn == POSITIVE).float().mean()) == pytest.approx(960 / 1024, abs=0.005)


def test_detections_score_the_ranking_score_and_use_video_priors():
    # official evaluate.py: label = argmax(classifier + video-level scores), score = ranking score
    model = tiny_model(drop_background=False).eval()
    batch = toy_batch()
    ranked = [postprocess_detections(s, r, None, **model.proposal_nms) for s, r in model.rank(batch)]
    segments, scores, _ = model.predict(batch)[0]
    assert sorted(scores.tolist()) == pytest.approx(sorted(ranked[0][1].tolist()))
    priors = torch.tensor([[0.0, 0.0, 5.0]] * len(batch["features"]))  # class 2 dominates the video
    _, _, labels = model.predict({**batch, "video_scores": priors})[0]
    assert labels.tolist() == [2] * len(labels)
