"""Edge values that test_agreement.py's small cases do not reach, through every backend:
padding values that change if rounded through float32 on the way to a float16 /
bfloat16 / subnormal fill, and segment_max with NaN, -inf and ties spread over a
sequence longer than the Triton kernel's 32-row chunks (its chunk-to-chunk merge)."""
import math

import pytest
import torch

import padkern
from ragged_cases import random_ragged

# (values dtype, padding value): each comes back changed if it passes through float32.
EXACT_FILLS = [
    (torch.float64, 0.1),
    (torch.int64, -123456789),
    (torch.float64, 1e300),
    (torch.float64, -5e-324),  # the smallest subnormal: -0.0 in float32
    (torch.float16, 1 + 2**-11 + 2**-40),  # float32 rounds it onto a float16 tie, which then rounds to even
    (torch.bfloat16, 1 + 2**-8 + 2**-40),  # the same for bfloat16
]


@pytest.mark.parametrize("dtype, fill", EXACT_FILLS, ids=[f"{d}-{v!r}" for d, v in EXACT_FILLS])
@pytest.mark.parametrize("batch_first", [True, False])
def test_padding_value_matches_the_reference_exactly(device_backend, dtype, fill, batch_first):
    device, backend = device_backend
    values, offsets = random_ragged([3, 0, 5], (4,), dtype=dtype, device=device)
    padded = padkern.ops.pad(values, offsets, 7, fill, batch_first, backend=backend)
    expected = padkern.ops.pad(values, offsets, 7, fill, batch_first, backend="reference")
    assert torch.equal(padded, expected)
    pads = padded[2, 5:] if batch_first else padded[5:, 2]
    assert torch.equal(pads, torch.full_like(pads, fill))


def chunked_max_case(device, dtype=torch.float64):
    """One 70-row sequence (three 32-row chunks) after two short ones, one of them empty.
    Columns of the long one: 0 has its first NaN in the second chunk and another in the
    third; 1 ties its maximum across the first and third chunks; 2 is -inf throughout;
    3 holds +inf in the third chunk only; 4 is random."""
    lengths = [4, 0, 70]
    values, offsets = random_ragged(lengths, (5,), dtype=torch.float64)
    values[0:4, 0] = torch.tensor([1, math.nan, 3, math.nan])
    long = slice(4, 74)
    values[long, 0] = 1.0
    values[4 + 40, 0] = values[4 + 69, 0] = math.nan
    values[long, 1] = 2.0
    values[4 + 5, 1] = values[4 + 65, 1] = 9.0
    values[long, 2] = -math.inf
    values[4 + 66, 3] = math.inf
    return values.to(dtype).to(device), offsets.to(device)


def expected_max(values, offsets):
    """torch.amax per sequence (0 when empty), and its argmax: the first NaN row, else
    the first row holding the maximum (-1 when empty)."""
    values, bounds = values.cpu(), offsets.tolist()
    out = values.new_zeros((len(bounds) - 1, values.shape[1]))
    rows = torch.full(out.shape, -1, dtype=torch.int64)
    for b in range(len(bounds) - 1):
        piece = values[bounds[b]:bounds[b + 1]]
        if piece.shape[0] == 0:
            continue
        out[b] = piece.amax(0)
        for d, column in enumerate(piece.unbind(1)):
            hits = column.isnan() if column.isnan().any() else column == column.max()
            rows[b, d] = bounds[b] + int(hits.nonzero()[0])
    return out, rows


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_segment_max_across_chunks(device_backend, dtype):
    device, backend = device_backend
    values, offsets = chunked_max_case(device, dtype)
    out = padkern.ops.segment_max(values, offsets, backend=backend)
    torch.testing.assert_close(out.cpu(), expected_max(values, offsets)[0], rtol=0, atol=0, equal_nan=True)


def test_segment_max_gradient_across_chunks(device_backend):
    device, backend = device_backend
    values, offsets = chunked_max_case(device)
    values.requires_grad_()
    padkern.ops.segment_max(values, offsets, backend=backend).sum().backward()
    _, rows = expected_max(values.detach(), offsets)
    expected = torch.zeros(values.shape, dtype=values.dtype)
    for b, d in (rows >= 0).nonzero().tolist():
        expected[rows[b, d], d] = 1.0
    assert torch.equal(values.grad.cpu(), expected)
