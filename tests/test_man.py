"""MAN head: dynamic conv, candidate moments, IGAN graph, targets, loss, decoding, a short fit."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tal.errors import TalInputError
from tal.models.layers import dynamic_conv1d
from tal.models.man import (
    IGAN,
    MAN,
    build_man,
    candidate_iou,
    candidate_moments,
    decode_candidates,
    default_layers,
    map_geometry,
)
from tal.models.tan2d import decode_moments, sparse_map_mask
from tal.models.text import Vocabulary
from tal.ops.segments import pairwise_tiou, tiou
from tal.registry import MODELS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SENTENCES = ["a person opens the door", "the dog runs", "someone closes a door slowly"]
DENSE_4 = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 2), (1, 3), (2, 4), (0, 3), (1, 4), (0, 4)]


def tiny_model(**overrides) -> MAN:
    cfg = {"input_dim": 6, "num_clips": 8, "hidden_dim": 8, "num_filters": 3,
           "text": {"embed_dim": 5, "hidden_dim": 8}}
    cfg.update(overrides)
    return build_man(cfg, vocab=Vocabulary.from_sentences(SENTENCES))


def tiny_batch(model: MAN, sentences: list[str] | None = None, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    sentences = sentences or SENTENCES
    batch = model.prepare_text(sentences)
    num = len(sentences)
    batch["features"] = torch.randn(num, model.num_clips * model.frame_stride, 6, generator=gen)
    batch["duration"] = torch.full((num,), 16.0)
    starts = torch.randint(0, 10, (num,), generator=gen).double()
    batch["segment"] = torch.stack([starts, starts + 2 + torch.randint(0, 5, (num,), generator=gen)], dim=1)
    return batch


# ---------------------------------------------------------------- dynamic convolution
@pytest.mark.parametrize("width, padding", [(1, 0), (3, 1), (5, 0)])
def test_dynamic_conv_equals_a_per_sample_loop(width, padding):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 11, generator=gen)
    weight = torch.randn(4, 2, 3, width, generator=gen)
    bias = torch.randn(4, 2, generator=gen)
    got = dynamic_conv1d(x, weight, bias, padding=padding)
    expected = torch.stack([F.conv1d(x[b: b + 1], weight[b], bias[b], padding=padding)[0] for b in range(4)])
    assert got.shape == (4, 2, 11 + 2 * padding - width + 1)
    assert torch.allclose(got, expected, atol=1e-5)


def test_dynamic_conv_by_hand_and_shape_check():
    x = torch.tensor([[[1.0, 2.0, 3.0]], [[1.0, 1.0, 1.0]]])  # [2, 1, 3]
    weight = torch.tensor([[[[1.0, -1.0]]], [[[2.0, 3.0]]]])  # sample 0: x_t - x_{t+1}; sample 1: 2 x_t + 3 x_{t+1}
    assert dynamic_conv1d(x, weight).tolist() == [[[-1.0, -1.0]], [[5.0, 5.0]]]
    with pytest.raises(ValueError, match=r"weight must be \[B=2, C_out, C_in=1, k\], got \[1, 1, 1, 2\]"):
        dynamic_conv1d(x, weight[:1])


# ---------------------------------------------------------------- candidate moments
def test_dense_candidates_by_hand():
    # N = 4, three kernel-2 stride-1 convs: every moment of 1..4 clips, map by map
    assert default_layers(4) == [(2, 1)] * 3
    assert [tuple(c) for c in candidate_moments(4, default_layers(4)).long().tolist()] == DENSE_4
    assert len(candidate_moments(6, default_layers(6))) == 21  # DiDeMo's 21 moments of 6 segments


def test_strided_candidates_and_anchor_widths_by_hand():
    # N = 8; conv (2, 2): jump 2, field 2, 4 cells; conv (3, 2): jump 4, field 2 + 2 * 2 = 6, 1 cell
    geometry = map_geometry(8, [(2, 2), (3, 2)])
    assert [(g.count, g.jump, g.field) for g in geometry] == [(8, 1, 1), (4, 2, 2), (1, 4, 6)]
    spans = candidate_moments(8, [(2, 2), (3, 2)]).tolist()
    assert spans == [[i, i + 1] for i in range(8)] + [[0, 2], [2, 4], [4, 6], [6, 8], [0, 6]]
    # widths 0.5 / 1 / 2 x field, centred on the field, clipped to [0, 8]
    ratios = candidate_moments(8, [(2, 2), (3, 2)], anchor_ratios=(0.5, 1.0, 2.0))
    assert ratios.shape == (13 * 3, 2)
    assert ratios[:3].tolist() == [[0.25, 0.75], [0.0, 1.0], [0.0, 1.5]]  # clip 0, centre 0.5
    assert ratios[8 * 3: 8 * 3 + 3].tolist() == [[0.5, 1.5], [0.0, 2.0], [0.0, 3.0]]  # cell [0, 2)
    assert ratios[-3:].tolist() == [[1.5, 4.5], [0.0, 6.0], [0.0, 8.0]]  # cell [0, 6): [-3, 9] clipped


@pytest.mark.parametrize("num_clips, count", [(16, 136), (64, 1104), (128, 2548)])
def test_default_candidates_are_the_2dtan_sparse_cells(num_clips, count):
    spans = candidate_moments(num_clips, default_layers(num_clips)).long()
    cells = torch.zeros(num_clips, num_clips, dtype=torch.bool)
    cells[spans[:, 0], spans[:, 1] - 1] = True
    assert len(spans) == count and int(cells.sum()) == count  # no duplicates
    assert torch.equal(cells, sparse_map_mask(num_clips))


def test_layers_that_do_not_fit_are_refused():
    with pytest.raises(TalInputError, match=r"model.layers=\[\[2, 1\], \[3, 2\], \[3, 2\]\] do not fit num_clips=4 "
                                            r"\(a conv of kernel 3, stride 2 gets 1 cells\)"):
        candidate_moments(4, [(2, 1), (3, 2), (3, 2)])
    with pytest.raises(TalInputError, match=r"model.layers entries are \[kernel, stride\], got \[2\]"):
        tiny_model(layers=[[2]])


def test_model_maps_match_the_candidates():
    model = tiny_model(layers=[[2, 2], [3, 2]])
    nodes = model.encode_video(torch.randn(2, 8, 6), torch.randn(2, model.text.out_dim))
    assert nodes.shape == (2, len(model.candidates), 8) == (2, 13, 8)
    wide = tiny_model(layers=[[2, 2], [3, 2]], anchor_ratios=[0.5, 1.0, 2.0])
    nodes = wide.encode_video(torch.randn(2, 8, 6), torch.randn(2, wide.text.out_dim))
    assert nodes.shape == (2, 39, 8)
    # the three anchors of a cell share its feature and differ by their ratio embedding
    delta = wide.ratio_embedding[1] - wide.ratio_embedding[0]
    assert torch.allclose(nodes[:, 1::3] - nodes[:, 0::3], delta.expand(2, 13, 8), atol=1e-6)


# ---------------------------------------------------------------- IGAN
def test_adjacency_shapes_and_rows_sum_to_one():
    model = tiny_model(num_iterations=3)
    _, adjacency = model.logits(tiny_batch(model), return_adjacency=True)
    num = len(model.candidates)  # 36 for N = 8
    assert num == 36 and len(adjacency) == 4  # A_0 and one per iteration
    for a in adjacency:
        assert a.shape == (3, num, num) and bool((a >= 0).all())
        assert torch.allclose(a.sum(-1), torch.ones(3, num), atol=1e-5)
    assert not torch.allclose(adjacency[0], adjacency[1])  # each iteration adjusts the graph


def test_initial_adjacency_carries_the_temporal_overlap():
    # N = 2: candidates [0, 1], [1, 2], [0, 2]; with the feature relation zeroed A_0 = softmax(tIoU)
    igan = IGAN(dim=4, num_iterations=0)
    torch.nn.init.zeros_(igan.query.weight)
    candidates = candidate_moments(2, default_layers(2))
    overlap = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.5, 0.5, 1.0]])
    nodes = torch.randn(1, 3, 4)
    out, (a0,) = igan(nodes, overlap, return_adjacency=True)
    e = math.e
    assert torch.allclose(a0[0, 0], torch.tensor([e, 1.0, e ** 0.5]) / (e + 1 + e ** 0.5), atol=1e-6)
    assert torch.equal(out, nodes)  # no iteration: the graph does not touch the nodes
    assert torch.allclose(pairwise_tiou(candidates, candidates), overlap)


def test_iteration_count_changes_the_scores():
    model = tiny_model(num_iterations=3).eval()
    batch = tiny_batch(model)
    for iterations in (0, 1, 5):
        other = tiny_model(num_iterations=iterations).eval()
        other.load_state_dict(model.state_dict())  # one shared cell: the same weights fit any count
        assert not torch.allclose(other.predict(batch), model.predict(batch), atol=1e-4), iterations
    again = tiny_model(num_iterations=3).eval()
    again.load_state_dict(model.state_dict())
    assert torch.equal(again.predict(batch), model.predict(batch))


# ---------------------------------------------------------------- targets, loss, outputs
def test_candidate_iou_by_hand():
    # N = 4 clips of 2 s; ground truth [2, 6] s = clips 1..2
    iou = candidate_iou(candidate_moments(4, default_layers(4)), torch.tensor([[2.0, 6.0]]), torch.tensor([8.0]), 4)
    third = 1 / 3
    expected = [0.0, 0.5, 0.5, 0.0, third, 1.0, third, 2 / 3, 2 / 3, 0.5]  # in DENSE_4 order
    assert torch.allclose(iou[0], torch.tensor(expected), atol=1e-6)


def test_loss_is_bce_against_candidate_iou():
    model = tiny_model(num_clips=4, num_iterations=1)
    batch = tiny_batch(model, seed=1)
    batch["duration"] = torch.full((3,), 8.0)
    batch["segment"] = torch.tensor([[2.0, 6.0]] * 3)
    logits = model.logits(batch)
    target = torch.tensor([0.0, 0.5, 0.5, 0.0, 1 / 3, 1.0, 1 / 3, 2 / 3, 2 / 3, 0.5]).expand(3, 10)
    per = -(target * F.logsigmoid(logits) + (1 - target) * F.logsigmoid(-logits))
    assert model(batch)["loss"].item() == pytest.approx(per.mean().item(), rel=1e-5)
    scaled = tiny_model(num_clips=4, num_iterations=1, loss={"min_iou": 0.5, "max_iou": 1.0})
    scaled.load_state_dict(model.state_dict())
    target = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1 / 3, 1 / 3, 0.0]).expand(3, 10)
    per = -(target * F.logsigmoid(logits) + (1 - target) * F.logsigmoid(-logits))
    assert scaled(batch)["loss"].item() == pytest.approx(per.mean().item(), rel=1e-5)


def test_loss_goes_down_on_a_tiny_batch():
    torch.manual_seed(0)
    model = tiny_model()
    batch = tiny_batch(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(50):
        loss = model(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    floor = F.binary_cross_entropy(model.iou_targets(batch), model.iou_targets(batch)).item()  # best possible
    assert losses[-1] - floor < 0.3 * (losses[0] - floor), (losses[0], losses[-1], floor)


@pytest.mark.parametrize("overrides", [{}, {"frame_stride": 2, "filter_width": 1},
                                       {"layers": [[2, 2], [3, 2]], "anchor_ratios": [0.5, 1.0, 2.0]},
                                       {"temporal_prior": False, "num_iterations": 0}])
def test_model_outputs(overrides):
    model = tiny_model(**overrides)
    batch = tiny_batch(model)
    out = model(batch)
    assert set(out) == {"loss", "loss_bce"} and out["loss"].shape == () and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert model.video_filters.weight.grad.abs().sum() > 0 and model.score_filters.weight.grad.abs().sum() > 0
    scores = model.predict(batch)
    assert scores.shape == (3, len(model.candidates)) and not scores.requires_grad
    assert bool(((scores > 0) & (scores < 1)).all())
    moments = model.decode(scores, batch["duration"], nms_threshold=0.5, top_k=4)
    assert [len(m) for m in moments] == [4, 4, 4]
    assert all(0 <= s < e <= 16.0 and 0 < c < 1 for m in moments for s, e, c in m)
    assert all([c for _, _, c in m] == sorted((c for _, _, c in m), reverse=True) for m in moments)


def test_sentence_padding_and_batch_mates_do_not_change_scores():
    model = tiny_model().eval()
    batch = tiny_batch(model)  # "the dog runs" padded to 5 words, beside two other queries
    alone = dict(model.prepare_text([SENTENCES[1]]), features=batch["features"][1:2], duration=batch["duration"][1:2])
    assert batch["words"].shape[1] == 5 and alone["words"].shape[1] == 3
    assert torch.allclose(model.predict(alone)[0], model.predict(batch)[1], atol=1e-6)


def test_queries_sharing_a_video_by_video_index_score_as_with_copies():
    model = tiny_model().eval()
    batch = tiny_batch(model)
    shared = dict(batch, video_index=torch.tensor([1, 1, 0]))
    copies = dict(batch, features=batch["features"][[1, 1, 0]])
    assert torch.allclose(model.predict(shared), model.predict(copies), atol=1e-6)


def test_checkpoint_restores_the_vocabulary():
    model = tiny_model().eval()
    batch = tiny_batch(model)
    cfg = {"name": "man", "input_dim": 6, "num_clips": 8, "hidden_dim": 8, "num_filters": 3,
           "text": {"embed_dim": 5, "hidden_dim": 8, "vocab": len(model.text.vocab)}}
    reloaded = MODELS.build(cfg).eval()
    reloaded.load_state_dict(model.state_dict())
    assert reloaded.text.vocab.tokens == model.text.vocab.tokens
    fresh = dict(batch, **reloaded.prepare_text(SENTENCES))
    assert torch.equal(model.predict(batch), reloaded.predict(fresh))


def test_bad_configs_and_inputs_are_refused():
    with pytest.raises(TalInputError, match=r"unknown model key\(s\) for man \['iterations'\]"):
        build_man({"input_dim": 4, "iterations": 3})
    with pytest.raises(TalInputError, match=r"unknown model.loss key\(s\) \['min'\]"):
        build_man({"input_dim": 4, "loss": {"min": 0.3}})
    with pytest.raises(TalInputError, match="model.input_dim .* is required for man"):
        build_man({"num_clips": 8})
    with pytest.raises(TalInputError, match="model.filter_width must be odd"):
        build_man({"input_dim": 4, "filter_width": 2})
    model = tiny_model(frame_stride=2)
    batch = tiny_batch(model)
    batch["features"] = batch["features"][:, :15]
    with pytest.raises(ValueError, match=r"features have 15 steps, MAN expects num_clips \* frame_stride = 16"):
        model(batch)


# ---------------------------------------------------------------- decoding
def test_decode_by_hand():
    # N = 4 clips (DENSE_4 order); query 0 lasts 8 s (2 s a clip), query 1 lasts 4 s
    candidates = candidate_moments(4, default_layers(4))
    scores = torch.full((2, 10), 0.05)
    scores[0, DENSE_4.index((1, 3))] = 0.9  # [2, 6] s
    scores[0, DENSE_4.index((1, 4))] = 0.8  # [2, 8]: tIoU 4/6 with [2, 6] -> suppressed
    scores[0, DENSE_4.index((0, 1))] = 0.7  # [0, 2]
    scores[0, DENSE_4.index((1, 2))] = 0.65  # [2, 4]: tIoU exactly 0.5 with [2, 6] -> kept
    scores[1, DENSE_4.index((3, 4))] = 0.5  # [3, 4] s
    moments = decode_candidates(scores, candidates, torch.tensor([8.0, 4.0]), 4, nms_threshold=0.5, top_k=3)
    assert moments[0] == [pytest.approx((2.0, 6.0, 0.9)), pytest.approx((0.0, 2.0, 0.7)),
                          pytest.approx((2.0, 4.0, 0.65))]
    assert moments[1][0] == pytest.approx((3.0, 4.0, 0.5)) and len(moments[1]) == 3
    everything = decode_candidates(scores, candidates, [8.0, 4.0], 4, nms_threshold=1.0, top_k=None)
    assert [len(m) for m in everything] == [10, 10]


def test_decode_agrees_with_2dtan_on_the_same_cells():
    num_clips = 16
    candidates = candidate_moments(num_clips, default_layers(num_clips))
    scores = torch.rand(3, len(candidates), generator=torch.Generator().manual_seed(0))
    score_map = torch.zeros(3, num_clips, num_clips)
    score_map[:, candidates[:, 0].long(), candidates[:, 1].long() - 1] = scores
    durations = torch.tensor([30.0, 12.5, 47.0])
    ours = decode_candidates(scores, candidates, durations, num_clips, nms_threshold=0.4, top_k=10)
    theirs = decode_moments(score_map, durations, 0.4, 10, valid_mask=sparse_map_mask(num_clips))
    assert ours == [[pytest.approx(m) for m in row] for row in theirs]


# ---------------------------------------------------------------- a short fit
KINDS = ["red ball", "blue box", "green cup"]


def signature_set(num: int, num_clips: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Noise features; the queried kind's signature (a feature dimension) on the target clips, and another
    kind's signature, as long, elsewhere: a query-blind model can do no better than a coin flip."""
    kinds = torch.randint(0, 3, (num,), generator=gen)
    others = (kinds + torch.randint(1, 3, (num,), generator=gen)) % 3
    features = torch.randn(num, num_clips, 6, generator=gen) * 0.5
    segments, sentences = torch.zeros(num, 2), []
    for i in range(num):
        length = int(torch.randint(2, 4, (1,), generator=gen))
        start = int(torch.randint(0, num_clips - length + 1, (1,), generator=gen))
        free = [c for c in range(num_clips - length + 1) if c + length <= start or c >= start + length]
        other = free[int(torch.randint(0, len(free), (1,), generator=gen))]
        features[i, start: start + length, kinds[i]] += 2.0
        features[i, other: other + length, others[i]] += 2.0
        segments[i] = torch.tensor([start, start + length]) * 2.0  # 2 s a clip
        sentences.append(f"the person holds the {KINDS[kinds[i]]}" if i % 2 else KINDS[kinds[i]])
    return features, segments, sentences


def test_short_fit_recovers_the_queried_moment():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(100)
    num_clips = 8
    model = build_man({"input_dim": 6, "num_clips": num_clips, "hidden_dim": 16, "num_filters": 4,
                       "text": {"embed_dim": 8, "hidden_dim": 16}},
                      vocab=Vocabulary.from_sentences([f"the person holds the {k}" for k in KINDS]))
    train, test = signature_set(64, num_clips, gen), signature_set(32, num_clips, gen)

    def batch(features, segments, sentences):
        return dict(model.prepare_text(sentences), features=features, segment=segments,
                    duration=torch.full((len(sentences),), 2.0 * num_clips))

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        pick = torch.randperm(64, generator=gen)[:16]
        loss = model(batch(train[0][pick], train[1][pick], [train[2][i] for i in pick]))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    held_out = batch(*test)
    top1 = torch.tensor([m[0][:2] for m in model.decode(model.predict(held_out), held_out["duration"], 0.5, 1)])
    hits = tiou(top1, test[1].double()) > 0.5  # [32]
    # the best fixed moment (for all queries) as a trivial baseline
    spans_s = model.candidates.double() * 2.0  # [n, 2]
    fixed = (tiou(spans_s[:, None, :], test[1].double()[None]) > 0.5).sum(1).max()
    assert int(hits.sum()) >= 24 and int(hits.sum()) >= int(fixed) + 12, (int(hits.sum()), int(fixed))
