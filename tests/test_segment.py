"""segment_sum / mean / max / softmax on every backend against per-sequence slices."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import padkern
from ragged_cases import EDGE_LENGTHS, random_ragged, split

OPS = ["segment_sum", "segment_mean", "segment_max", "segment_softmax"]


def per_sequence(op, values, offsets):
    pieces = split(values, offsets)
    if op == "segment_softmax":
        return torch.cat([p.softmax(0) for p in pieces]) if pieces else values
    reduce = {"segment_sum": lambda p: p.sum(0), "segment_mean": lambda p: p.mean(0),
              "segment_max": lambda p: p.amax(0)}[op]
    return torch.stack([reduce(p) if p.shape[0] else values.new_zeros(values.shape[1:]) for p in pieces])


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("case", ["mixed_unsorted", "all_empty", "first_empty", "every_fifth_empty", "one_long",
                                  "not_tile_multiples"])
def test_matches_per_sequence(device_backend, op, case):
    device, backend = device_backend
    values, offsets = random_ragged(EDGE_LENGTHS[case], (5, 3), dtype=torch.float64, device=device)
    out = getattr(padkern.ops, op)(values, offsets, backend=backend)
    torch.testing.assert_close(out, per_sequence(op, values, offsets), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("op", OPS)
def test_gradcheck(device_backend, op):
    device, backend = device_backend
    values, offsets = random_ragged([3, 0, 4, 1], (2,), dtype=torch.float64, device=device)
    values.requires_grad_()
    torch.autograd.gradcheck(lambda v: getattr(padkern.ops, op)(v, offsets, backend=backend), (values,))


@pytest.mark.parametrize("op", OPS)
def test_float32(kernel_backend, op):
    device, backend = kernel_backend
    values, offsets = random_ragged([40, 0, 7], (33,), dtype=torch.float64, device=device)
    out = getattr(padkern.ops, op)(values.float(), offsets, backend=backend)
    torch.testing.assert_close(out.double(), per_sequence(op, values, offsets), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@settings(max_examples=20, deadline=None)
@given(lengths=st.lists(st.integers(0, 40), min_size=1, max_size=6), features=st.integers(1, 9))
def test_fuzz(op, dtype, lengths, features):
    from conftest import DEVICE_BACKENDS

    tolerance = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    for device, backend in DEVICE_BACKENDS:
        values, offsets = random_ragged(lengths, (features,), dtype=dtype, device=device)
        torch.testing.assert_close(getattr(padkern.ops, op)(values, offsets, backend=backend),
                                   per_sequence(op, values, offsets), **tolerance)


@pytest.mark.parametrize("op", ["segment_mean", "segment_softmax"])
def test_gradgradcheck(device_backend, op):
    device, backend = device_backend
    values, offsets = random_ragged([3, 0, 4], (2,), dtype=torch.float64, device=device)
    values.requires_grad_()
    torch.autograd.gradgradcheck(lambda v: getattr(padkern.ops, op)(v, offsets, backend=backend), (values,))
