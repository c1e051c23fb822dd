"""segment_sum / mean / max / softmax on every backend against per-sequence slices."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import padkern
from error_bounds import assert_within, gamma, sum_bound, unit_roundoff
from ragged_cases import EDGE_LENGTHS, random_ragged, split

OPS = ["segment_sum", "segment_mean", "segment_max", "segment_softmax"]


def per_sequence(op, values, offsets):
    pieces = split(values, offsets)
    if op == "segment_softmax":
        return torch.cat([p.softmax(0) for p in pieces]) if pieces else values
    reduce = {"segment_sum": lambda p: p.sum(0), "segment_mean": lambda p: p.mean(0),
              "segment_max": lambda p: p.amax(0)}[op]
    return torch.stack([reduce(p) if p.shape[0] else values.new_zeros(values.shape[1:]) for p in pieces])


def rounding_bound(op, values, offsets, dtype):
    """Bound on `op`'s rounding error in `dtype` over `values` (float64, as the kernel saw them)."""
    lengths = (offsets[1:] - offsets[:-1]).to(torch.float64)[:, None]
    magnitude = per_sequence("segment_sum", values.abs(), offsets).reshape(lengths.shape[0], -1)
    if op == "segment_max" or values.shape[0] == 0:
        return torch.zeros(())  # a selection is exact; no tokens, nothing to round
    if op == "segment_sum":
        return sum_bound(magnitude, lengths, dtype).reshape((-1,) + values.shape[1:])
    if op == "segment_mean":
        return (sum_bound(magnitude, lengths + 1, dtype) / lengths.clamp(min=1)).reshape((-1,) + values.shape[1:])
    # softmax: each exp(x - max) is off by u |x - max| <= 2 u span (relative) plus its own few u,
    # the sum by gamma(n) relative, the division by u; doubled for online (rescaled) variants.
    # Plus underflow: an exp or a quotient below the normal range of the arithmetic (float32 at
    # least) may be flushed to zero (GPU fast exps, the CPU's floor), an absolute error under its
    # smallest normal, twice; and storing into the dtype's subnormals rounds to its smallest step.
    # Non-finite entries make their columns' outputs 0 or NaN, checked exactly: the span is
    # over the finite ones, and a NaN truth is bounded by 0 (assert_within matches NaN apart).
    rows = torch.repeat_interleave(torch.arange(lengths.shape[0], device=values.device), lengths.long().flatten())
    finite = torch.where(values.isfinite(), values.abs(), torch.zeros_like(values))
    span = per_sequence("segment_max", finite, offsets).reshape(lengths.shape[0], -1)[rows]
    relative = gamma(lengths[rows] + 8, dtype) + 4 * unit_roundoff(dtype) * span
    truth = per_sequence(op, values, offsets).reshape(rows.shape[0], -1).nan_to_num(0.0)
    arithmetic = torch.finfo(torch.promote_types(dtype, torch.float32))
    underflow = 2 * arithmetic.tiny + torch.finfo(dtype).tiny * torch.finfo(dtype).eps
    return (2 * relative * truth + underflow).reshape(values.shape)


def assert_matches_truth(op, out, values, offsets):
    """`out` (computed in values' dtype) against the float64 truth of the same inputs, within
    the kernel's rounding bound plus the float64 truth's own."""
    exact = values.double()
    bound = rounding_bound(op, exact, offsets, values.dtype) + rounding_bound(op, exact, offsets, torch.float64)
    assert_within(out, per_sequence(op, exact, offsets), bound, f"{op} {values.dtype}")


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("case", ["mixed_unsorted", "all_empty", "first_empty", "every_fifth_empty", "one_long",
                                  "not_tile_multiples"])
def test_matches_per_sequence(device_backend, op, case):
    device, backend = device_backend
    values, offsets = random_ragged(EDGE_LENGTHS[case], (5, 3), dtype=torch.float64, device=device)
    assert_matches_truth(op, getattr(padkern.ops, op)(values, offsets, backend=backend), values, offsets)


@pytest.mark.parametrize("op", OPS)
def test_gradcheck(device_backend, op):
    device, backend = device_backend
    values, offsets = random_ragged([3, 0, 4, 1], (2,), dtype=torch.float64, device=device)
    values.requires_grad_()
    torch.autograd.gradcheck(lambda v: getattr(padkern.ops, op)(v, offsets, backend=backend), (values,))


@pytest.mark.parametrize("op", OPS)
def test_float32(kernel_backend, op):
    device, backend = kernel_backend
    values, offsets = random_ragged([40, 0, 7], (33,), dtype=torch.float32, device=device)
    assert_matches_truth(op, getattr(padkern.ops, op)(values, offsets, backend=backend), values, offsets)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_softmax_special_values_and_underflow(kernel_backend, dtype):
    """Columns holding -inf entries (exactly 0 out), only -inf (NaN, as the reference), one +inf
    (NaN), one NaN (NaN), and entries 80 to 800 below their column's peak, where exp leaves the
    dtype's normal range: within the rounding bound and its underflow allowance."""
    device, backend = kernel_backend
    lengths = [5, 0, 40]
    values, offsets = random_ragged(lengths, (6,), dtype=torch.float64)
    inf, nan = float("inf"), float("nan")
    values[[0, 3, 10, 44], 0] = -inf
    values[:, 1] = -inf
    values[7, 2] = inf
    values[2, 3] = nan
    values[5:, 4] = -torch.linspace(80, 800, 40, dtype=torch.float64)
    values[20, 4] = 0.0
    values, offsets = values.to(dtype).to(device), offsets.to(device)
    out = padkern.ops.segment_softmax(values, offsets, backend=backend)
    reference = padkern.ops.segment_softmax(values, offsets, backend="reference")
    torch.testing.assert_close(out.isnan(), reference.isnan())
    assert (out[[0, 3, 10, 44], 0] == 0).all()
    if backend == "cpu":  # below host_exp's floor an exp is 0, not the floor's e^-87 or e^-708
        floor = -87.0 if dtype == torch.float32 else -708.0
        below = values[5:, 4] - values[20, 4] < floor
        assert below.any() and (out[5:, 4][below] == 0).all()
    assert_matches_truth("segment_softmax", out, values, offsets)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@settings(max_examples=20, deadline=None)
@given(lengths=st.lists(st.integers(0, 40), min_size=1, max_size=6), features=st.integers(1, 9))
def test_fuzz(op, dtype, lengths, features):
    from conftest import DEVICE_BACKENDS

    for device, backend in DEVICE_BACKENDS:
        values, offsets = random_ragged(lengths, (features,), dtype=dtype, device=device)
        assert_matches_truth(op, getattr(padkern.ops, op)(values, offsets, backend=backend), values, offsets)


@pytest.mark.parametrize("op", ["segment_mean", "segment_softmax"])
def test_gradgradcheck(device_backend, op):
    device, backend = device_backend
    values, offsets = random_ragged([3, 0, 4], (2,), dtype=torch.float64, device=device)
    values.requires_grad_()
    torch.autograd.gradgradcheck(lambda v: getattr(padkern.ops, op)(v, offsets, backend=backend), (values,))
