"""Ragged's conversions are exact or refuse: nested tensors with holes, validate(),
cat, collate and torch.load. Each is checked against per-sequence slices."""
import io

import pytest
import torch
from torch.utils.data import DataLoader, default_collate

import padkern
from padkern import Ragged
from ragged_cases import EDGE_LENGTHS, offsets_of, random_ragged, split


def assert_sequences(ragged, expected):
    """ragged holds exactly the sequences `expected`, and keeps the offsets contract."""
    ragged.validate()
    pieces = split(ragged.values, ragged.offsets)
    assert len(pieces) == len(expected)
    for b, (piece, want) in enumerate(zip(pieces, expected)):
        assert torch.equal(piece, want), b


# ----- torch.nested ---------------------------------------------------------------------
@pytest.mark.parametrize("features", [(), (3,), (2, 5)])
def test_from_nested_with_holes(features):
    # narrow leaves holes: offsets hold each sequence's start, lengths() its length,
    # and the rows between are not data.
    dense = torch.randn((4, 7) + features, requires_grad=True)
    starts, lengths = torch.tensor([1, 0, 6, 3]), torch.tensor([2, 7, 0, 3])
    nested = torch.nested.narrow(dense, 1, starts, lengths, layout=torch.jagged)
    assert nested.lengths() is not None
    ragged = Ragged.from_nested(nested)
    assert ragged.values.shape == (12,) + features and ragged.offsets.tolist() == [0, 2, 9, 9, 12]
    assert_sequences(ragged, [t for t in nested.unbind()])
    # The gather is differentiable: exactly the real rows get gradient.
    ragged.values.sum().backward()
    real = (torch.arange(7)[None, :] >= starts[:, None]) & (torch.arange(7)[None, :] < (starts + lengths)[:, None])
    assert torch.equal(dense.grad, real.reshape(real.shape + (1,) * len(features)).expand_as(dense).float())


@pytest.mark.parametrize("case", ["mixed_unsorted", "all_empty", "single_sequence", "first_empty"])
def test_from_nested_without_holes_shares_values(case):
    values, offsets = random_ragged(EDGE_LENGTHS[case], (3,))
    nested = torch.nested.nested_tensor_from_jagged(values, offsets)
    ragged = Ragged.from_nested(nested)
    assert ragged.values.data_ptr() == values.data_ptr()
    assert_sequences(ragged, [t for t in nested.unbind()])


def test_from_nested_rejects_offsets_that_do_not_tile_values():
    # torch reads a jagged tensor without lengths() as offsets tiling values.
    nested = torch.nested.nested_tensor_from_jagged(torch.randn(7, 2), torch.tensor([0, 2, 4]))
    with pytest.raises(ValueError, match=r"nested.offsets\(\)\[-1\] must equal the number of value rows 7, got 4"):
        Ragged.from_nested(nested)


@pytest.mark.parametrize("case", ["mixed_unsorted", "all_empty", "single_sequence", "one_long"])
def test_to_nested_pads_to_the_longest_sequence(case):
    lengths = EDGE_LENGTHS[case]
    ragged = Ragged(*random_ragged(lengths, (3,)))
    nested = ragged.to_nested()
    assert nested.values().data_ptr() == ragged.values.data_ptr()
    padded = torch.nested.to_padded_tensor(nested, 0.0)
    assert padded.shape == (len(lengths), max(lengths), 3)
    assert torch.equal(padded, ragged.to_padded())
    assert_sequences(Ragged.from_nested(nested), split(*ragged))


def test_to_nested_of_an_empty_batch():
    ragged = Ragged(torch.randn(0, 3), torch.tensor([0]))
    assert torch.nested.to_padded_tensor(ragged.to_nested(), 0.0).shape == (0, 0, 3)


# ----- validate -------------------------------------------------------------------------
def test_validate_returns_self():
    values, offsets = random_ragged([3, 0, 2], (4,))
    ragged = Ragged(values, offsets.int())
    assert ragged.validate() is ragged
    assert Ragged(torch.randn(0, 4), torch.tensor([0])).validate().batch_size == 0


BAD_OFFSETS = {
    "decreasing": (torch.tensor([0, 7, 1, 9]), r"offsets must be non-decreasing, but offsets\[2\]=1 < offsets\[1\]=7"),
    "first_not_zero": (torch.tensor([7, 9]), r"offsets\[0\] must be 0, got 7"),
    "last_not_rows": (torch.tensor([0, 7]), r"offsets\[-1\] must equal the number of value rows 9, got 7"),
}


@pytest.mark.parametrize("case", list(BAD_OFFSETS))
def test_every_reading_method_checks_the_offsets(case):
    offsets, message = BAD_OFFSETS[case]
    ragged = Ragged(torch.randn(9, 2), offsets)
    reads = {
        "validate": ragged.validate,
        "lengths": ragged.lengths,
        "max_length": lambda: ragged.max_length,
        "mask": ragged.mask,
        "mask(total_length)": lambda: ragged.mask(20),
        "to_padded": ragged.to_padded,
        "to_padded(total_length)": lambda: ragged.to_padded(20),
        "to_packed": ragged.to_packed,
        "to_nested": ragged.to_nested,
    }
    for name, read in reads.items():
        with pytest.raises(ValueError, match=message):
            read()
            pytest.fail(name)


def test_validate_reads_gpu_offsets_without_debug_mode():
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    ragged = Ragged(torch.randn(9, 2, device="cuda"), torch.tensor([0, 7, 1, 9], device="cuda"))
    with pytest.raises(ValueError, match=r"offsets must be non-decreasing"):
        ragged.validate()
    with pytest.raises(ValueError, match=r"offsets must be non-decreasing"):
        ragged.max_length


# ----- cat ------------------------------------------------------------------------------
def test_cat_matches_the_sequences_in_order():
    pieces = [random_ragged(lengths, (2, 3), seed=i) for i, lengths in enumerate([[3, 0], [], [0, 0], [5], [1, 4, 0]])]
    raggeds = [Ragged(values, offsets.int() if i % 2 else offsets) for i, (values, offsets) in enumerate(pieces)]
    joined = Ragged.cat(raggeds)
    assert joined.offsets.dtype == torch.int64
    assert joined.offsets.tolist() == [0, 3, 3, 3, 3, 8, 9, 13, 13]
    assert_sequences(joined, [seq for ragged in raggeds for seq in split(*ragged)])


def test_cat_of_empty_pieces():
    empty = Ragged(torch.randn(0, 4), torch.tensor([0]))
    assert Ragged.cat([empty, empty]).offsets.tolist() == [0]
    assert Ragged.cat([empty, Ragged(torch.randn(0, 4), torch.tensor([0, 0]))]).offsets.tolist() == [0, 0]


# ----- torch.save / torch.load ----------------------------------------------------------
def test_save_load_with_default_weights_only():
    ragged = Ragged(*random_ragged([3, 0, 5], (4,)))
    buffer = io.BytesIO()
    torch.save({"batch": ragged, "more": [ragged]}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer)  # weights_only=True, the default
    for back in (loaded["batch"], loaded["more"][0]):
        assert type(back) is Ragged
        assert torch.equal(back.values, ragged.values) and torch.equal(back.offsets, ragged.offsets)


# ----- DataLoader ------------------------------------------------------------------------
class Sequences(torch.utils.data.Dataset):
    """Item i: (tokens [length_i, 3], label i, {"extra": tokens [i % 3, 2], "name": str})."""

    LENGTHS = [4, 0, 2, 7, 0, 0, 1, 3]

    def __len__(self):
        return len(self.LENGTHS)

    def __getitem__(self, i):
        tokens = torch.full((self.LENGTHS[i], 3), float(i))
        return tokens, i, {"extra": torch.full((i % 3, 2), -float(i)), "name": f"item{i}"}


@pytest.mark.parametrize("num_workers", [0, 1])
def test_dataloader_collates_sequences_into_ragged(num_workers):
    dataset = Sequences()
    loader = DataLoader(dataset, batch_size=3, collate_fn=padkern.collate, num_workers=num_workers)
    batches = list(loader)
    assert len(batches) == 3
    for k, (tokens, labels, fields) in enumerate(batches):
        indices = list(range(3 * k, min(3 * k + 3, len(dataset))))
        assert isinstance(tokens, Ragged) and tokens.offsets.dim() == 1
        assert_sequences(tokens, [dataset[i][0] for i in indices])
        assert torch.equal(labels, torch.tensor(indices))
        assert_sequences(fields["extra"], [dataset[i][2]["extra"] for i in indices])
        assert fields["name"] == [f"item{i}" for i in indices]


def test_collate_ragged_samples_and_scalar_tensors():
    samples = [(Ragged(*random_ragged(lengths, (2,), seed=len(lengths))), torch.tensor(float(len(lengths))))
               for lengths in ([2, 0], [], [0, 0, 3])]
    joined, sizes = padkern.collate(samples)
    assert_sequences(joined, [seq for ragged, _ in samples for seq in split(*ragged)])
    assert torch.equal(sizes, torch.tensor([2.0, 0.0, 3.0]))
    # A single sequence and a Ragged may share a field: the sequence is a batch of one.
    single = torch.randn(4, 2)
    mixed = padkern.collate([single, samples[0][0]])
    assert_sequences(mixed, [single] + split(*samples[0][0]))


def test_default_collate_concatenates_ragged_items():
    # Left alone it would stack the fields into 2-D offsets.
    items = [Ragged(*random_ragged(lengths, (3,), seed=i)) for i, lengths in enumerate([[2, 0], [5], [1, 1, 0]])]
    batch = default_collate(items)
    assert isinstance(batch, Ragged) and batch.offsets.tolist() == [0, 2, 2, 7, 8, 9, 9]
    assert_sequences(batch, [seq for item in items for seq in split(*item)])


def test_from_list_and_cat_agree_on_edge_cases():
    # from_list and cat agree, on every edge case of the suite.
    for lengths in EDGE_LENGTHS.values():
        values, offsets = random_ragged(lengths, (2,))
        pieces = split(values, offsets)
        assert torch.equal(Ragged.from_list(pieces).offsets, offsets_of(lengths))
        singles = Ragged.cat([Ragged.from_list([piece]) for piece in pieces])
        assert torch.equal(singles.values, values) and torch.equal(singles.offsets, offsets)
