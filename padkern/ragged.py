"""``Ragged``: a batch of variable-length sequences stored back to back.

``values [L, *F]`` holds the sequences' tokens in batch order and ``offsets [B+1]``
delimits them (the offsets contract: padkern/_validate.py). A NamedTuple, so it is
a pytree that torch.compile passes through at no cost.
"""
from typing import NamedTuple

import torch
from torch.nn.utils.rnn import PackedSequence

from . import _validate
from .ops import padding
from .reference.padding import offsets_from_lengths, token_count


class Ragged(NamedTuple):
    values: torch.Tensor
    offsets: torch.Tensor

    # ----- construction -------------------------------------------------------------
    @classmethod
    def from_padded(cls, x, lengths, batch_first=True, *, backend=None) -> "Ragged":
        """From padded ``x [B, T, *F]`` (or ``[T, B, *F]``) and per-sequence ``lengths [B]``.

        ``lengths`` may live on the CPU (as ``pack_padded_sequence`` wants them): the
        token count is then known without reading the GPU.
        """
        _validate.check_tensor(x, "x")
        if x.dim() < 2:
            raise ValueError(f"x must have batch and time dimensions, got a {x.dim()}-D tensor")
        batch, padded_length = (x.shape[0], x.shape[1]) if batch_first else (x.shape[1], x.shape[0])
        lengths = _validate.check_lengths(lengths, batch, padded_length)
        offsets = offsets_from_lengths(lengths)
        total_tokens = token_count(offsets)
        offsets = offsets.to(x.device, non_blocking=True)
        values = padding.unpad(x, offsets, batch_first, total_tokens=total_tokens, backend=backend)
        return cls(values, offsets)

    @classmethod
    def from_mask(cls, x, mask, batch_first=True) -> "Ragged":
        """From padded ``x`` and a boolean ``mask [B, T]`` (True = real token).

        Any mask is accepted, left-padded or with holes: each sequence keeps its
        real tokens in their order.
        """
        _validate.check_tensor(mask, "mask")
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be bool, got {mask.dtype}")
        if not batch_first:
            x, mask = x.transpose(0, 1), mask.transpose(0, 1)
        if tuple(mask.shape) != tuple(x.shape[:2]):
            raise ValueError(f"mask must have shape {tuple(x.shape[:2])} (x's batch and time), got {tuple(mask.shape)}")
        if mask.device != x.device:
            raise ValueError(f"mask must be on x's device {x.device}, got {mask.device}")
        return cls(x[mask], offsets_from_lengths(mask.sum(1)))

    @classmethod
    def from_list(cls, sequences) -> "Ragged":
        """From a list of tensors ``[length_i, *F]`` (lengths may be 0)."""
        if len(sequences) == 0:
            raise ValueError("sequences must hold at least one tensor (the feature shape comes from it)")
        lengths = torch.tensor([s.shape[0] for s in sequences], dtype=torch.int64)
        return cls(torch.cat(list(sequences)), offsets_from_lengths(lengths).to(sequences[0].device))

    @classmethod
    def from_packed(cls, packed: PackedSequence) -> "Ragged":
        """From a ``PackedSequence``, back in the original (unsorted) batch order."""
        offsets, rows = packed_layout(packed)
        values = packed.data.new_empty((int(offsets[-1]),) + packed.data.shape[1:])
        values = values.index_copy(0, rows.to(packed.data.device), packed.data)
        return cls(values, offsets.to(packed.data.device))

    def to_packed_like(self, packed: PackedSequence) -> PackedSequence:
        """Packs these values in exactly the order of ``packed`` (same lengths and sorting)."""
        _, rows = packed_layout(packed)
        return packed._replace(data=self.values.index_select(0, rows.to(self.values.device)))

    @classmethod
    def from_nested(cls, nested: torch.Tensor) -> "Ragged":
        """From a ``torch.nested`` jagged tensor (layout ``torch.jagged``)."""
        if not getattr(nested, "is_nested", False) or nested.layout != torch.jagged:
            raise TypeError("nested must be a torch.nested tensor with layout=torch.jagged")
        return cls(nested.values(), nested.offsets().to(torch.int64))

    # ----- views --------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return self.offsets.shape[0] - 1

    def lengths(self) -> torch.Tensor:
        """int64 [B]: each sequence's length."""
        return self.offsets[1:] - self.offsets[:-1]

    @property
    def max_length(self) -> int:
        """The longest sequence's length (0 for an empty batch); reads the offsets on the host."""
        return int(self.lengths().max()) if self.batch_size > 0 else 0

    def mask(self, total_length=None, batch_first=True) -> torch.Tensor:
        """bool [B, T] (or [T, B]): True at real tokens."""
        total_length = self.max_length if total_length is None else total_length
        mask = torch.arange(total_length, device=self.offsets.device)[None, :] < self.lengths()[:, None]
        return mask if batch_first else mask.t()

    def with_values(self, values: torch.Tensor) -> "Ragged":
        """The same sequences with new per-token values (e.g. a layer's output)."""
        if values.shape[0] != self.values.shape[0]:
            raise ValueError(f"values must have {self.values.shape[0]} rows (one per token), got {values.shape[0]}")
        return Ragged(values, self.offsets)

    # ----- conversion -----------------------------------------------------------------
    def to_padded(self, total_length=None, padding_value=0.0, batch_first=True, *, backend=None) -> torch.Tensor:
        """Padded ``[B, T, *F]`` (or ``[T, B, *F]``); T defaults to the longest sequence."""
        return padding.pad(self.values, self.offsets, total_length, padding_value, batch_first, backend=backend)

    def to_packed(self) -> PackedSequence:
        """A ``PackedSequence`` as ``pack_padded_sequence(enforce_sorted=False)`` makes it.

        PackedSequence cannot hold a zero-length sequence, so one raises here.
        """
        lengths = self.lengths().cpu()
        if lengths.numel() > 0 and int(lengths.min()) == 0:
            empty = int((lengths == 0).nonzero()[0])
            raise ValueError(f"a PackedSequence cannot hold zero-length sequences, but sequence {empty} has length 0")
        sorted_lengths, sorted_indices = torch.sort(lengths, descending=True)
        rows = _packed_rows(self.offsets.cpu().to(torch.int64), sorted_indices, sorted_lengths)
        batch_sizes = (sorted_lengths[None, :] > torch.arange(self.max_length)[:, None]).sum(1)
        device = self.values.device
        return PackedSequence(
            self.values.index_select(0, rows.to(device)),
            batch_sizes,
            sorted_indices.to(device),
            torch.argsort(sorted_indices).to(device),
        )

    def to_nested(self) -> torch.Tensor:
        """A ``torch.nested`` jagged tensor sharing ``values``."""
        return torch.nested.nested_tensor_from_jagged(self.values, self.offsets)


def _packed_rows(offsets, sorted_indices, sorted_lengths) -> torch.Tensor:
    """For each row of packed data (time-major over the length-sorted batch), its row in values."""
    longest = int(sorted_lengths[0]) if sorted_lengths.numel() > 0 else 0
    steps = torch.arange(longest)[:, None]
    present = steps < sorted_lengths[None, :]
    return (offsets[sorted_indices][None, :] + steps)[present]


def packed_layout(packed: PackedSequence):
    """(offsets [B+1], rows [sum(batch_sizes)]) of a PackedSequence in the original batch order:
    packed.data[i] is token rows[i] of the ragged values."""
    batch_sizes = packed.batch_sizes
    batch = int(batch_sizes[0]) if batch_sizes.numel() > 0 else 0
    # Sequence k of the sorted order is as long as the number of steps with batch size > k.
    sorted_lengths = (batch_sizes[None, :] > torch.arange(batch)[:, None]).sum(1)
    sorted_indices = packed.sorted_indices
    sorted_indices = torch.arange(batch) if sorted_indices is None else sorted_indices.cpu()
    lengths = torch.empty_like(sorted_lengths)
    lengths[sorted_indices] = sorted_lengths
    offsets = offsets_from_lengths(lengths)
    return offsets, _packed_rows(offsets, sorted_indices, sorted_lengths)
