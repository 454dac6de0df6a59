import numpy as np
import pytest
import torch

from tal.ops.segments import pairwise_iop, pairwise_tiou, tiou


def test_pairwise_tiou_by_hand():
    a = np.array([[0.0, 10.0], [5.0, 6.0]])
    b = np.array([[5.0, 15.0], [20.0, 30.0], [0.0, 10.0]])
    expected = np.array([[5 / 15, 0.0, 1.0], [1 / 10, 0.0, 1 / 10]])
    np.testing.assert_allclose(pairwise_tiou(a, b), expected, rtol=0, atol=1e-15)


def test_zero_length_segments_give_zero_not_nan():
    a = np.array([[3.0, 3.0]])
    out = pairwise_tiou(a, a)
    assert out.tolist() == [[0.0]]
    assert tiou(a, a).tolist() == [0.0]


def test_torch_matches_numpy_and_keeps_dtype():
    rng = np.random.default_rng(0)
    s = rng.uniform(0, 100, size=(50, 1))
    a = np.concatenate([s, s + rng.uniform(0, 20, size=(50, 1))], 1)
    b = a[::-1].copy()
    ref = pairwise_tiou(a, b)
    out = pairwise_tiou(torch.from_numpy(a), torch.from_numpy(b))
    assert out.dtype == torch.float64
    np.testing.assert_array_equal(out.numpy(), ref)
    np.testing.assert_array_equal(tiou(torch.from_numpy(a), torch.from_numpy(b)).numpy(), np.diag(ref))


def test_iop():
    p = np.array([[0.0, 4.0]])
    g = np.array([[2.0, 10.0]])
    assert pairwise_iop(p, g).tolist() == [[0.5]]
