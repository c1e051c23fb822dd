"""Ragged moves like a tensor: to / cpu / detach / requires_grad_ / unbind, and from_list takes
what pad_sequence takes. The GPU half (cuda, pin_memory, non_blocking copies) is in
tests/test_gpu_ragged_transfer.py."""
import pytest
import torch
from torch.nn.utils.rnn import pad_sequence

from padkern import Ragged
from ragged_cases import EDGE_LENGTHS, offsets_of, random_ragged, split


@pytest.mark.parametrize("offsets_dtype", [torch.int64, torch.int32])
def test_to_dtype_converts_values_only(offsets_dtype):
    values, offsets = random_ragged([3, 0, 2], (4,))
    ragged = Ragged(values, offsets.to(offsets_dtype))
    for moved in (ragged.to(torch.float64), ragged.to(dtype=torch.float64),
                  ragged.to(torch.zeros(1, dtype=torch.float64)), ragged.to("cpu", torch.float64, non_blocking=True)):
        assert isinstance(moved, Ragged)
        assert moved.dtype == moved.values.dtype == torch.float64
        assert moved.offsets is ragged.offsets  # integers, and already where they belong
        assert torch.equal(moved.values, values.double())


def test_to_without_change_is_self_and_copy_copies():
    values, offsets = random_ragged([3, 0, 2], (4,))
    ragged = Ragged(values, offsets)
    assert ragged.to("cpu") is ragged and ragged.to(torch.float32) is ragged and ragged.cpu() is ragged
    for copied in (ragged.to("cpu", copy=True), ragged.to(torch.float32, False, True)):
        assert torch.equal(copied.values, values) and torch.equal(copied.offsets, offsets)
        assert copied.values.data_ptr() != values.data_ptr() and copied.offsets.data_ptr() != offsets.data_ptr()
    with pytest.raises(TypeError, match=r"to\(\) takes at most two bools \(non_blocking, copy\), got 3"):
        ragged.to(torch.float64, False, True, True)


def test_to_device_moves_both_tensors():
    # The meta device stands in for a GPU here: a device argument moves values and offsets.
    values, offsets = random_ragged([3, 0, 2], (4,))
    for moved in (Ragged(values, offsets).to("meta"), Ragged(values, offsets).to(torch.device("meta"), torch.float16),
                  Ragged(values, offsets).to(device="meta", non_blocking=True)):
        assert moved.values.device.type == moved.offsets.device.type == moved.device.type == "meta"
        assert moved.offsets.dtype == torch.int64 and moved.values.shape == values.shape


def test_detach_and_requires_grad_():
    values, offsets = random_ragged([3, 0, 2], (4,))
    ragged = Ragged(values, offsets)
    assert ragged.requires_grad_() is ragged and values.requires_grad
    doubled = ragged.with_values(ragged.values * 2)
    detached = doubled.detach()
    assert not detached.values.requires_grad and detached.offsets is offsets
    assert detached.values.data_ptr() == doubled.values.data_ptr()  # shared storage, as Tensor.detach
    ragged.requires_grad_(False)
    assert not values.requires_grad


@pytest.mark.parametrize("name", sorted(EDGE_LENGTHS))
def test_unbind_gives_views_of_each_sequence(name):
    lengths = EDGE_LENGTHS[name]
    values, offsets = random_ragged(lengths, (3,))
    pieces = Ragged(values, offsets).unbind()
    assert isinstance(pieces, tuple) and len(pieces) == len(lengths)
    for piece, expected in zip(pieces, split(values, offsets)):
        assert piece.shape == expected.shape and torch.equal(piece, expected)
        assert piece._base is values  # a view, as Tensor.unbind gives


def test_unbind_keeps_the_graph():
    values, offsets = random_ragged([2, 3], (3,), dtype=torch.float64)
    values.requires_grad_()
    first, second = Ragged(values, offsets).unbind()
    (first.sum() + 2 * second.sum()).backward()
    assert torch.equal(values.grad, torch.tensor([1.0] * 2 + [2.0] * 3, dtype=torch.float64)[:, None].expand(5, 3))


@pytest.mark.parametrize("form", ["list", "tuple", "generator", "tensor"])
def test_from_list_takes_what_pad_sequence_takes(form):
    batch = torch.randn(4, 5, 3)
    pieces = [batch[0, :2], batch[1, :0], batch[2, :5], batch[3, :1]]
    if form == "tensor":  # its first dimension indexes sequences, all T long
        given, expected_lengths = batch, [5] * 4
    else:
        given = {"list": pieces, "tuple": tuple(pieces), "generator": (p for p in pieces)}[form]
        expected_lengths = [2, 0, 5, 1]
    ragged = Ragged.from_list(given)
    padded = pad_sequence(batch if form == "tensor" else pieces, batch_first=True)
    assert torch.equal(ragged.offsets, offsets_of(expected_lengths))
    assert torch.equal(ragged.to_padded(total_length=padded.shape[1]), padded)


def test_from_list_of_a_2d_tensor_and_of_a_nested_tensor():
    rows = torch.arange(6.0).reshape(2, 3)  # two sequences of three scalar tokens
    ragged = Ragged.from_list(rows)
    assert torch.equal(ragged.values, torch.arange(6.0)) and torch.equal(ragged.offsets, offsets_of([3, 3]))
    pieces = [torch.randn(2, 3), torch.randn(0, 3), torch.randn(4, 3)]
    nested = torch.nested.as_nested_tensor(pieces, layout=torch.jagged)
    from_nested = Ragged.from_list(nested)
    assert torch.equal(from_nested.values, torch.cat(pieces)) and torch.equal(from_nested.offsets, offsets_of([2, 0, 4]))
