"""pad / unpad and the Ragged conversions, on every backend, against PyTorch and
the per-sequence slices."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence, pad_sequence

import padkern
from padkern import Ragged
from ragged_cases import EDGE_LENGTHS, nan_filled_allocations, offsets_of, random_ragged, split

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64]


def padded_by_slices(values, offsets, total_length, padding_value, batch_first):
    """Reference built from per-sequence slices only."""
    pieces = split(values, offsets)
    out = values.new_full((len(pieces), total_length) + tuple(values.shape[1:]), padding_value)
    for b, piece in enumerate(pieces):
        out[b, : piece.shape[0]] = piece
    return out if batch_first else out.transpose(0, 1).contiguous()


@pytest.mark.parametrize("case", list(EDGE_LENGTHS))
@pytest.mark.parametrize("batch_first", [True, False])
def test_pad_unpad_edge_cases(device_backend, case, batch_first):
    device, backend = device_backend
    lengths = EDGE_LENGTHS[case]
    values, offsets = random_ragged(lengths, (3,), device=device)
    total_length = max(lengths) + 2
    padded = padkern.ops.pad(values, offsets, total_length, -1.5, batch_first, backend=backend)
    assert torch.equal(padded, padded_by_slices(values, offsets, total_length, -1.5, batch_first))
    back = padkern.ops.unpad(padded, offsets, batch_first, backend=backend)
    assert torch.equal(back, values)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("features", [(), (0,), (1,), (17,), (2, 5)])
def test_dtypes_and_feature_shapes(device_backend, dtype, features):
    device, backend = device_backend
    values, offsets = random_ragged([4, 0, 7, 2], features, dtype=dtype, device=device)
    ragged = Ragged(values, offsets)
    padded = ragged.to_padded(padding_value=3, backend=backend)
    assert padded.shape == (4, 7) + features
    assert torch.equal(padded, padded_by_slices(values, offsets, 7, 3, True))
    assert torch.equal(Ragged.from_padded(padded, ragged.lengths(), backend=backend).values, values)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("fill", [0.0, -0.0, 2.5])
def test_padding_value_bits_kept(device_backend, fill, batch_first):
    """The fill's own bits at every padded position, -0.0's sign included (the CPU sets a fill
    of zero bytes and copies any other), for one sequence (time-first, its rows still lie back
    to back) and several."""
    device, backend = device_backend
    for lengths in ([3], [3, 0, 5]):
        values, offsets = random_ragged(lengths, (4,), device=device)
        padded = padkern.ops.pad(values, offsets, 7, fill, batch_first, backend=backend)
        want = padded_by_slices(values, offsets, 7, fill, batch_first)
        assert torch.equal(padded, want) and torch.equal(padded.signbit(), want.signbit())


def test_every_output_element_written(device_backend):
    # Deterministic mode fills fresh allocations with NaN: any element the kernel
    # skipped would survive as NaN.
    device, backend = device_backend
    values, offsets = random_ragged([3, 0, 5], (4,), device=device)
    with nan_filled_allocations():
        padded = padkern.ops.pad(values, offsets, 6, 0.0, backend=backend)
        back = padkern.ops.unpad(padded, offsets, backend=backend)
    assert not padded.isnan().any() and not back.isnan().any()


def test_matches_pack_padded_sequence(device_backend):
    device, backend = device_backend
    lengths = torch.tensor([5, 2, 9, 1, 9, 3])
    x = torch.randn(6, 11, 4, device=device)
    ragged = Ragged.from_padded(x, lengths, backend=backend)
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    ours = ragged.to_packed()
    for field in ("data", "batch_sizes", "sorted_indices", "unsorted_indices"):
        assert torch.equal(getattr(ours, field), getattr(packed, field)), field
    expected, _ = pad_packed_sequence(packed, batch_first=True, total_length=11)
    assert torch.equal(ragged.to_padded(11, backend=backend), expected)
    assert torch.equal(Ragged.from_packed(packed).values, ragged.values)
    # The packed form is a real PackedSequence: torch.nn.LSTM accepts it.
    lstm = torch.nn.LSTM(4, 3).to(device)
    torch.testing.assert_close(lstm(ours)[0].data, lstm(packed)[0].data)


def test_nested_round_trip():
    values, offsets = random_ragged([3, 1, 4], (5,))
    nested = Ragged(values, offsets).to_nested()
    assert nested.is_nested and nested.layout == torch.jagged
    back = Ragged.from_nested(nested)
    assert torch.equal(back.values, values) and torch.equal(back.offsets, offsets)
    expected = torch.nested.nested_tensor(split(values, offsets), layout=torch.jagged)
    assert torch.equal(Ragged.from_nested(expected).values, values)


def test_from_list_and_mask():
    pieces = [torch.randn(n, 2) for n in (3, 0, 5)]
    ragged = Ragged.from_list(pieces)
    assert ragged.offsets.tolist() == [0, 3, 3, 8]
    padded = pad_sequence(pieces, batch_first=True)
    assert torch.equal(ragged.to_padded(), padded)
    assert torch.equal(ragged.mask(), torch.arange(5)[None, :] < torch.tensor([3, 0, 5])[:, None])
    assert ragged.max_length == 5 and ragged.lengths().tolist() == [3, 0, 5]
    # A left-padded mask keeps each sequence's real tokens in order.
    left = torch.zeros(3, 5, 2)
    left_mask = torch.zeros(3, 5, dtype=torch.bool)
    for b, piece in enumerate(pieces):
        left[b, 5 - piece.shape[0]:] = piece
        left_mask[b, 5 - piece.shape[0]:] = True
    assert torch.equal(Ragged.from_mask(left, left_mask).values, ragged.values)
    assert torch.equal(Ragged.from_mask(left.transpose(0, 1), left_mask.t(), batch_first=False).values, ragged.values)


def test_non_contiguous_and_int32_offsets(device_backend):
    device, backend = device_backend
    x_time_major = torch.randn(7, 4, 6, device=device)
    x = x_time_major.transpose(0, 1)  # [B, T, F] with non-unit strides
    lengths = [7, 0, 3, 5]
    offsets32 = offsets_of(lengths, device, torch.int32)
    values = padkern.ops.unpad(x, offsets32, backend=backend)
    assert torch.equal(values, torch.cat([x[b, :n] for b, n in enumerate(lengths)]))
    strided_values = torch.randn(values.shape[0], 12, device=device)[:, ::2]
    padded = padkern.ops.pad(strided_values, offsets32, backend=backend)
    assert torch.equal(padded, padded_by_slices(strided_values, offsets32.long(), 7, 0.0, True))


@pytest.mark.parametrize("batch_first", [True, False])
def test_gradcheck(device_backend, batch_first):
    device, backend = device_backend
    values, offsets = random_ragged([2, 0, 3], (2,), dtype=torch.float64, device=device)
    values.requires_grad_(True)
    torch.autograd.gradcheck(lambda v: padkern.ops.pad(v, offsets, 4, 0.5, batch_first, backend=backend), (values,))
    padded = torch.randn(3, 4, 2, dtype=torch.float64, device=device)
    if not batch_first:
        padded = padded.transpose(0, 1)
    padded.requires_grad_(True)
    torch.autograd.gradcheck(lambda p: padkern.ops.unpad(p, offsets, batch_first, backend=backend), (padded,))


def test_gradient_at_padding_is_exactly_zero(device_backend):
    device, backend = device_backend
    x = torch.randn(3, 6, 2, device=device, requires_grad=True)
    lengths = torch.tensor([6, 0, 2])
    ragged = Ragged.from_padded(x, lengths, backend=backend)
    (ragged.values * 3).sum().backward()
    mask = (torch.arange(6)[None, :] < lengths[:, None]).to(device)
    assert torch.equal(x.grad[~mask], torch.zeros_like(x.grad[~mask]))
    assert torch.equal(x.grad[mask], torch.full_like(x.grad[mask], 3.0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64])
@settings(max_examples=20, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 9), min_size=1, max_size=8),
    features=st.integers(1, 9),
    extra=st.integers(0, 3),
    batch_first=st.booleans(),
)
def test_fuzz_pad_unpad(dtype, lengths, features, extra, batch_first):
    from conftest import DEVICE_BACKENDS

    for device, backend in DEVICE_BACKENDS:
        values, offsets = random_ragged(lengths, (features,), dtype=dtype, device=device)
        total_length = max(lengths) + extra
        padded = padkern.ops.pad(values, offsets, total_length, 0.0, batch_first, backend=backend)
        assert torch.equal(padded, padded_by_slices(values, offsets, total_length, 0.0, batch_first)), backend
        assert torch.equal(padkern.ops.unpad(padded, offsets, batch_first, backend=backend), values), backend


def test_row_offsets_past_int32(kernel_backend):
    # A cheap probe of 64-bit addressing: two rows 2^31 + 32 bytes apart in an untouched
    # 2 GiB byte buffer (pages are only touched where the rows are).
    device, backend = kernel_backend
    if device == "cpu" and backend == "triton":
        pytest.skip("the interpreter copies whole storages")
    try:
        storage = torch.empty(2**31 + 64, dtype=torch.uint8, device=device)
    except RuntimeError:
        pytest.skip("needs 2 GiB")
    values = storage.as_strided((2, 4), (2**31 + 32, 1))
    values.copy_(torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]], dtype=torch.uint8))
    offsets = torch.tensor([0, 1, 2], device=device)
    padded = padkern.ops.pad(values, offsets, 1, backend=backend)
    assert padded[:, 0].tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    # And a padded input whose sequences lie 2^31 + 32 bytes apart.
    far_padded = storage.as_strided((2, 1, 4), (2**31 + 32, 4, 1))
    far_padded.copy_(torch.tensor([[[9, 8, 7, 6]], [[5, 4, 3, 2]]], dtype=torch.uint8))
    back = padkern.ops.unpad(far_padded, offsets, backend=backend)
    assert back.tolist() == [[9, 8, 7, 6], [5, 4, 3, 2]]


def test_gradgradcheck(device_backend):
    # Each op's backward is the other op, so second derivatives come for free.
    device, backend = device_backend
    values, offsets = random_ragged([2, 0, 3], (2,), dtype=torch.float64, device=device)
    values.requires_grad_(True)
    torch.autograd.gradgradcheck(lambda v: padkern.ops.pad(v, offsets, 4, 0.0, True, backend=backend), (values,))
