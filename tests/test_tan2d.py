"""2D-TAN head: sparse map, span pooling, masked map convs, targets, loss, decoding, model contract."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tal.errors import TalInputError
from tal.models.layers import average_to_num_clips
from tal.models.map_conv import MaskedMapConv, masked_conv_weights, needed_cells
from tal.models.tan2d import (
    SparsePropConv,
    SparsePropPool,
    Tan2D,
    build_tan2d,
    decode_moments,
    default_scale_layers,
    iou_target_map,
    scaled_iou_bce,
    scaled_iou_targets,
    sparse_map_diagonals,
    sparse_map_mask,
)
from tal.models.text import Vocabulary

pytestmark = pytest.mark.usefixtures("one_torch_thread")


SENTENCES = ["a person opens the door", "the dog runs", "someone closes a door slowly"]


def tiny_model(**overrides) -> Tan2D:
    cfg = {"input_dim": 6, "num_clips": 16, "hidden_dim": 8, "prop": "pool", "map_kernel": 3, "map_layers": 2,
           "text": {"embed_dim": 5, "hidden_dim": 8, "num_layers": 1}}
    cfg.update(overrides)
    return build_tan2d(cfg, vocab=Vocabulary.from_sentences(SENTENCES))


def tiny_batch(model: Tan2D, batch_size: int = 3, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    sentences = [SENTENCES[i % len(SENTENCES)] for i in range(batch_size)]
    batch = model.prepare_text(sentences)
    steps = model.num_clips * model.frame_stride
    batch["features"] = torch.randn(batch_size, steps, 6, generator=gen)
    duration_s = torch.full((batch_size,), 32.0)
    starts = torch.randint(0, 20, (batch_size,), generator=gen).double()
    segments = torch.stack([starts, starts + 4 + torch.randint(0, 8, (batch_size,), generator=gen)], dim=1)
    batch["iou_targets"] = iou_target_map(segments, duration_s, model.num_clips)
    batch["duration"] = duration_s
    return batch


# ---------------------------------------------------------------- sparse map
@pytest.mark.parametrize("num_clips, num_valid, layers", [(16, 136, [16]), (64, 1104, [16, 8, 8]),
                                                          (128, 2548, [16, 8, 8, 8])])
def test_sparse_map_cell_counts_match_2dtan(num_clips, num_valid, layers):
    assert default_scale_layers(num_clips) == layers  # the official NUM_SCALE_LAYERS
    assert int(sparse_map_mask(num_clips).sum()) == num_valid


@pytest.mark.parametrize("num_clips, longest", [(4, 4), (16, 16), (24, 24), (64, 64), (100, 96), (128, 128)])
def test_sparse_map_has_no_cell_ending_before_it_starts(num_clips, longest):
    mask = sparse_map_mask(num_clips)
    assert not mask.tril(-1).any()
    assert mask.diagonal().all()  # every single clip
    starts, ends = mask.nonzero(as_tuple=True)
    assert int((ends - starts).max()) + 1 == longest  # the whole video, unless N is off the 2D-TAN grid


def test_sparse_map_scale_rule_by_hand():
    mask = sparse_map_mask(64)
    assert mask[5, 5 + 15] and mask[48, 63]  # up to 16 clips long: every start
    assert not mask[0, 16]  # 17 clips: no layer makes it
    assert mask[0, 17] and not mask[1, 18] and mask[2, 19]  # 18 clips: even starts (stride 2)
    assert mask[4, 39] and not mask[2, 37]  # 36 clips: starts on multiples of 4
    assert [(d.stride, d.offset) for d in sparse_map_diagonals(64, [16, 8, 8])[15:18]] == [(1, 15), (2, 17), (2, 19)]


def test_scale_layers_that_overrun_the_video_are_refused():
    with pytest.raises(TalInputError, match=r"model.scale_layers=\[16, 8\] reach moments longer than num_clips=24"):
        sparse_map_mask(24, [16, 8])


# ---------------------------------------------------------------- proposal maps
@pytest.mark.parametrize("num_clips", [16, 24, 64])
def test_pool_map_is_the_max_over_each_valid_span(num_clips):
    x = torch.randn(2, 3, num_clips)
    mask = sparse_map_mask(num_clips)
    got = SparsePropPool(num_clips, sparse_map_diagonals(num_clips, default_scale_layers(num_clips)))(x)
    expected = torch.zeros(2, 3, num_clips, num_clips)
    for i, j in mask.nonzero().tolist():
        expected[..., i, j] = x[..., i: j + 1].max(dim=-1).values
    assert torch.equal(got, expected)


@pytest.mark.parametrize("num_clips", [16, 64])
def test_conv_map_shapes_and_cells(num_clips):
    layers = default_scale_layers(num_clips)
    prop = SparsePropConv(num_clips, sparse_map_diagonals(num_clips, layers), layers, dim=4)
    assert len(prop.layers) == sum(layers)
    x = torch.randn(2, 4, num_clips)
    out = prop(x)
    assert out.shape == (2, 4, num_clips, num_clips)
    assert torch.equal(out.ne(0).any(dim=(0, 1)), sparse_map_mask(num_clips))
    first = prop.layers[0]  # 1x1 conv: cell (i, i) is the conv of clip i
    assert torch.allclose(out.diagonal(dim1=2, dim2=3), first(x), atol=1e-6)


# ---------------------------------------------------------------- masked map conv
def test_masked_conv_weights_are_inverse_valid_counts():
    mask = torch.ones(3, 3, dtype=torch.bool).triu()  # 6 valid cells
    (weight,) = masked_conv_weights(mask, kernel_size=3, paddings=[1])
    # valid cells under each 3x3 window, e.g. (0,0): (0,0) (0,1) (1,1); (0,2): (0,1) (0,2) (1,1) (1,2)
    expected_counts = torch.tensor([[3, 5, 4], [3, 6, 5], [1, 3, 3]], dtype=torch.float32)
    assert torch.allclose(weight[0, 0], 1 / expected_counts)


@pytest.mark.parametrize("kernel, layers", [(5, 8), (9, 4)])
def test_map_conv_keeps_the_map_size(kernel, layers):
    mask = sparse_map_mask(16)
    conv = MaskedMapConv(mask, 4, 6, kernel, layers)
    assert conv(torch.randn(2, 4, 16, 16)).shape == (2, 6, 16, 16)


def official_map_conv(conv: MaskedMapConv, mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """2D-TAN's MapConv rule on the whole padded map: pad (K-1)L/2 once, ReLU(conv) * weight per layer."""
    kernel, layers = conv.convs[0].kernel_size[0], len(conv.convs)
    paddings = [(kernel - 1) * layers // 2] + [0] * (layers - 1)
    for layer, padding, weight in zip(conv.convs, paddings, masked_conv_weights(mask, kernel, paddings)):
        x = F.relu(F.conv2d(x, layer.weight, layer.bias, padding=padding)) * weight
    return x


@pytest.mark.parametrize("strategy", ["pairs", "crop", "fft"])
@pytest.mark.parametrize("num_clips, kernel, layers", [(16, 5, 8), (16, 9, 4), (64, 9, 4), (128, 5, 8)])
def test_map_conv_computes_only_needed_cells_with_the_official_numbers(num_clips, kernel, layers, strategy):
    torch.manual_seed(0)
    mask = sparse_map_mask(num_clips)
    conv = MaskedMapConv(mask, 3, 4, kernel, layers, strategy=strategy)
    x = torch.randn(2, 3, num_clips, num_clips) * mask
    with torch.no_grad():
        expected = official_map_conv(conv, mask, x) * mask
        out = conv(x)
    assert torch.allclose(out * mask, expected, rtol=1e-5, atol=1e-7 * float(expected.abs().max()))
    assert float(expected.abs().max()) > 0
    official_cells = sum((num_clips + (kernel - 1) * (layers - i - 1)) ** 2 for i in range(layers))
    assert conv.num_pairs < 0.41 * official_cells * kernel ** 2  # the padded stack: every tap of every cell
    assert conv.crop_products < 0.95 * official_cells * kernel ** 2


@pytest.mark.parametrize("kernel", ["onednn", "blas"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_pair_products_in_row_blocks_equal_addmm(monkeypatch, kernel, dtype):
    """The pair plan's GEMMs, through oneDNN in blocks of PRODUCT_ROWS rows (a last partial block too) or BLAS."""
    import tal.models.map_conv as map_conv

    monkeypatch.setattr(map_conv, "PRODUCT_ROWS", 7)
    monkeypatch.setattr(map_conv, "PRODUCTS", kernel)
    if map_conv._LINEAR is not None:
        assert map_conv.product_kernel(dtype, 24, 16) == kernel
    g = torch.Generator().manual_seed(0)
    rows, weight_t = torch.randn(30, 24, generator=g).to(dtype), torch.randn(16, 24, generator=g).to(dtype)
    start = torch.randn(30, 16, generator=g).to(dtype)
    expected = (start.double() + rows.double() @ weight_t.double().T)
    tol = dict(atol=1e-4, rtol=1e-5) if dtype == torch.float32 else dict(atol=0.25, rtol=2e-2)
    out = start.clone()
    map_conv._product(out, rows, weight_t, accumulate=True)
    torch.testing.assert_close(out.double(), expected, **tol)
    map_conv._product(out, rows, weight_t, accumulate=False)
    torch.testing.assert_close(out.double(), rows.double() @ weight_t.double().T, **tol)


def test_product_kernel_auto_takes_the_faster_once_per_shape(monkeypatch):
    import tal.models.map_conv as map_conv

    if map_conv._LINEAR is None:
        pytest.skip("this torch build has no oneDNN")
    calls = []

    def fake_time(kernel, rows, weight_t, out, repeats=3):
        calls.append((kernel.__name__, tuple(rows.shape), tuple(weight_t.shape)))
        return {"_onednn_product": onednn_s, "_blas_product": 1.0}[kernel.__name__]

    monkeypatch.setattr(map_conv, "_time_product", fake_time)
    monkeypatch.setattr(map_conv, "PRODUCTS", "auto")
    map_conv._faster_kernel.cache_clear()
    try:
        onednn_s = 0.5
        assert map_conv.product_kernel(torch.float32, 24, 16) == "onednn"
        assert map_conv.product_kernel(torch.float32, 24, 16) == "onednn"  # cached: timed once
        assert calls == [("_onednn_product", (map_conv.TIMING_ROWS, 24), (16, 24)),
                         ("_blas_product", (map_conv.TIMING_ROWS, 24), (16, 24))]
        onednn_s = 2.0
        assert map_conv.product_kernel(torch.float32, 24, 8) == "blas"  # another shape is timed anew
        assert len(calls) == 4
        monkeypatch.setattr(map_conv, "PRODUCTS", "fastest")
        with pytest.raises(ValueError, match="TAL_MAP_CONV_PRODUCTS"):
            map_conv.product_kernel(torch.float32, 24, 16)
    finally:
        map_conv._faster_kernel.cache_clear()


def test_map_conv_strategy_by_products_and_bad_names():
    # products per sample, 2D-TAN's N=16 K5L8 triangle: official 196,800, crop boxes 120,000, pairs 76,800
    charades = MaskedMapConv(sparse_map_mask(16), 1, 1, 5, 8)
    assert (charades.crop_products, charades.num_pairs) == (120000, 76800)
    # FFT tiles: 6,120 complex products (tiles x frequencies over the 8 layers) of 4 real ones, 0.32 of the pairs
    assert charades.fft_products == 24480
    assert (charades.strategy, charades.inference_strategy) == ("fft", "fft")
    assert MaskedMapConv(sparse_map_mask(16), 1, 1, 5, 8, strategy="pairs").inference_strategy == "pairs"
    small = MaskedMapConv(sparse_map_mask(16), 1, 1, 3, 4)  # K3L4: FFT tiles save nothing (6,096 vs 6,120)
    assert (small.num_pairs, small.crop_products, small.strategy, small.inference_strategy) == \
        (6120, 11736, "pairs", "pairs")
    # a full map wastes few products on crop: 6 x 6 cells, one 3x3 layer reading 8 x 8; FFT: one 8 x 8 tile
    # (6 x 5 frequencies x 4) saves too few
    dense = MaskedMapConv(torch.ones(6, 6, dtype=torch.bool), 1, 1, 3, 1)
    assert (dense.crop_products, dense.num_pairs, dense.fft_products, dense.strategy) == (324, 256, 240, "crop")
    wide = MaskedMapConv(torch.ones(10, 10, dtype=torch.bool), 1, 1, 3, 2)  # 14 x 8 frequencies per 12 x 12
    assert (wide.num_pairs, wide.fft_products, wide.strategy) == (1800, 896, "fft")
    with pytest.raises(ValueError, match="strategy must be one of"):
        MaskedMapConv(sparse_map_mask(16), 1, 1, 5, 8, strategy="fast")


@pytest.mark.parametrize("strategy", ["pairs", "crop", "fft"])
@pytest.mark.parametrize("num_clips, kernel, layers", [(16, 5, 8), (64, 9, 4)])
def test_map_conv_gradients_equal_the_official_stacks(num_clips, kernel, layers, strategy):
    torch.manual_seed(0)
    mask = sparse_map_mask(num_clips)
    conv = MaskedMapConv(mask, 3, 4, kernel, layers, strategy=strategy)
    for layer in conv.convs:  # weights that keep every layer alive (the default init dies out in 8 layers)
        nn.init.normal_(layer.weight, std=3.0 / kernel)
        nn.init.normal_(layer.bias, std=0.1)
    x = (torch.randn(2, 3, num_clips, num_clips) * mask).requires_grad_()
    upstream = torch.randn(2, 4, num_clips, num_clips)
    grads = []
    for run in (conv, lambda v: official_map_conv(conv, mask, v)):
        conv.zero_grad()
        x.grad = None
        ((run(x) * mask) * upstream).sum().backward()
        grads.append([x.grad * mask] + [p.grad.clone() for p in conv.parameters()])  # callers mask the input
    # FFT tiles round in the transforms: errors scale with the summands, not with a sum that cancels (a
    # bias gradient of 1e-7 beside others of 1e-4 came out 2e-10 off), so they get 1e-5 of the largest value.
    atol = 1e-5 if strategy == "fft" else 1e-6
    for ours, theirs in zip(*grads):
        assert float(theirs.abs().max()) > 0
        assert torch.allclose(ours, theirs, rtol=1e-4, atol=atol * float(theirs.abs().max()))


@pytest.mark.parametrize("strategy", ["pairs", "crop", "fft"])
def test_map_conv_under_autocast_computes_in_the_autocast_dtype(strategy):
    torch.manual_seed(0)
    mask = sparse_map_mask(16)
    conv = MaskedMapConv(mask, 8, 8, 5, 2, strategy=strategy)
    x = (torch.randn(2, 8, 16, 16) * mask).requires_grad_()
    with torch.no_grad():
        full = conv(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = conv(x)
    assert half.dtype == torch.bfloat16
    assert torch.allclose(half.float(), full, rtol=0.05, atol=0.02 * float(full.abs().max()))
    half.float().sum().backward()
    assert x.grad.dtype == torch.float32 and conv.convs[0].weight.grad.dtype == torch.float32


@pytest.mark.parametrize("strategy", ["pairs", "crop", "fft"])
def test_map_conv_on_a_rectangular_map_matches_the_official_rule(strategy):
    torch.manual_seed(0)
    durations, steps = torch.arange(6)[:, None], torch.arange(20)[None]
    mask = steps + durations < 20  # BSN++'s [duration, start] map: a proposal must end inside the video
    conv = MaskedMapConv(mask, 3, 4, 3, 2, strategy=strategy)
    x = torch.randn(2, 3, 6, 20) * mask
    with torch.no_grad():
        expected = official_map_conv(conv, mask, x) * mask
        out = conv(x)
    assert out.shape == (2, 4, 6, 20)
    assert torch.allclose(out * mask, expected, rtol=1e-5, atol=1e-7 * float(expected.abs().max()))


def test_needed_cells_by_hand():
    # N = 2, one valid cell (0, 1), a 3x3 kernel twice: the official map is padded by 2.
    mask = torch.tensor([[False, True], [False, False]])
    needed, weights, margin = needed_cells(mask, kernel_size=3, num_layers=2)
    assert margin == 2  # layer 1 needs cells one step outside the map; their kernels one more
    last = needed[1][margin:margin + 2, margin:margin + 2]
    assert torch.equal(last, mask)
    # layer 1: every cell within one step of (0, 1) sees (0, 1) alone: weight 1 / 1
    first = needed[0]
    rows, cols = first.nonzero(as_tuple=True)
    assert (rows - margin).tolist() == [-1, -1, -1, 0, 0, 0, 1, 1, 1]
    assert (cols - margin).tolist() == [0, 1, 2] * 3
    assert torch.equal(weights[0][first], torch.ones(9))
    # layer 2 at (0, 1) sees the 9 cells of layer 1
    assert float(weights[1][margin, margin + 1]) == pytest.approx(1 / 9)


# ---------------------------------------------------------------- targets and loss
def test_iou_target_map_by_hand():
    # N = 4 clips of 2 s; the ground truth [2, 6] s spans clips 1..2
    iou = iou_target_map(torch.tensor([[2.0, 6.0]]), torch.tensor([8.0]), 4)[0]
    third = 1 / 3
    expected = torch.tensor([[0.0, third, 2 / 3, 0.5],
                             [0.0, 0.5, 1.0, 2 / 3],
                             [0.0, 0.0, 0.5, third],
                             [0.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(iou, expected, atol=1e-6)
    charades = scaled_iou_targets(iou, 0.5, 1.0)
    assert torch.allclose(charades, torch.tensor([[0.0, 0.0, third, 0.0], [0.0, 0.0, 1.0, third],
                                                  [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]), atol=1e-6)
    tacos = scaled_iou_targets(iou, 0.3, 0.7)  # (iou - 0.3) / 0.4, clipped
    a, b = (third - 0.3) / 0.4, (2 / 3 - 0.3) / 0.4
    assert torch.allclose(tacos, torch.tensor([[0.0, a, b, 0.5], [0.0, 0.5, 1.0, b],
                                               [0.0, 0.0, 0.5, a], [0.0, 0.0, 0.0, 0.0]]), atol=1e-6)


def test_bce_is_averaged_over_valid_cells_only():
    iou = iou_target_map(torch.tensor([[2.0, 6.0]]), torch.tensor([8.0]), 4)
    mask = torch.ones(4, 4, dtype=torch.bool).triu()
    logits = torch.full((1, 4, 4), 2.0)
    logits[0, 3, 0] = -50.0  # below the diagonal: ignored
    target = scaled_iou_targets(iou, 0.5, 1.0)[0][mask]  # 10 cells: 1, 1/3, 1/3, zeros
    per_cell = target * math.log(1 + math.exp(-2.0)) + (1 - target) * math.log(1 + math.exp(2.0))
    assert scaled_iou_bce(logits, iou, mask, 0.5, 1.0).item() == pytest.approx(per_cell.mean().item(), rel=1e-6)


def test_loss_goes_down_on_a_tiny_batch():
    torch.manual_seed(0)
    model = tiny_model()
    batch = tiny_batch(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = model(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


# ---------------------------------------------------------------- model contract
@pytest.mark.parametrize("prop", ["pool", "conv"])
@pytest.mark.parametrize("kernel, layers", [(5, 8), (9, 4)])
def test_model_outputs_for_both_variants_and_map_convs(prop, kernel, layers):
    model = tiny_model(prop=prop, map_kernel=kernel, map_layers=layers, frame_stride=2)
    batch = tiny_batch(model, batch_size=2)
    out = model(batch)
    assert set(out) == {"loss", "loss_bce"} and out["loss"].shape == () and torch.isfinite(out["loss"])
    scores = model.predict(batch)
    assert scores.shape == (2, 16, 16) and not scores.requires_grad
    assert torch.all(scores[:, ~model.mask] == 0)
    assert torch.all((scores[:, model.mask] > 0) & (scores[:, model.mask] < 1))
    moments = model.decode(scores, batch["duration"], nms_threshold=0.5, top_k=5)
    assert [len(m) for m in moments] == [5, 5]
    assert all(0 <= s < e <= 32.0 for m in moments for s, e, _ in m)


def test_model_at_64_clips_uses_the_sparse_map():
    model = tiny_model(num_clips=64, prop="conv", map_kernel=9, map_layers=4)
    assert int(model.mask.sum()) == 1104 and len(model.prop.layers) == 32
    assert model.predict(tiny_batch(model, batch_size=1)).shape == (1, 64, 64)


@pytest.mark.parametrize("prop", ["pool", "conv"])
def test_queries_sharing_a_video_by_video_index_score_as_with_copies(prop):
    """features [V, T, D] + video_index [B] is the same batch as the features repeated per query."""
    model = tiny_model(prop=prop).eval()
    batch = tiny_batch(model, batch_size=3)  # three videos, three sentences
    shared = dict(batch, video_index=torch.tensor([2, 0, 2]))  # queries 0 and 2 about video 2, query 1 about 0
    copies = dict(batch, features=batch["features"][[2, 0, 2]])
    assert torch.allclose(model.predict(shared), model.predict(copies), atol=1e-6)
    assert torch.allclose(model(dict(shared))["loss"], model(dict(copies))["loss"], atol=1e-6)


def test_word_vectors_and_token_ids_give_the_same_scores():
    model = tiny_model().eval()
    batch = tiny_batch(model)
    as_vectors = dict(batch, words=model.text.embedding(batch["words"]))
    assert torch.allclose(model.predict(batch), model.predict(as_vectors), atol=1e-6)


def test_checkpoint_restores_the_vocabulary():
    model = tiny_model().eval()
    batch = tiny_batch(model)
    cfg = {"input_dim": 6, "num_clips": 16, "hidden_dim": 8, "map_kernel": 3, "map_layers": 2,
           "text": {"embed_dim": 5, "hidden_dim": 8, "num_layers": 1, "vocab": len(model.text.vocab)}}
    reloaded = build_tan2d(cfg).eval()
    reloaded.load_state_dict(model.state_dict())
    assert reloaded.text.vocab.tokens == model.text.vocab.tokens
    fresh = dict(batch, **reloaded.prepare_text([SENTENCES[i % 3] for i in range(3)]))
    assert torch.equal(model.predict(batch), reloaded.predict(fresh))


def test_feature_length_is_checked():
    model = tiny_model(frame_stride=4)
    batch = tiny_batch(model)
    batch["features"] = batch["features"][:, :60]
    with pytest.raises(ValueError, match=r"features have 60 steps, 2D-TAN expects num_clips \* frame_stride = 64"):
        model(batch)


def test_unknown_config_keys_are_refused():
    with pytest.raises(TalInputError, match=r"unknown model key\(s\) for 2dtan \['kernel'\]"):
        build_tan2d({"input_dim": 4, "kernel": 5})
    with pytest.raises(TalInputError, match=r"unknown model.loss key\(s\) \['min'\]"):
        build_tan2d({"input_dim": 4, "loss": {"min": 0.3}})
    with pytest.raises(TalInputError, match="model.prop must be 'pool' or 'conv', got 'avg'"):
        build_tan2d({"input_dim": 4, "prop": "avg"})


# ---------------------------------------------------------------- decoding
def test_decode_moments_by_hand():
    # N = 4 clips; query 0 lasts 8 s (2 s a clip), query 1 lasts 4 s
    scores = torch.full((2, 4, 4), 0.05)
    scores[0, 1, 2] = 0.9  # [2, 6] s
    scores[0, 1, 3] = 0.8  # [2, 8]: IoU 4/6 with [2, 6] -> suppressed
    scores[0, 0, 0] = 0.7  # [0, 2]
    scores[0, 1, 1] = 0.65  # [2, 4]: IoU exactly 0.5 with [2, 6] -> kept (only > threshold is suppressed)
    scores[0, 3, 0] = 0.99  # end before start: never a candidate
    scores[1, 3, 3] = 0.5  # [3, 4] s
    moments = decode_moments(scores, torch.tensor([8.0, 4.0]), nms_threshold=0.5, top_k=3)
    assert moments[0] == [pytest.approx((2.0, 6.0, 0.9)), pytest.approx((0.0, 2.0, 0.7)),
                          pytest.approx((2.0, 4.0, 0.65))]
    assert moments[1][0] == pytest.approx((3.0, 4.0, 0.5))
    assert len(moments[1]) == 3


def test_decode_without_top_k_keeps_every_survivor_and_honours_the_mask():
    scores = torch.rand(1, 4, 4)
    everything = decode_moments(scores, [4.0], nms_threshold=1.0, top_k=None)
    assert len(everything[0]) == 10  # all cells with start <= end, nothing suppressed at threshold 1
    assert [m[2] for m in everything[0]] == sorted((m[2] for m in everything[0]), reverse=True)
    diagonal = decode_moments(scores, [4.0], nms_threshold=1.0, top_k=None, valid_mask=torch.eye(4, dtype=torch.bool))
    assert sorted((s, e) for s, e, _ in diagonal[0]) == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0), (3.0, 4.0)]


# ---------------------------------------------------------------- clip averaging
def test_average_to_num_clips_follows_2dtan():
    x = np.arange(10, dtype=np.float32)[:, None] * np.array([[1.0, -1.0]], dtype=np.float32)  # [10, 2]
    out = average_to_num_clips(x, 5)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    # spans [0,2) [2,4) [4,6) [6,8) [8,9): the last boundary is capped at T-1, so feature 9 is left out
    assert np.allclose(out[:, 0], [0.5, 2.5, 4.5, 6.5, 8.0])
    # bounds round(0, .75, 1.5, 2.25, 3) -> 0 1 2 2 2: clips [0,1) [1,2), then empty spans repeat feature 2
    short = average_to_num_clips(torch.tensor([[1.0], [2.0], [4.0]]), 4)
    assert torch.equal(short[:, 0], torch.tensor([1.0, 2.0, 4.0, 4.0]))


def test_inference_keeps_tap_matrices_until_the_weight_changes():
    """Under no_grad the transposed weights are kept; an in-place update or a new state dict is seen."""
    torch.manual_seed(0)
    mask = sparse_map_mask(16)
    conv = MaskedMapConv(mask, 3, 4, 5, 8, strategy="pairs")
    for layer in conv.convs:
        nn.init.normal_(layer.weight, std=0.6)
    x = torch.randn(2, 3, 16, 16) * mask
    with torch.no_grad():
        first = conv(x)
        kept = conv._tap_matrices(0, torch.float32)
        assert conv._tap_matrices(0, torch.float32) is kept
        torch.testing.assert_close(first, official_map_conv(conv, mask, x) * mask, atol=1e-5, rtol=1e-4)
        for layer in conv.convs:
            layer.weight.mul_(-0.5)
        second = conv(x)
        assert conv._tap_matrices(0, torch.float32) is not kept
        torch.testing.assert_close(second, official_map_conv(conv, mask, x) * mask, atol=1e-5, rtol=1e-4)
        conv.load_state_dict({k: torch.randn_like(v) for k, v in conv.state_dict().items()})
        torch.testing.assert_close(conv(x), official_map_conv(conv, mask, x) * mask, atol=1e-5, rtol=1e-4)
    assert not torch.equal(first, second)
    conv(x).sum().backward()  # with autograd the matrices are built per call and nothing is kept
    assert conv._kept_taps == {}


@pytest.mark.parametrize("plan", ["pairs", "crop", "fft"])
def test_map_conv_plan_is_a_model_key_of_every_map_head(plan):
    from tal.models.bsnpp import build_bsnpp
    from tal.models.s2dtan import build_s2dtan

    tan = build_tan2d(dict(input_dim=8, num_clips=16, hidden_dim=8, map_conv_plan=plan,
                           text={"encoder": "lstm", "embed_dim": 8, "hidden_dim": 8}), vocab=3)
    bsnpp = build_bsnpp(dict(input_dim=8, num_steps=16, base_dim=8, cbg_dim=8, map_dim=8, num_samples=4,
                             map_conv_plan=plan))
    s2dtan = build_s2dtan(dict(input_dim=8, num_clips=16, hidden_dim=8, map_kernel=3, map_layers=2,
                               map_conv_plan=plan))
    for conv in [tan.map_conv, bsnpp.map_conv] + [head.map_conv for head in s2dtan.heads]:
        assert (conv.strategy, conv.inference_strategy) == (plan, plan)
    assert build_tan2d(dict(input_dim=8, num_clips=16, hidden_dim=8), vocab=3).map_conv.strategy == "fft"  # auto, K5L8
    with pytest.raises(TalInputError, match=r"model.map_conv_plan must be one of auto, crop, pairs, fft, got 'fast'"):
        build_tan2d(dict(input_dim=8, num_clips=16, hidden_dim=8, map_conv_plan="fast"), vocab=3)
