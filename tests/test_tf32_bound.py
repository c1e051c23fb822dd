"""The TF32 error bound of tests/tf32_bound.py (used by tests/test_gpu_matmul.py) checked on the
CPU: float32 matmuls of operands cut to TF32's 10-bit mantissa, as a tensor core multiplies
them, stay within it for the GPU tests' shapes (tiny ones included) and activations, and so
does exact float32; the bound is tight enough that the truncation's error reaches a good part
of it."""
import pytest
import torch
import torch.nn.functional as F

from tf32_bound import assert_within_tf32_bound, tf32_error_bound, to_tf32

ACT = {None: lambda z: z, "relu": F.relu, "gelu": F.gelu, "silu": F.silu}


def operands(rows, k, n, seed):
    generator = torch.Generator().manual_seed(seed)
    # Magnitudes over several decades, signs mixed: sums that cancel.
    scale = lambda *s: torch.exp(torch.randn(*s, generator=generator, dtype=torch.float64) * 2)  # noqa: E731
    x = torch.randn(rows, k, generator=generator, dtype=torch.float64) * scale(rows, 1)
    w = torch.randn(n, k, generator=generator, dtype=torch.float64) * scale(1, k)
    b = torch.randn(n, generator=generator, dtype=torch.float64)
    return x.float().double(), w.float().double(), b.float().double()


@pytest.mark.parametrize("k,n", [(1, 1), (7, 9), (5, 3), (13, 130), (72, 200), (256, 72)])
@pytest.mark.parametrize("activation", [None, "gelu", "silu"])
@pytest.mark.parametrize("rounding", ["truncate", "nearest", "exact float32"])
def test_tf32_products_stay_within_the_bound(k, n, activation, rounding):
    x, w, b = operands(200, k, n, seed=k * 1000 + n)
    truth = ACT[activation](F.linear(x, w, b))
    magnitude = F.linear(x.abs(), w.abs(), b.abs())
    cut = (lambda t: t.float()) if rounding == "exact float32" else (lambda t: to_tf32(t.float(), rounding))
    ours = ACT[activation](F.linear(cut(x), cut(w), b.float()))
    assert_within_tf32_bound(ours, truth, magnitude, depth=k, activation=activation is not None)


def test_the_bound_is_not_loose():
    # One product per output (K = 1): truncating both operands errs by up to ~2^-9 of it, the
    # bound's own size; over 2,000 outputs the worst comes within a factor 2.
    x, w, b = operands(200, 1, 10, seed=5)
    ours = F.linear(to_tf32(x.float()), to_tf32(w.float()))
    error = (ours.double() - F.linear(x, w)).abs()
    assert (error / tf32_error_bound(F.linear(x.abs(), w.abs()), depth=1)).max() > 0.5


def test_to_tf32_keeps_ten_mantissa_bits():
    one_plus = torch.tensor([1 + 2.0 ** -10 + 2.0 ** -11 + 2.0 ** -20, -(1 + 2.0 ** -11)], dtype=torch.float32)
    assert to_tf32(one_plus).tolist() == [1 + 2.0 ** -10, -1.0]
    assert to_tf32(one_plus, "nearest").tolist() == [1 + 2.0 ** -9, -(1 + 2.0 ** -10)]
    with pytest.raises(ValueError, match="rounding must be"):
        to_tf32(one_plus, "down")
