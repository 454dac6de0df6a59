"""2D-TAN's map convolutions by tiled FFTs: the same sums in fewer multiplications where kernels are large.

A KxK conv over an m x m tile of output cells reads an a x a input tile (a = m + K - 1). In the
frequency domain of a x a tiles it is one complex product per frequency and channel pair, so a tile
costs a * (a/2 + 1) complex products (rfft2's half plane) instead of m * m * K * K real ones: at K=9,
a=16 that is 144 for 64 cells instead of 5,184 (a complex product is 4 real ones). The tiles are laid
over the cells each layer needs (`needed_cells`); a tile holding none is skipped. Every transform is a
GEMM on rows of cells ([cells + 1, B, C], the pair plan's layout, last row 0), so gathers move whole
batches of channels; real and imaginary parts are separate blocks, so the products are four real
batched GEMMs per layer, and the backward pass (`_TileConv`) runs the same transforms transposed.
The DFT is exact arithmetic on a tile (no wrap-around reaches the m x m corner that is kept), so the
only difference from a direct conv is float rounding of the transforms, ~1e-7 of the largest output.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

TILE_SIZES = (4, 8, 12)  # output tile edges tried per layer
COMPLEX_PRODUCT_COST = 4  # real multiplications a complex product takes (`_complex_bmm`: four real GEMMs)


def spectrum_size(tile: int) -> int:
    """Frequencies of rfft2 on a tile x tile input."""
    return tile * (tile // 2 + 1)


class TilePlan(NamedTuple):
    """One layer as FFT tiles: `gather` [a * a * T] input rows (n_in: the zero row) in (u, v, tile)
    order, `place` [n_out + 1] each output cell's row of the [m * m * T] result (the last, for the zero
    row, any), `unplace` [m * m * T] each result row's output cell (n_out where it is no needed cell),
    tiles T, output tile m, input tile a."""

    gather: torch.Tensor
    place: torch.Tensor
    unplace: torch.Tensor
    tiles: int
    out_tile: int
    in_tile: int

    @property
    def products(self) -> float:
        """Complex products per sample and channel pair, in real-product units."""
        return self.tiles * spectrum_size(self.in_tile) * COMPLEX_PRODUCT_COST


def tile_plan(inputs: torch.Tensor, outputs: torch.Tensor, kernel_size: int, out_tile: int) -> TilePlan:
    """Plan an unpadded KxK conv from one cell set to another ([H, W] bool on one canvas) over tiles.

    Output cell (r, c) reads input (r + dy - h, c + dx - h), h = (K-1)/2, as `conv_pairs` does; tiles of
    out_tile x out_tile output cells start at the top-left needed cell's corner.
    """
    half, in_tile = (kernel_size - 1) // 2, out_tile + kernel_size - 1
    num_in = int(inputs.sum())
    index = torch.full(inputs.shape, num_in, dtype=torch.long)
    index[inputs] = torch.arange(num_in)
    index = F.pad(index, [in_tile] * 4, value=num_in)
    rows, cols = outputs.nonzero(as_tuple=True)
    r0, c0 = int(rows.min()), int(cols.min())
    tile_cols = int((cols - c0).max()) // out_tile + 1
    tile_of_cell = ((rows - r0) // out_tile) * tile_cols + (cols - c0) // out_tile
    kept, tile_index = torch.unique(tile_of_cell, return_inverse=True)
    tiles = len(kept)
    top = r0 + (kept // tile_cols) * out_tile - half + in_tile  # in the padded index
    left = c0 + (kept % tile_cols) * out_tile - half + in_tile
    offsets = torch.arange(in_tile)
    gather = index[top[None, None] + offsets[:, None, None], left[None, None] + offsets[None, :, None]]  # [a, a, T]
    place = (((rows - r0) % out_tile) * out_tile + (cols - c0) % out_tile) * tiles + tile_index
    unplace = torch.full((out_tile * out_tile * tiles,), len(place), dtype=torch.long)
    unplace[place] = torch.arange(len(place))
    return TilePlan(gather.flatten(), torch.cat([place, place[:1]]), unplace, tiles, out_tile, in_tile)


def best_tile_plan(inputs: torch.Tensor, outputs: torch.Tensor, kernel_size: int) -> TilePlan:
    """The tile size of TILE_SIZES with the fewest products for this layer."""
    return min((tile_plan(inputs, outputs, kernel_size, m) for m in TILE_SIZES), key=lambda p: p.products)


@functools.lru_cache(maxsize=None)
def _transforms(in_tile: int, out_tile: int, kernel_size: int) -> tuple[torch.Tensor, ...]:
    """Float64 real matrices of the tile transforms, built from torch.fft on unit inputs.

    rows [2f, a]: rfft along a tile row, (re, im) x f; cols [2a, 2a]: the complex DFT down a tile's
    columns, (re / im, k) from (u, re / im); weights [2F, K * K]: the conjugate rfft2 of a kernel (conv2d
    is a correlation), (re / im, k, l); inverse [m * m, 2F]: irfft2 of (re, im) parts back to the kept
    m x m corner. Real and imaginary parts stay apart in every layout, so each is a contiguous
    [frequencies, rows, channels] block and the products are real GEMMs.
    """
    a, m, f = in_tile, out_tile, in_tile // 2 + 1
    spectrum = torch.fft.rfft(torch.eye(a, dtype=torch.float64))  # [v, f]
    rows = torch.cat([spectrum.real.T, spectrum.imag.T])  # [(c, l), v]
    dft = torch.fft.fft(torch.eye(a, dtype=torch.float64))  # [u, k]: e^{-2 pi i k u / a}
    real, imag = dft.real.T, dft.imag.T  # [k, u]
    cols = torch.stack([torch.stack([real, -imag], -1), torch.stack([imag, real], -1)])  # [c', k, u, c]
    cols = cols.reshape(2 * a, 2 * a)
    taps = torch.eye(kernel_size ** 2, dtype=torch.float64).view(-1, kernel_size, kernel_size)
    kernel = F.pad(taps, [0, a - kernel_size, 0, a - kernel_size])  # each tap alone on an a x a tile
    weights = torch.fft.rfft2(kernel).conj().reshape(kernel_size ** 2, -1)  # [K*K, F]
    weights = torch.cat([weights.real.T, weights.imag.T])  # [2F, K*K]
    unit = torch.eye(a * f, dtype=torch.float64).view(-1, a, f)
    zero = torch.zeros_like(unit)
    real = torch.fft.irfft2(torch.complex(unit, zero), s=(a, a))[:, :m, :m].reshape(a * f, -1)
    imag = torch.fft.irfft2(torch.complex(zero, unit), s=(a, a))[:, :m, :m].reshape(a * f, -1)
    inverse = torch.cat([real, imag]).T.contiguous()  # [m*m, 2F]
    return rows, cols, weights, inverse


@functools.lru_cache(maxsize=None)
def _transforms_on(in_tile: int, out_tile: int, kernel_size: int, device: torch.device,
                   dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    return tuple(t.to(device, dtype) for t in _transforms(in_tile, out_tile, kernel_size))


def transforms(plan: TilePlan, kernel_size: int, device: torch.device,
               dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    """`_transforms` of a plan's tile sizes on `device` (kept per device and dtype)."""
    return _transforms_on(plan.in_tile, plan.out_tile, kernel_size, torch.device(device), dtype)


def weight_spectrum(weight: torch.Tensor, to_spectrum: torch.Tensor) -> torch.Tensor:
    """conv weight [C_out, C_in, K, K] -> conj(rfft2) per frequency as [2 (re, im), F, C_out, C_in] real."""
    c_out, c_in = weight.shape[:2]
    parts = to_spectrum @ weight.reshape(c_out * c_in, -1).T  # [2F, C_out * C_in]
    return parts.view(2, -1, c_out, c_in)


def _spectra(x: torch.Tensor, plan: TilePlan, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """x [n_in + 1, B, C] -> its tiles' rfft2, [2 (re, im), F, T * B, C]."""
    a, batch, channels = plan.in_tile, x.shape[1], x.shape[2]
    f, n = a // 2 + 1, plan.tiles * batch * channels
    tiles = x.index_select(0, plan.gather).view(a, a, n)  # [u, v, (T, B, C)]
    half = torch.matmul(rows, tiles)  # rfft along v: [u, (c, l), n]
    full = cols @ half.view(2 * a, f * n)  # DFT along u: [(c', k), (l, n)]
    return full.view(2, a * f, plan.tiles * batch, channels)


def _complex_bmm(out: torch.Tensor, x: torch.Tensor, w: torch.Tensor, sign: float) -> None:
    """out (re, im) = x @ w per frequency; x, w, out [2, F, ., .] (re, im) real, w's imaginary part times sign.

    Four real batched GEMMs. A complex64 GEMM of the same shapes was 10% faster on the 2-core Xeon (157 vs
    173 ms at [144, 128, 512] x [144, 512, 512]), but its interleaved (re, im) layout cost a copy on the
    way in and out of every layer (4.3 s of a 19 s training pass at N=16, batch 32), which real blocks
    never need; Gauss's three-GEMM product lost more to its extra additions (196-249 ms)."""
    torch.bmm(x[0], w[0], out=out[0])
    out[0].baddbmm_(x[1], w[1], alpha=-sign)
    torch.bmm(x[1], w[0], out=out[1])
    out[1].baddbmm_(x[0], w[1], alpha=sign)


def _tile_products(spectra: torch.Tensor, parts: torch.Tensor) -> torch.Tensor:
    """[2, F, M, C_in] x weight_spectrum [2, F, C_out, C_in] -> [2, F, M, C_out]."""
    out = spectra.new_empty(*spectra.shape[:3], parts.shape[2])
    _complex_bmm(out, spectra, parts.transpose(2, 3), 1.0)
    return out


def _tile_output(products: torch.Tensor, bias: torch.Tensor, plan: TilePlan, inverse: torch.Tensor) -> torch.Tensor:
    """[2, F, T * B, C_out] -> [n_out + 1, B, C_out]: the kept corner of each tile, bias added."""
    frequencies, rows, c_out = products.shape[1:]
    batch = rows // plan.tiles
    out = (inverse @ products.view(2 * frequencies, -1)).view(-1, batch, c_out)  # [m*m*T, B, C_out]
    return out.index_select(0, plan.place) + bias


class _TileConv(torch.autograd.Function):
    """conv2d on cell rows by FFT tiles, with a backward pass of the same transforms transposed.

    Keeps only the input rows and the weight, as the pair plan does: the tiles' spectra (2 x F x T
    rows per sample, 5.8x the input rows at N=16's first layer, 1.6 GB a layer for TACoS at batch 32)
    and the weight spectrum (F x C x C, hundreds of MB at 512 channels) are rebuilt in backward, which
    costs about 5% of a training pass. The gradient rows of the zero row and of cells no tile keeps are
    read from the output's last row, which callers weight by 0 (as the pair plan's)."""

    @staticmethod
    def forward(ctx, x, weight, bias, plan, mats):
        rows, cols, to_spectrum, inverse = mats
        spectra = _spectra(x, plan, rows, cols)
        out = _tile_output(_tile_products(spectra, weight_spectrum(weight, to_spectrum)), bias, plan, inverse)
        ctx.save_for_backward(x, weight)
        ctx.plan, ctx.mats = plan, mats
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        plan, (rows, cols, to_spectrum, inverse) = ctx.plan, ctx.mats
        want_x, want_weight, want_bias = ctx.needs_input_grad[:3]
        a, (c_out, c_in), batch = plan.in_tile, weight.shape[:2], x.shape[1]
        frequencies, m_rows = a * (a // 2 + 1), plan.tiles * batch
        grad = grad.contiguous()
        tiles = grad.index_select(0, plan.unplace)  # [m*m*T, B, C_out]
        grad_products = (inverse.T @ tiles.view(inverse.shape[0], -1)).view(2, frequencies, m_rows, c_out)
        grad_x = grad_weight = None
        if want_x:
            parts = weight_spectrum(weight, to_spectrum)  # [2, F, C_out, C_in]: w transposed per frequency
            grad_spectra = grad.new_empty(2, frequencies, m_rows, c_in)
            _complex_bmm(grad_spectra, grad_products, parts, -1.0)  # times the conjugate transpose
            grad_half = cols.T @ grad_spectra.view(2 * a, -1)  # [(u, c), (l, n)]
            grad_tiles = torch.matmul(rows.T, grad_half.view(a, 2 * (a // 2 + 1), -1))  # [u, v, (T, B, C)]
            grad_x = torch.zeros_like(x).index_add_(0, plan.gather, grad_tiles.view(-1, batch, c_in))
        if want_weight:
            grad_parts = weight.new_empty(2, frequencies, c_out, c_in)
            spectra = _spectra(x, plan, rows, cols)
            _complex_bmm(grad_parts, grad_products.transpose(2, 3), spectra, -1.0)  # gY^T X, conjugated
            grad_weight = (grad_parts.view(2 * frequencies, -1).T @ to_spectrum).view(weight.shape)
        grad_bias = grad.sum(dim=(0, 1)) if want_bias else None
        return grad_x, grad_weight, grad_bias, None, None


def tile_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, plan: TilePlan,
              mats: tuple[torch.Tensor, ...], parts: torch.Tensor | None = None) -> torch.Tensor:
    """conv2d on cell rows by FFT tiles: x [n_in + 1, B, C_in] (last row 0) -> [n_out + 1, B, C_out],
    bias on every row (callers weight the last by 0). Under autograd a custom backward (`_TileConv`);
    outside it `parts`, a kept `weight_spectrum` of the weight, saves its rebuilding."""
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or bias.requires_grad):
        return _TileConv.apply(x, weight, bias, plan, mats)
    rows, cols, to_spectrum, inverse = mats
    parts = weight_spectrum(weight, to_spectrum) if parts is None else parts
    return _tile_output(_tile_products(_spectra(x, plan, rows, cols), parts), bias, plan, inverse)


def fft_products(plans: list[TilePlan]) -> int:
    """Real-product units per sample over a stack (comparable with the pair plan's pair count)."""
    return math.ceil(sum(p.products for p in plans))
