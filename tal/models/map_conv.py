"""2D-TAN's masked map convolutions, computed on the cells that matter only.

2D-TAN's MapConv pads the map by P = (K-1)L/2 once, then runs L unpadded KxK convs; after each, a cell
is ReLU(conv) times 1 / (valid cells under its kernel), 0 where the kernel saw none. Most of what the
padded stack computes never reaches a valid output, and most of what a kernel reads is 0 (the map is
sparse and so is its padding). `MaskedMapConv` gives the same numbers while multiplying only pairs of
(needed output cell, computed input cell): per layer and kernel tap one gather, one GEMM and one
accumulation over a plan of cell pairs built once (`conv_pairs`). Cells are rows of [cells + 1, B, C]
tensors (the last row is 0), so a gather moves whole batches of channels.
"""
from __future__ import annotations

import functools
import os
import time
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from tal.errors import TalInputError
from tal.models import map_conv_fft


def masked_conv_weights(mask: torch.Tensor, kernel_size: int, paddings: list[int]) -> list[torch.Tensor]:
    """Per-layer output weights of a masked 2D conv stack (2D-TAN's MapConv re-normalisation).

    For each layer, a cell's weight is 1 / (number of valid cells under its kernel), 0 where the kernel
    sees none; the cells with a non-zero weight are the valid cells of the next layer.
    mask [N, N] bool -> list of [1, 1, H_l, W_l] float.
    """
    ones = mask.new_ones(1, 1, kernel_size, kernel_size, dtype=torch.float32)
    valid = mask.float()[None, None]
    weights = []
    for padding in paddings:
        count = torch.round(F.conv2d(valid, ones, padding=padding))
        weight = torch.where(count > 0, 1.0 / count.clamp(min=1), torch.zeros_like(count))
        weights.append(weight)
        valid = (count > 0).float()
    return weights


def needed_cells(mask: torch.Tensor, kernel_size: int,
                 num_layers: int) -> tuple[list[torch.Tensor], list[torch.Tensor], int]:
    """Which cells of each layer of 2D-TAN's MapConv can reach a valid output, and their weights.

    The official stack pads the map by P = (K-1)L/2 once, so layer l's output covers P - l*h more
    cells on each side than the map (h = (K-1)/2), and most of them are either weighted 0 (the kernel
    saw no valid cell) or outside every valid output cell's receptive field. Layer L needs the valid
    cells; layer l needs the cells of non-zero weight within h of a cell layer l+1 needs. Everything is
    placed on one canvas, the map plus a margin m on each side (what the needed cells and their kernels
    reach). mask [H, W] bool -> (per layer: needed [H + 2m, W + 2m] bool, weight of the same shape, 0
    off the needed cells), m.
    """
    (height, width), half = mask.shape, (kernel_size - 1) // 2
    pad = half * num_layers
    official = masked_conv_weights(mask, kernel_size, [pad] + [0] * (num_layers - 1))
    weights = [F.pad(w[0, 0], [half * (i + 1)] * 4) for i, w in enumerate(official)]  # [H + 2P, W + 2P] each
    needed = [torch.zeros_like(weights[0], dtype=torch.bool) for _ in range(num_layers)]
    needed[-1][pad:pad + height, pad:pad + width] = mask
    for layer in range(num_layers - 2, -1, -1):
        grown = F.max_pool2d(needed[layer + 1].float()[None, None], kernel_size, 1, half)[0, 0] > 0
        needed[layer] = grown & (weights[layer] > 0)
    rows, cols = torch.stack(needed).any(dim=0).nonzero(as_tuple=True)
    reach = max(pad - int(rows.min()), int(rows.max()) + 1 - pad - height,
                pad - int(cols.min()), int(cols.max()) + 1 - pad - width, 0)
    margin = reach + half
    crop = (slice(pad - margin, pad + height + margin), slice(pad - margin, pad + width + margin))
    return [n[crop] for n in needed], [(w * n)[crop] for w, n in zip(weights, needed)], margin


# A tap that pairs every output cell runs over all of them ("dense": one gather and one accumulating GEMM);
# the others multiply their pairs only and scatter the products with a gather ("sparse"). A dense tap over
# cells without a partner multiplies the zero row: on the N=16 K5L8 map a share of 0.6 computed 92,400
# products per sample for 76,800 pairs. Where a sparse tap pairs every input cell in order (the layers
# whose maps grow) the input gather and the backward scatter are skipped (`fwd_same`).
DENSE_TAP_SHARE = 1.0


# "crop": dense convs over each layer's bounding box of needed cells (the official arithmetic on fewer
# cells, oneDNN / cuDNN kernels); "pairs": only (needed output, computed input) cell pairs, gathers and GEMMs.
# "auto" takes "crop" unless it multiplies over CROP_PRODUCT_RATIO times the pairs. On a 2-core AVX-512 CPU
# (tools/bench/bench_map_conv.py), with the pair products through oneDNN, pairs beat crop at 2D-TAN's N=16
# K5L8 map (1.56x the products; 1.62 / 5.56 s vs 1.85 / 5.84 s infer / train at batch 8) and at BSN++'s
# 100 x 100 pair of 3x3 convs (2.02x). With torch.addmm products crop had won at N=16 (1.75 was the ratio).
STRATEGIES = ("auto", "crop", "pairs", "fft")
CROP_PRODUCT_RATIO = 1.5
# "fft": FFT tiles (`map_conv_fft`), counted in real-product units (`fft_products`). "auto" takes it where it
# multiplies at most FFT_TRAIN_RATIO (training) or FFT_INFER_RATIO (under no_grad) of the pairs' products.
# Measured on the 2-core Xeon (map conv alone, train / infer s, fft vs pairs, 2 threads): at 0.31 (N=16 K5L8,
# 512 ch, batch 32) 9.6 / 2.7 vs 20.6 / 6.1; at 0.44 (BSN++ 100 x 100, 3x3 x 2, 128 ch, batch 16) 1.35 / 0.70
# vs 2.2 / 0.85; at 0.14 (N=64 K9L4, batch 4) 7.5 / 1.6 vs 26 / 7.1; at 0.67 (N=32 K3L4, 256 ch, batch 16)
# 0.75 / 0.23 vs 0.63 / 0.20 and at 1.0 (N=16 K3L4, 512 ch, batch 16) 1.9 / 0.31 vs 1.3 / 0.40.
FFT_INFER_RATIO = 0.5
FFT_TRAIN_RATIO = 0.5


def check_plan(plan: str) -> str:
    """A head's `model.map_conv_plan` (one of STRATEGIES), or a one-line config error naming them."""
    if plan not in STRATEGIES:
        raise TalInputError(f"model.map_conv_plan must be one of {', '.join(STRATEGIES)}, got {plan!r}")
    return plan


def _bounding_box(cells: torch.Tensor) -> tuple[int, int, int, int]:
    rows, cols = cells.nonzero(as_tuple=True)
    return int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1


class TapPlan(NamedTuple):
    """How one kernel tap of one layer runs; (start, end) slices of the layer's packed index buffer.

    dense: forward gathers input rows `fwd` [n_out] (n_in = the zero row), backward gathers output
    rows `bwd` [n_in] (n_out = the zero row); `fwd_same` / `bwd_same` mark an identity gather (skipped).
    sparse: `fwd` holds the pairs' input rows, `bwd` their output rows, `fwd_map` [n_out] and
    `bwd_map` [n_in] each cell's pair (the pair count where it has none); `fwd_same`: the pairs are the
    input cells in order (`fwd` and `bwd_map` are the identity).
    """

    tap: int
    dense: bool
    fwd: tuple[int, int]
    bwd: tuple[int, int]
    fwd_map: tuple[int, int] = (0, 0)
    bwd_map: tuple[int, int] = (0, 0)
    fwd_same: bool = False
    bwd_same: bool = False


def conv_pairs(inputs: torch.Tensor, outputs: torch.Tensor, kernel_size: int,
               dense_share: float | None = None) -> tuple[torch.Tensor, list[TapPlan], int]:
    """Plan a KxK conv from one cell set to another, tap by tap, over the cell pairs it multiplies.

    inputs, outputs [H, W] bool on one canvas; each set's cells are numbered in row-major order, and the
    row after the last (n_in, n_out) is a zero row. Output cell (r, c) reads input (r + dy - h, c + dx - h)
    through tap (dy, dx), h = (K-1)/2, as an unpadded conv2d does; taps that pair nothing are left out.
    Within a tap a cell has at most one partner, so every scatter is a gather. -> (packed index buffer
    [long], plans, pairs multiplied per sample).
    """
    dense_share = DENSE_TAP_SHARE if dense_share is None else dense_share
    half = (kernel_size - 1) // 2
    num_in, num_out = int(inputs.sum()), int(outputs.sum())
    index = torch.full(inputs.shape, -1, dtype=torch.long)
    index[inputs] = torch.arange(num_in)
    index = F.pad(index, [half] * 4, value=-1)  # a tap may look past the canvas edge: no input there
    rows, cols = outputs.nonzero(as_tuple=True)
    parts, plans, size, num_pairs = [], [], 0, 0

    def put(values: torch.Tensor) -> tuple[int, int]:
        nonlocal size
        parts.append(values)
        size += len(values)
        return size - len(values), size

    for tap in range(kernel_size * kernel_size):
        source = index[rows + tap // kernel_size, cols + tap % kernel_size]  # [n_out], -1: no partner
        keep = (source >= 0).nonzero(as_tuple=True)[0]
        count = len(keep)
        if not count:
            continue
        num_pairs += count
        if count >= dense_share * num_out:
            fwd = torch.where(source >= 0, source, num_in)
            bwd = torch.full((num_in,), num_out, dtype=torch.long).index_copy_(0, source[keep], keep)
            plans.append(TapPlan(tap, True, put(fwd), put(bwd),
                                 fwd_same=num_in >= num_out and bool((fwd == torch.arange(num_out)).all()),
                                 bwd_same=num_out >= num_in and bool((bwd == torch.arange(num_in)).all())))
        else:
            local = torch.arange(count)
            fwd_map = torch.full((num_out,), count, dtype=torch.long).index_copy_(0, keep, local)
            bwd_map = torch.full((num_in,), count, dtype=torch.long).index_copy_(0, source[keep], local)
            same = count == num_in and bool((source[keep] == local).all())
            plans.append(TapPlan(tap, False, put(source[keep]), put(keep), put(fwd_map), put(bwd_map),
                                 fwd_same=same))
    packed = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
    return packed, plans, num_pairs


# The pair plan's forward and input-gradient products run on the CPU through whichever of oneDNN's inner
# product (in blocks of PRODUCT_ROWS rows) and torch.mm (MKL / OpenBLAS) is faster on this machine, timed
# once per process and product shape (`product_kernel`). Neither wins everywhere, [M, 512] x [512, 512]:
# on a 2-core AMD EPYC (AVX-512) MKL reached 95-160 GFLOPS and oneDNN 220-350; on a 2-core Intel Xeon
# (Sapphire Rapids) MKL 186-213 and oneDNN 155-175 (tools/bench/bench_map_conv.py: the N=16 pair plan's
# forward 2.4x faster with oneDNN on the first, 1.25x slower on the second). PRODUCTS "onednn" or "blas"
# (or the TAL_MAP_CONV_PRODUCTS environment variable) fixes the choice; "auto" times both.
PRODUCT_KERNELS = ("auto", "onednn", "blas")
PRODUCTS = os.environ.get("TAL_MAP_CONV_PRODUCTS", "auto")
PRODUCT_ROWS = 4096
TIMING_ROWS = 8192


def _onednn_linear():
    """oneDNN's inner product (a private torch op), None where this torch build lacks it."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise.default
    except (AttributeError, RuntimeError):
        return None


_LINEAR = _onednn_linear()


def _onednn_product(out: torch.Tensor, rows: torch.Tensor, weight_t: torch.Tensor, accumulate: bool) -> None:
    weight_t = weight_t.contiguous()
    for start in range(0, rows.shape[0], PRODUCT_ROWS):
        block = _LINEAR(rows[start:start + PRODUCT_ROWS], weight_t, None, "none", [], "")
        target = out[start:start + PRODUCT_ROWS]
        target.add_(block) if accumulate else target.copy_(block)


def _blas_product(out: torch.Tensor, rows: torch.Tensor, weight_t: torch.Tensor, accumulate: bool) -> None:
    if accumulate:
        out.addmm_(rows, weight_t.T)
    else:
        torch.mm(rows, weight_t.T, out=out)


def _time_product(kernel, rows: torch.Tensor, weight_t: torch.Tensor, out: torch.Tensor, repeats: int = 3) -> float:
    """Fastest of `repeats` timed calls after one warm-up (oneDNN builds its primitive on the first)."""
    kernel(out, rows, weight_t, True)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        kernel(out, rows, weight_t, True)
        best = min(best, time.perf_counter() - start)
    return best


def product_kernel(dtype: torch.dtype, in_width: int, out_width: int) -> str:
    """"onednn" or "blas": the kernel for [M, in_width] x [in_width, out_width] products on the CPU.

    PRODUCTS unless it is "auto"; "blas" where torch lacks oneDNN; else the faster of the two on this
    machine (`_faster_kernel`).
    """
    if PRODUCTS not in PRODUCT_KERNELS:
        raise ValueError(f"map conv products must be one of {PRODUCT_KERNELS} (PRODUCTS or "
                         f"TAL_MAP_CONV_PRODUCTS), got {PRODUCTS!r}")
    if _LINEAR is None:
        return "blas"
    if PRODUCTS != "auto":
        return PRODUCTS
    return _faster_kernel(dtype, in_width, out_width, torch.get_num_threads())


@functools.lru_cache(maxsize=None)
def _faster_kernel(dtype: torch.dtype, in_width: int, out_width: int, threads: int) -> str:
    """Times both kernels on TIMING_ROWS random rows, once per process, shape and thread count (a
    fraction of a second at 512 channels)."""
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(TIMING_ROWS, in_width, generator=generator).to(dtype)
    weight_t = torch.randn(out_width, in_width, generator=generator).to(dtype)
    out = rows.new_zeros(TIMING_ROWS, out_width)
    onednn = _time_product(_onednn_product, rows, weight_t, out)
    blas = _time_product(_blas_product, rows, weight_t, out)
    return "onednn" if onednn < blas else "blas"


def _product(out: torch.Tensor, rows: torch.Tensor, weight_t: torch.Tensor, accumulate: bool) -> None:
    """out (+)= rows @ weight_t.T: rows [M, C_a], weight_t [C_b, C_a] (contiguous or its transpose), out [M, C_b]."""
    if (rows.device.type == "cpu" and rows.dtype in (torch.float32, torch.bfloat16)
            and product_kernel(rows.dtype, rows.shape[1], weight_t.shape[0]) == "onednn"):
        _onednn_product(out, rows, weight_t, accumulate)
    else:
        _blas_product(out, rows, weight_t, accumulate)


def _gather(rows: torch.Tensor, index: torch.Tensor, span: tuple[int, int], same: bool, count: int) -> torch.Tensor:
    """rows[index[span]] as [count * B, C] (the first `count` rows where the gather is the identity)."""
    picked = rows[:count] if same else rows.index_select(0, index[span[0]:span[1]])
    return picked.view(-1, rows.shape[-1])


def _scatter_add(total: torch.Tensor, rows: torch.Tensor, weight_t: torch.Tensor, cell_map: torch.Tensor) -> None:
    """total[cell] += (rows @ weight_t.T)[cell_map[cell]], the products written straight into a buffer whose
    extra last row is 0 (index_add_ is several times slower than index_select on the CPU).
    rows [p * B, C_a], weight_t [C_b, C_a], total [n + 1, B, C_b] (n = len(cell_map))."""
    batch = total.shape[1]
    buffer = rows.new_empty(rows.shape[0] // batch + 1, batch, weight_t.shape[0])
    buffer[-1].zero_()
    _product(buffer[:-1].view(-1, weight_t.shape[0]), rows, weight_t, accumulate=False)
    total[:len(cell_map)].add_(buffer.index_select(0, cell_map))


# One strided copy of a [C_out * C_in, K * K] weight into tap-major order ran at 1-3 GB/s on the CPU (K9,
# 512 channels: 174 ms, with the second orientation 467 ms per layer and forward pass); copies of blocks
# that stay in cache took 33-44 ms.
TRANSPOSE_ROWS = 8192


def _transposed(matrix: torch.Tensor) -> torch.Tensor:
    """matrix [A, B] -> its transpose [B, A], contiguous, copied TRANSPOSE_ROWS rows of `matrix` at a time."""
    out = matrix.new_empty(matrix.shape[1], matrix.shape[0])
    for start in range(0, matrix.shape[0], TRANSPOSE_ROWS):
        out[:, start:start + TRANSPOSE_ROWS].copy_(matrix[start:start + TRANSPOSE_ROWS].T)
    return out


def tap_matrices(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """conv weight [C_out, C_in, K, K] -> one [C_out, C_in] matrix per tap, [K * K, C_out, C_in] contiguous."""
    c_out, c_in, k, _ = weight.shape
    return _transposed(weight.detach().to(dtype).reshape(c_out * c_in, k * k)).view(k * k, c_out, c_in)


class _PairConv(torch.autograd.Function):
    """conv2d on cell lists: x [n_in + 1, B, C_in] -> [n_out + 1, B, C_out] (last rows: the zero row in,
    bias out; callers weight it by 0), bias on every output cell.

    Only x is kept for backward (each tap's gather is redone there), so memory does not grow with the
    number of pairs. Under autocast the work runs in the autocast dtype, gradients come back in the
    inputs' dtypes. `taps_t` is `tap_matrices(weight, work dtype)` (the caller may keep it between calls);
    its dtype is the one the work runs in.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, taps_t, index, plans, num_out):
        c_out, c_in, k, _ = weight.shape
        batch, num_in, dtype = x.shape[1], x.shape[0] - 1, taps_t.dtype
        ctx.dtypes = (x.dtype, weight.dtype, bias.dtype)
        with torch.autocast(x.device.type, enabled=False):
            x = x.to(dtype).contiguous()
            out = bias.to(dtype).expand(num_out + 1, batch, c_out).contiguous()
            flat = out[:num_out].view(-1, c_out)
            for plan in plans:
                if plan.dense:
                    _product(flat, _gather(x, index, plan.fwd, plan.fwd_same, num_out), taps_t[plan.tap], True)
                else:
                    rows = _gather(x, index, plan.fwd, plan.fwd_same, num_in)
                    _scatter_add(out, rows, taps_t[plan.tap], index[plan.fwd_map[0]:plan.fwd_map[1]])
        ctx.save_for_backward(x, taps_t, index)
        ctx.plans, ctx.kernel, ctx.num_in = plans, k, num_in
        return out

    @staticmethod
    def backward(ctx, grad):
        x, taps_t, index = ctx.saved_tensors
        (x_dtype, weight_dtype, bias_dtype), k, num_in = ctx.dtypes, ctx.kernel, ctx.num_in
        _, c_out, c_in = taps_t.shape
        num_out = grad.shape[0] - 1
        grad = grad.to(x.dtype).contiguous()  # its last row is 0: the bias row is weighted by 0
        want_x, want_weight, want_bias = ctx.needs_input_grad[:3]
        grad_x = torch.zeros_like(x) if want_x else None
        grad_taps = torch.zeros_like(taps_t) if want_weight else None  # [K*K, Co, Ci]
        with torch.autocast(x.device.type, enabled=False):
            for plan in ctx.plans:
                if plan.dense:
                    if want_x:
                        _product(grad_x[:num_in].view(-1, c_in), _gather(grad, index, plan.bwd, plan.bwd_same, num_in),
                                 taps_t[plan.tap].T, True)
                    if want_weight:
                        rows = _gather(x, index, plan.fwd, plan.fwd_same, num_out)
                        torch.mm(grad[:num_out].view(-1, c_out).T, rows, out=grad_taps[plan.tap])
                else:
                    g = _gather(grad, index, plan.bwd, False, 0)  # [p * B, C_out]
                    if want_x and plan.fwd_same:
                        _product(grad_x[:num_in].view(-1, c_in), g, taps_t[plan.tap].T, True)
                    elif want_x:
                        _scatter_add(grad_x, g, taps_t[plan.tap].T, index[plan.bwd_map[0]:plan.bwd_map[1]])
                    if want_weight:
                        rows = _gather(x, index, plan.fwd, plan.fwd_same, num_in)
                        torch.mm(g.T, rows, out=grad_taps[plan.tap])
        grad_weight = None if grad_taps is None else \
            _transposed(grad_taps.view(k * k, -1)).view(c_out, c_in, k, k).to(weight_dtype)
        grad_bias = grad.sum(dim=(0, 1)).to(bias_dtype) if want_bias else None
        return (None if grad_x is None else grad_x.to(x_dtype)), grad_weight, grad_bias, None, None, None, None


class MaskedMapConv(nn.Module):
    """A stack of 2D convs over a sparse map whose output is re-weighted by the valid cells it saw.

    The same numbers as 2D-TAN's MapConv (first layer padded by (K-1)*L/2, the rest unpadded, each layer
    ReLU(conv(x)) * weight, `masked_conv_weights`) on the valid cells, the only ones callers keep. The
    input is read on the valid cells only (the official code's input is 0 elsewhere), each layer
    computes the cells some valid output can see (`needed_cells`), and each of those only sums the taps
    that fall on a cell the previous layer computed (`conv_pairs`). The pairs and per-cell weights are
    buffers built once; the parameters are the usual `nn.Conv2d`s (`convs`), so checkpoints and the
    official weights map one to one. x [B, C_in, H, W] -> [B, C_out, H, W], 0 off the mask; or, without
    the round trip, `forward_cells` on [num_valid, B, C_in] (valid cells in row-major order).
    `strategy` "crop" runs each layer as a dense conv over the bounding box of its needed cells instead
    (more products, faster kernels), "fft" by FFT tiles (`map_conv_fft`); "auto" picks by product count
    (`CROP_PRODUCT_RATIO`, `FFT_TRAIN_RATIO`, `FFT_INFER_RATIO`), one plan for training and one under
    no_grad (`inference_strategy`).
    """

    def __init__(self, mask: torch.Tensor, in_dim: int, hidden_dim: int, kernel_size: int, num_layers: int,
                 strategy: str = "auto"):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"map convs need an odd kernel, got {kernel_size=}")
        if strategy not in STRATEGIES:
            raise ValueError(f"map conv strategy must be one of {STRATEGIES}, got {strategy!r}")
        dims = [in_dim] + [hidden_dim] * num_layers
        self.convs = nn.ModuleList(nn.Conv2d(dims[i], dims[i + 1], kernel_size) for i in range(num_layers))
        mask = mask.cpu().bool()
        needed, weights, margin = needed_cells(mask, kernel_size, num_layers)
        valid = torch.zeros_like(needed[0])
        valid[margin:margin + mask.shape[0], margin:margin + mask.shape[1]] = mask
        self.plans, self.sizes, self.pair_counts = [], [], []
        self._kept_taps: dict[int, tuple[tuple, torch.Tensor]] = {}
        self.tile_plans = []
        for i, (cells, weight) in enumerate(zip(needed, weights)):
            inputs = needed[i - 1] if i else valid
            index, plans, num_pairs = conv_pairs(inputs, cells, kernel_size)
            tiles = map_conv_fft.best_tile_plan(inputs, cells, kernel_size)
            self.register_buffer(f"tile_gather_{i}", tiles.gather, persistent=False)
            self.register_buffer(f"tile_place_{i}", tiles.place, persistent=False)
            self.register_buffer(f"tile_unplace_{i}", tiles.unplace, persistent=False)
            self.tile_plans.append(tiles._replace(gather=None, place=None, unplace=None))
            self.register_buffer(f"index_{i}", index, persistent=False)
            weight = F.pad(weight[cells], [0, 1])  # and 0 on the zero row
            self.register_buffer(f"weight_{i}", weight[:, None, None], persistent=False)  # [n_i + 1, 1, 1]
            self.plans.append(plans)
            self.sizes.append(int(cells.sum()))
            self.pair_counts.append(num_pairs)
        self.register_buffer("cells", mask.flatten().nonzero(as_tuple=True)[0], persistent=False)
        self.map_size = tuple(mask.shape)
        self.margin, self.boxes = margin, [_bounding_box(cells) for cells in needed]
        self.crop_products = sum((r1 - r0) * (c1 - c0) * kernel_size ** 2 for r0, r1, c0, c1 in self.boxes)
        self.fft_products = map_conv_fft.fft_products(self.tile_plans)
        for i, ((r0, r1, c0, c1), weight) in enumerate(zip(self.boxes, weights)):
            self.register_buffer(f"box_weight_{i}", weight[r0:r1, c0:c1].clone(), persistent=False)
        self.strategy, self.inference_strategy = strategy, strategy
        if strategy == "auto":
            direct = "crop" if self.crop_products <= CROP_PRODUCT_RATIO * self.num_pairs else "pairs"
            self.strategy = "fft" if self.fft_products <= FFT_TRAIN_RATIO * self.num_pairs else direct
            self.inference_strategy = "fft" if self.fft_products <= FFT_INFER_RATIO * self.num_pairs else direct
        self.register_buffer("canvas_cells", valid.flatten().nonzero(as_tuple=True)[0], persistent=False)
        r0, r1, c0, c1 = self.boxes[-1]  # the last layer's box holds the valid cells: read them from it
        rows, cols = valid.nonzero(as_tuple=True)
        self.register_buffer("box_cells", (rows - r0) * (c1 - c0) + cols - c0, persistent=False)

    @property
    def num_pairs(self) -> int:
        """Cell pairs multiplied per sample over all layers (the official stack: its cells times K*K)."""
        return sum(self.pair_counts)

    def forward_cells(self, x: torch.Tensor) -> torch.Tensor:
        """x [num_valid, B, C_in] on the mask's cells (row-major) -> [num_valid, B, C_out]."""
        strategy = self.strategy if torch.is_grad_enabled() else self.inference_strategy
        if strategy == "crop":
            return self._crop_cells(x)
        if strategy == "fft":
            return self._fft_cells(x)
        x = torch.cat([x, x.new_zeros(1, *x.shape[1:])])  # the zero row the taps read for a missing cell
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        for i, conv in enumerate(self.convs):
            out = _PairConv.apply(x, conv.weight, conv.bias, self._tap_matrices(i, dtype),
                                  getattr(self, f"index_{i}"), self.plans[i], self.sizes[i])
            x = F.relu(out) * getattr(self, f"weight_{i}").to(out.dtype)
        return x[:-1]

    def _tap_matrices(self, layer: int, dtype: torch.dtype) -> torch.Tensor:
        """`tap_matrices` of a layer's weight. Outside autograd they are kept until the weight changes (its
        version, storage or dtype), so inference transposes each weight once: K5 at 512 channels costs
        26 MB a layer (float32) and about 10 ms a call saved, K9 84 MB and 35-170 ms."""
        return self._kept(layer, dtype, lambda weight: tap_matrices(weight, dtype))

    def _kept(self, layer: int, form, build) -> torch.Tensor:
        """build(weight) of a layer; outside autograd kept until the weight changes or another form is asked."""
        weight = self.convs[layer].weight
        if torch.is_grad_enabled():
            self._kept_taps.pop(layer, None)
            return build(weight)
        key = (weight.data_ptr(), weight._version, weight.device, form)
        kept = self._kept_taps.get(layer)
        if kept is None or kept[0] != key:
            kept = self._kept_taps[layer] = (key, build(weight))
        return kept[1]

    def _fft_cells(self, x: torch.Tensor) -> torch.Tensor:
        """Each layer by FFT tiles (`map_conv_fft`), in float32 (half precision would round the transforms
        far past the official numbers); under autocast the output comes back in the autocast dtype."""
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        kernel = self.convs[0].kernel_size[0]
        work = torch.float64 if x.dtype == torch.float64 else torch.float32
        with torch.autocast(device, enabled=False):
            x = torch.cat([x.to(work), x.new_zeros(1, *x.shape[1:], dtype=work)])
            for i, conv in enumerate(self.convs):
                plan = self.tile_plans[i]._replace(gather=getattr(self, f"tile_gather_{i}"),
                                                   place=getattr(self, f"tile_place_{i}"),
                                                   unplace=getattr(self, f"tile_unplace_{i}"))
                mats = map_conv_fft.transforms(plan, kernel, x.device, work)
                weight = conv.weight.to(work)
                parts = None if torch.is_grad_enabled() else self._weight_spectrum(i, mats[2])
                out = map_conv_fft.tile_conv(x, weight, conv.bias.to(work), plan, mats, parts)
                x = F.relu(out) * getattr(self, f"weight_{i}").to(work)
        return x[:-1].to(dtype)

    def _weight_spectrum(self, layer: int, to_spectrum: torch.Tensor) -> torch.Tensor:
        """`weight_spectrum` of a layer, kept outside autograd until the weight changes (as `_tap_matrices`)."""
        return self._kept(layer, ("fft", to_spectrum.shape, to_spectrum.dtype),
                          lambda weight: map_conv_fft.weight_spectrum(weight.to(to_spectrum.dtype), to_spectrum))

    def _crop_cells(self, x: torch.Tensor) -> torch.Tensor:
        """Dense convs, each over the bounding box of the cells its layer needs (oneDNN's direct conv)."""
        _, batch, channels = x.shape
        size = self.map_size[0] + 2 * self.margin, self.map_size[1] + 2 * self.margin
        canvas = x.new_zeros(batch, channels, size[0] * size[1])
        canvas[..., self.canvas_cells] = x.permute(1, 2, 0)
        canvas = canvas.view(batch, channels, *size)
        half = (self.convs[0].kernel_size[0] - 1) // 2
        for i, (conv, (r0, r1, c0, c1)) in enumerate(zip(self.convs, self.boxes)):
            window = canvas[:, :, r0 - half:r1 + half, c0 - half:c1 + half]
            out = F.relu(conv(window))
            out = out * getattr(self, f"box_weight_{i}").to(out.dtype)
            canvas = F.pad(out, [c0, size[1] - c1, r0, size[0] - r1]) if i + 1 < len(self.convs) else out
        return canvas.flatten(2).index_select(2, self.box_cells).permute(2, 0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        cells = x.flatten(2).index_select(2, self.cells).permute(2, 0, 1).contiguous()  # [n, B, C_in]
        out = self.forward_cells(cells)  # [n, B, C_out]
        grid = out.new_zeros(batch, out.shape[-1], height * width)
        grid[..., self.cells] = out.permute(1, 2, 0)
        return grid.view(batch, -1, height, width)
