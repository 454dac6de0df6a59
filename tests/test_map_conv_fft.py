import pytest
import torch
import torch.nn.functional as F

from tal.models import map_conv_fft
from tal.models.map_conv import MaskedMapConv
from tal.models.tan2d import sparse_map_mask


def cells_of(canvas: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> rows of the cells in row-major order plus a zero row, [n + 1, B, C]."""
    rows = canvas.flatten(2)[..., cells.flatten()].permute(2, 0, 1)
    return torch.cat([rows, rows.new_zeros(1, *rows.shape[1:])])


def tile_case(kernel: int, out_tile: int, dtype=torch.float32):
    """A sparse 19 x 23 input (the other cells 0), a random set of output cells, weights and a plan."""
    torch.manual_seed(0)
    height, width, half = 19, 23, (kernel - 1) // 2
    inputs = torch.rand(height, width) < 0.6
    outputs = torch.zeros(height, width, dtype=torch.bool)
    outputs[half:-half, half:-half] = torch.rand(height - 2 * half, width - 2 * half) < 0.5
    canvas = torch.randn(2, 3, height, width, dtype=dtype) * inputs
    weight, bias = torch.randn(4, 3, kernel, kernel, dtype=dtype), torch.randn(4, dtype=dtype)
    plan = map_conv_fft.tile_plan(inputs, outputs, kernel, out_tile)
    return inputs, outputs, canvas, weight, bias, plan


@pytest.mark.parametrize("kernel, out_tile", [(3, 4), (5, 4), (5, 8), (9, 8), (9, 12)])
def test_tile_conv_is_conv2d_on_the_needed_cells(kernel, out_tile):
    inputs, outputs, canvas, weight, bias, plan = tile_case(kernel, out_tile)
    half = (kernel - 1) // 2
    expected = F.conv2d(canvas, weight, bias)  # unpadded: output (r, c) sits at (r - h, c - h)
    mats = map_conv_fft.transforms(plan, kernel, "cpu")
    x = cells_of(canvas, inputs)
    out = map_conv_fft.tile_conv(x, weight, bias, plan, mats)
    kept = map_conv_fft.tile_conv(x, weight, bias, plan, mats, map_conv_fft.weight_spectrum(weight, mats[2]))
    rows, cols = outputs.nonzero(as_tuple=True)
    want = expected[:, :, rows - half, cols - half].permute(2, 0, 1)
    assert out.shape == (len(rows) + 1, 2, 4)
    assert torch.allclose(out[:-1], want, rtol=1e-5, atol=1e-5)
    assert torch.equal(kept, out)


@pytest.mark.parametrize("kernel, out_tile", [(3, 4), (5, 8), (9, 8)])
def test_tile_conv_gradients_are_conv2d_gradients(kernel, out_tile):
    """The custom backward against autograd through F.conv2d, in float64: input rows (summed over the
    overlapping tiles that read them), weight and bias, for an upstream gradient on the output cells."""
    inputs, outputs, canvas, weight, bias, plan = tile_case(kernel, out_tile, torch.float64)
    half = (kernel - 1) // 2
    rows, cols = outputs.nonzero(as_tuple=True)
    upstream = torch.randn(len(rows), 2, 4, dtype=torch.float64)
    mats = map_conv_fft.transforms(plan, kernel, "cpu", torch.float64)
    grads = []
    for fft in (True, False):
        x = cells_of(canvas, inputs).requires_grad_()
        w, b = weight.clone().requires_grad_(), bias.clone().requires_grad_()
        if fft:
            out = map_conv_fft.tile_conv(x, w, b, plan, mats)[:-1]  # the last row's gradient is 0, as callers give
        else:
            grid = x[:-1].permute(1, 2, 0)
            dense = canvas.new_zeros(2, 3, inputs.numel()).index_copy(2, inputs.flatten().nonzero()[:, 0], grid)
            out = F.conv2d(dense.view_as(canvas), w, b)[:, :, rows - half, cols - half].permute(2, 0, 1)
        (out * upstream).sum().backward()
        grads.append((x.grad[:-1], w.grad, b.grad))
    for ours, theirs in zip(*grads):
        assert float(theirs.abs().max()) > 0
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9 * float(theirs.abs().max()))


def test_tile_plan_keeps_only_tiles_with_a_needed_cell():
    inputs = torch.ones(20, 20, dtype=torch.bool)
    outputs = torch.zeros(20, 20, dtype=torch.bool)
    outputs[2, 2] = outputs[2, 9] = outputs[13, 2] = True  # tiles of 4 from (2, 2): (0, 0), (0, 1), (2, 0)
    plan = map_conv_fft.tile_plan(inputs, outputs, 5, 4)
    assert (plan.tiles, plan.in_tile, plan.out_tile) == (3, 8, 4)
    assert plan.products == pytest.approx(3 * 8 * 5 * map_conv_fft.COMPLEX_PRODUCT_COST)
    gather = plan.gather.view(8, 8, 3)
    assert int(gather[0, 0, 0]) == 0 * 20 + 0  # tile (0, 0) reads from (2 - 2, 2 - 2)
    assert int(gather[0, 0, 1]) == 0 * 20 + 4  # tile (0, 1) from (0, 6)
    assert int(gather[0, 0, 2]) == 8 * 20 + 0  # tile (2, 0) from (10 - 2, 0)
    assert int(gather[7, 7, 2]) == 15 * 20 + 7
    assert plan.place.tolist() == [0, 3 * 3 + 1, 12 * 3 + 2, 0]  # (2, 9) sits at (0, 3) of its tile, (13, 2) at (3, 0)
    unplace = torch.full((4 * 4 * 3,), 3)  # result rows of no needed cell read the zero-weighted last row
    unplace[[0, 3 * 3 + 1, 12 * 3 + 2]] = torch.tensor([0, 1, 2])
    assert plan.unplace.tolist() == unplace.tolist()


def test_tile_plan_reads_the_zero_row_off_the_canvas_and_off_the_input_cells():
    inputs = torch.zeros(6, 6, dtype=torch.bool)
    inputs[1, 1] = True
    outputs = torch.zeros(6, 6, dtype=torch.bool)
    outputs[0, 0] = True
    plan = map_conv_fft.tile_plan(inputs, outputs, 3, 4)
    gather = plan.gather.view(6, 6, 1)
    assert int(gather[2, 2, 0]) == 0  # input (1, 1) is row 0
    assert int((gather == 1).sum()) == 35  # everything else is the zero row (n_in = 1)


def test_weight_spectrum_is_the_conjugate_rfft2_of_the_kernel():
    torch.manual_seed(0)
    weight = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    _, _, to_spectrum, _ = map_conv_fft._transforms(12, 8, 5)
    parts = map_conv_fft.weight_spectrum(weight, to_spectrum)  # [2, F, C_out, C_in]
    expected = torch.fft.rfft2(weight, s=(12, 12)).conj().flatten(2).permute(2, 0, 1)  # [F, C_out, C_in]
    assert parts.shape == (2, 12 * 7, 4, 3)
    assert torch.allclose(parts[0], expected.real, atol=1e-12)
    assert torch.allclose(parts[1], expected.imag, atol=1e-12)


def test_best_tile_plan_takes_the_cheapest_tile():
    mask = torch.ones(40, 40, dtype=torch.bool)
    best = map_conv_fft.best_tile_plan(mask, mask, 9)
    costs = {m: map_conv_fft.tile_plan(mask, mask, 9, m).products for m in map_conv_fft.TILE_SIZES}
    assert best.products == min(costs.values()) and best.out_tile == min(costs, key=costs.get)
    assert costs[4] > costs[best.out_tile]  # 12 x 7 frequencies per 16 cells is the dearest


def test_fft_plan_multiplies_fewer_products_than_the_pairs_on_the_large_kernels():
    # real-product units per sample: the official stack at N=64 K9L4 multiplies 1,897,344, the pairs 692,064
    activitynet = MaskedMapConv(sparse_map_mask(64), 1, 1, 9, 4)
    assert activitynet.num_pairs == 692064
    assert activitynet.fft_products < activitynet.num_pairs / 5


def test_inference_keeps_the_weight_spectrum_until_the_weight_changes():
    torch.manual_seed(0)
    mask = sparse_map_mask(16)
    conv = MaskedMapConv(mask, 3, 4, 5, 2, strategy="fft")
    x = torch.randn(2, 3, 16, 16) * mask
    with torch.no_grad():
        first = conv(x)
        kept = conv._kept_taps[0][1]
        assert conv(x).equal(first) and conv._kept_taps[0][1] is kept
        conv.convs[0].weight.mul_(2)
        assert not conv(x).equal(first) and conv._kept_taps[0][1] is not kept


def test_training_keeps_only_the_input_rows_and_the_weight():
    """The backward rebuilds the tiles' spectra (2 x F x T rows a sample) from the input rows instead of keeping
    them: the autograd graph holds what the pair plan holds."""
    inputs, _, canvas, weight, bias, plan = tile_case(5, 8)
    x = cells_of(canvas, inputs).requires_grad_()
    weight.requires_grad_()
    out = map_conv_fft.tile_conv(x, weight, bias, plan, map_conv_fft.transforms(plan, 5, "cpu"))
    saved = out.grad_fn.saved_tensors
    assert len(saved) == 2 and saved[0].equal(x) and saved[1].equal(weight)
