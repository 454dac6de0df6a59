"""2D-TAN's map convolutions by tiled FFTs: the same sums in fewer multiplications where kernels are large.

A KxK conv over an m x m tile of output cells reads an a x a input tile (a = m + K - 1). In the
frequency domain of a x a tiles it is one complex product per frequency and channel pair, so a tile
costs a * (a/2 + 1) complex products (rfft2's half plane) instead of m * m * K * K real ones: at K=9,
a=16 that is 144 for 64 cells instead of 5,184 (a complex product costs about 2.8 real ones in a CPU
GEMM). The tiles are laid over the cells each layer needs (`needed_cells`); a tile holding none is
skipped. Every transform is a GEMM on rows of cells ([cells + 1, B, C], the pair plan's layout, last row
0), so gathers move whole batches of channels; the products are one complex batched GEMM per layer.
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
COMPLEX_PRODUCT_COST = 2.8  # a complex64 GEMM's time over a float32 one of the same shape (2-core Xeon, MKL)


def spectrum_size(tile: int) -> int:
    """Frequencies of rfft2 on a tile x tile input."""
    return tile * (tile // 2 + 1)


class TilePlan(NamedTuple):
    """One layer as FFT tiles: `gather` [a * a * T] input rows (n_in: the zero row) in (u, v, tile)
    order, `place` [n_out + 1] each output cell's row of the [m * m * T] result (the last, for the zero
    row, any), tiles T, output tile m, input tile a."""

    gather: torch.Tensor
    place: torch.Tensor
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
    return TilePlan(gather.flatten(), torch.cat([place, place[:1]]), tiles, out_tile, in_tile)


def best_tile_plan(inputs: torch.Tensor, outputs: torch.Tensor, kernel_size: int) -> TilePlan:
    """The tile size of TILE_SIZES with the fewest products for this layer."""
    return min((tile_plan(inputs, outputs, kernel_size, m) for m in TILE_SIZES), key=lambda p: p.products)


@functools.lru_cache(maxsize=None)
def _transforms(in_tile: int, out_tile: int, kernel_size: int) -> tuple[torch.Tensor, ...]:
    """Float64 real matrices of the tile transforms, built from torch.fft on unit inputs.

    rows [2f, a]: rfft along a tile row, (re, im) x f; cols [2a, 2a]: the complex DFT down a tile's
    columns, (k, re / im) from (u, re / im); weights [2F, K * K]: the conjugate rfft2 of a kernel (conv2d is a
    correlation); inverse [m * m, 2F]: irfft2 of (re, im) parts back to the kept m x m corner.
    """
    a, m, f = in_tile, out_tile, in_tile // 2 + 1
    spectrum = torch.fft.rfft(torch.eye(a, dtype=torch.float64))  # [v, f]
    rows = torch.cat([spectrum.real.T, spectrum.imag.T])  # [(c, l), v]
    dft = torch.fft.fft(torch.eye(a, dtype=torch.float64))  # [u, k]: e^{-2 pi i k u / a}
    real, imag = dft.real.T, dft.imag.T  # [k, u]
    cols = torch.stack([torch.stack([real, -imag], -1), torch.stack([imag, real], -1)], 1)  # [k, c', u, c]
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
def _transforms_on(in_tile: int, out_tile: int, kernel_size: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    return tuple(t.to(device, torch.float32) for t in _transforms(in_tile, out_tile, kernel_size))


def transforms(plan: TilePlan, kernel_size: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """`_transforms` of a plan's tile sizes, float32 on `device` (kept per device)."""
    return _transforms_on(plan.in_tile, plan.out_tile, kernel_size, torch.device(device))


def weight_spectrum(weight: torch.Tensor, to_spectrum: torch.Tensor) -> torch.Tensor:
    """conv weight [C_out, C_in, K, K] -> conj(rfft2) per frequency, [F, C_in, C_out] complex (a view)."""
    c_out, c_in = weight.shape[:2]
    parts = to_spectrum @ weight.reshape(c_out * c_in, -1).T  # [2F, C_out * C_in]
    half = parts.shape[0] // 2
    spectrum = torch.complex(parts[:half], parts[half:]).view(half, c_out, c_in)
    return spectrum.transpose(1, 2)


def tile_conv(x: torch.Tensor, spectrum: torch.Tensor, bias: torch.Tensor, plan: TilePlan,
              mats: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """conv2d on cell rows by FFT tiles: x [n_in + 1, B, C_in] (last row 0) -> [n_out + 1, B, C_out],
    bias on every row (callers weight the last by 0). `spectrum` is `weight_spectrum` of the weight."""
    rows, cols, _, inverse = mats
    a, m, batch, c_in = plan.in_tile, plan.out_tile, x.shape[1], x.shape[2]
    f, n = a // 2 + 1, plan.tiles * batch * c_in
    tiles = x.index_select(0, plan.gather).view(a, a, n)  # [u, v, (T, B, C)]
    half = (rows @ tiles).view(2 * a, f * n)  # rfft along v: [(u, c), (l, T, B, C)]
    full = (cols @ half).view(a, 2, f, plan.tiles * batch, c_in)  # DFT along u: [k, c', l, (T, B), C]
    products = torch.bmm(torch.complex(full[:, 0], full[:, 1]).view(a * f, -1, c_in), spectrum)  # [F, TB, Co]
    parts = torch.view_as_real(products).permute(3, 0, 1, 2).reshape(2 * a * f, -1)  # [(c, F), (T, B, Co)]
    out = (inverse @ parts).view(m * m * plan.tiles, batch, -1)
    return out.index_select(0, plan.place) + bias


def fft_products(plans: list[TilePlan]) -> int:
    """Real-product units per sample over a stack (comparable with the pair plan's pair count)."""
    return math.ceil(sum(p.products for p in plans))
