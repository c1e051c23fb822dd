"""``Ragged``: a batch of variable-length sequences stored back to back.

``values [L, *F]`` holds the sequences' tokens in batch order and ``offsets [B+1]``
delimits them (the offsets contract: padkern/_validate.py). A NamedTuple, so it is
a pytree that torch.compile passes through at no cost; for the same reason the
constructor checks nothing: ``validate()`` does, and so does every method below
that would otherwise return a wrong answer.
"""
import operator
from collections.abc import Iterable
from typing import NamedTuple

import torch
from torch.nn.utils.rnn import PackedSequence

from . import _validate
from .ops import padding
from .reference.padding import offsets_from_lengths, token_coordinates, token_count


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
        _validate.check_tensor(x, "x")
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
        """From what ``pad_sequence`` takes: a list, tuple or other iterable of tensors
        ``[length_i, *F]`` (lengths may be 0; same F, dtype, device), or one tensor
        ``[B, T, *F]`` whose first dimension indexes B sequences of T tokens each."""
        if isinstance(sequences, torch.Tensor):
            if sequences.is_nested:
                return cls.from_nested(sequences)
            if sequences.dim() < 2:
                raise ValueError("sequences, given as one tensor, must be [B, T, *F] (its first dimension indexes "
                                 f"sequences, each [T, *F]), got a {sequences.dim()}-D tensor")
            batch, steps = sequences.shape[0], sequences.shape[1]
            offsets = torch.arange(batch + 1, device=sequences.device) * steps
            return cls(sequences.flatten(0, 1), offsets)
        if isinstance(sequences, (str, bytes)) or not isinstance(sequences, Iterable):
            raise TypeError("sequences must be a list, tuple or iterable of tensors [length_i, *F], or a tensor "
                            f"[B, T, *F], got {type(sequences).__name__}")
        sequences = tuple(sequences)
        if len(sequences) == 0:
            raise ValueError("sequences must hold at least one tensor (the feature shape comes from it)")
        for i, sequence in enumerate(sequences):
            _validate.check_tensor(sequence, f"sequences[{i}]")
            if sequence.dim() < 1:
                raise ValueError(f"sequences[{i}] must be [length, *F], got a 0-D tensor")
        _check_alike(list(sequences), "sequences")
        lengths = torch.tensor([s.shape[0] for s in sequences], dtype=torch.int64)
        return cls(torch.cat(list(sequences)), offsets_from_lengths(lengths).to(sequences[0].device))

    @classmethod
    def cat(cls, raggeds) -> "Ragged":
        """Concatenates batches: ``B = sum(B_i)`` sequences, ``values [sum(L_i), *F]``, in order.

        Each piece's offsets are shifted by the rows before it, known from the values'
        shapes, so nothing is read from a GPU.
        """
        if not isinstance(raggeds, (list, tuple)) or isinstance(raggeds, Ragged):
            raise TypeError(f"raggeds must be a list or tuple of padkern.Ragged, got {type(raggeds).__name__}")
        if len(raggeds) == 0:
            raise ValueError("raggeds must hold at least one Ragged (the feature shape comes from it)")
        for i, piece in enumerate(raggeds):
            if not isinstance(piece, Ragged):
                raise TypeError(f"raggeds[{i}] must be a padkern.Ragged, got {type(piece).__name__}")
            piece._check(f"raggeds[{i}].")
        _check_alike([piece.values for piece in raggeds], "raggeds", ".values")
        pieces, start = [raggeds[0].offsets.to(torch.int64)], raggeds[0].values.shape[0]
        for piece in raggeds[1:]:
            pieces.append(piece.offsets[1:].to(torch.int64) + start)
            start += piece.values.shape[0]
        return cls(torch.cat([piece.values for piece in raggeds]), torch.cat(pieces))

    @classmethod
    def from_packed(cls, packed: PackedSequence) -> "Ragged":
        """From a ``PackedSequence``, back in the original (unsorted) batch order."""
        if not isinstance(packed, PackedSequence):
            raise TypeError(f"packed must be a torch.nn.utils.rnn.PackedSequence, got {type(packed).__name__}")
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
        """From a ``torch.nested`` jagged tensor ``[B, j, *F]`` (layout ``torch.jagged``).

        Sequence i is ``nested.unbind()[i]``. Without holes ``values`` is shared; a
        tensor with holes (``nested.lengths()`` set, as ``torch.nested.narrow`` makes)
        is gathered into compact values holding exactly the real rows, which reads
        the token count on the host.
        """
        if not getattr(nested, "is_nested", False) or nested.layout != torch.jagged:
            raise TypeError("nested must be a torch.nested tensor with layout=torch.jagged")
        ragged_dim = getattr(nested, "_ragged_idx", 1)
        if ragged_dim != 1:
            raise ValueError(
                f"nested must be ragged in dimension 1 (components [length_i, *F]), got ragged dimension {ragged_dim}; "
                f"transpose it back first"
            )
        values, offsets, lengths = nested.values(), nested.offsets().to(torch.int64), nested.lengths()
        if lengths is None:
            # torch itself reads such a tensor as offsets tiling values (unbind splits values by them).
            return cls(values, _validate.check_offsets(offsets, values.shape[0], values.device, "nested.offsets()"))
        # Holes: sequence i is values[offsets[i] : offsets[i] + lengths[i]], and rows between are not data.
        compact = offsets_from_lengths(lengths.to(torch.int64))
        total_tokens = token_count(compact)
        seq, pos = token_coordinates(compact, total_tokens)
        return cls(values.index_select(0, offsets[:-1][seq] + pos), compact)

    # ----- checks ---------------------------------------------------------------------
    def validate(self) -> "Ragged":
        """Checks the offsets contract (padkern/_validate.py) in full and returns self.

        Contents are read on the host even for GPU offsets (one B+1 copy); skipped only
        under torch.compile, like every content check.
        """
        self._host_offsets()
        return self

    def _check(self, prefix: str = "") -> torch.Tensor:
        """The cheap check: types, shapes and device always, contents only for CPU offsets
        (or in debug mode). Returns int64 offsets."""
        _validate.check_tensor(self.values, f"{prefix}values")
        if self.values.dim() < 1:
            raise ValueError(f"{prefix}values must be [L, *F] with a token dimension, got a 0-D tensor")
        return _validate.check_offsets(self.offsets, self.values.shape[0], self.values.device, f"{prefix}offsets")

    def _host_offsets(self) -> torch.Tensor:
        """int64 offsets on the CPU, checked in full: for methods that read the host anyway.
        (Under torch.compile: the offsets as they are, contents unchecked.)"""
        offsets = self._check()
        if offsets.device.type == "cpu" or torch.compiler.is_compiling():
            return offsets
        host = offsets.cpu()
        return _validate.check_offsets(host, self.values.shape[0], host.device)

    # ----- views --------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return self.offsets.shape[0] - 1

    def lengths(self) -> torch.Tensor:
        """int64 [B]: each sequence's length."""
        offsets = self._check()
        return offsets[1:] - offsets[:-1]

    @property
    def max_length(self) -> int:
        """The longest sequence's length (0 for an empty batch); reads the offsets on the host."""
        return _longest(self._host_offsets())

    def mask(self, total_length=None, batch_first=True) -> torch.Tensor:
        """bool [B, T] (or [T, B]): True at real tokens. T defaults to the longest sequence."""
        if total_length is None:
            total_length = self.max_length
        else:
            total_length = _check_total_length(total_length, self._check())
        mask = torch.arange(total_length, device=self.offsets.device)[None, :] < self.lengths()[:, None]
        return mask if batch_first else mask.t()

    def with_values(self, values: torch.Tensor) -> "Ragged":
        """The same sequences with new per-token values (e.g. a layer's output)."""
        if values.shape[0] != self.values.shape[0]:
            raise ValueError(f"values must have {self.values.shape[0]} rows (one per token), got {values.shape[0]}")
        return Ragged(values, self.offsets)

    # ----- movement, with torch.Tensor's semantics ---------------------------------------
    @property
    def device(self) -> torch.device:
        return self.values.device

    @property
    def dtype(self) -> torch.dtype:
        """The values' dtype (the offsets are always integers)."""
        return self.values.dtype

    def to(self, *args, **kwargs) -> "Ragged":
        """``Tensor.to``'s arguments (a device, a dtype, a tensor, ``non_blocking``, ``copy``,
        ``memory_format``). A dtype converts ``values`` only: offsets stay integers. A device
        moves both tensors; ``non_blocking=True`` copies both asynchronously, so a batch in
        pinned memory reaches the GPU without stalling the host. Returns self when nothing
        changes and ``copy`` is False, as ``Tensor.to`` does."""
        device, dtype, non_blocking, copy, memory_format = _to_arguments(args, kwargs)
        values = self.values.to(device=device, dtype=dtype, non_blocking=non_blocking, copy=copy,
                                memory_format=memory_format)
        offsets = self.offsets.to(device=device, non_blocking=non_blocking, copy=copy)
        if values is self.values and offsets is self.offsets:
            return self
        return Ragged(values, offsets)

    def cuda(self, device=None, non_blocking=False) -> "Ragged":
        """Both tensors on a CUDA device (``Tensor.cuda``'s arguments)."""
        return self._each(lambda t: t.cuda(device, non_blocking))

    def cpu(self) -> "Ragged":
        return self._each(lambda t: t.cpu())

    def pin_memory(self) -> "Ragged":
        """Both tensors in page-locked host memory, as ``DataLoader(pin_memory=True)`` asks
        of a batch: a later ``.to("cuda", non_blocking=True)`` is then truly asynchronous."""
        return self._each(lambda t: t.pin_memory())

    def is_pinned(self) -> bool:
        return self.values.is_pinned() and self.offsets.is_pinned()

    def detach(self) -> "Ragged":
        """The same sequences with ``values`` cut from the autograd graph (shared storage)."""
        return Ragged(self.values.detach(), self.offsets)

    def requires_grad_(self, requires_grad: bool = True) -> "Ragged":
        """Sets ``values.requires_grad`` in place and returns self."""
        self.values.requires_grad_(requires_grad)
        return self

    def _each(self, move) -> "Ragged":
        values, offsets = move(self.values), move(self.offsets)
        return self if values is self.values and offsets is self.offsets else Ragged(values, offsets)

    def unbind(self) -> tuple:
        """The B sequences, each a view ``values[offsets[i]:offsets[i+1]]`` of shape ``[length_i, *F]``
        (``torch.nested``'s ``unbind``); reads the offsets on the host."""
        offsets = self._host_offsets()
        return torch.split(self.values, (offsets[1:] - offsets[:-1]).tolist())

    # ----- conversion -----------------------------------------------------------------
    def to_padded(self, total_length=None, padding_value=0.0, batch_first=True, *, backend=None) -> torch.Tensor:
        """Padded ``[B, T, *F]`` (or ``[T, B, *F]``); T defaults to the longest sequence
        (a host read of the offsets; pass it to avoid one on a GPU)."""
        if total_length is None:
            total_length = self.max_length
        else:
            total_length = _check_total_length(total_length, self._check())
        return padding.pad(self.values, self.offsets, total_length, padding_value, batch_first, backend=backend)

    def to_packed(self) -> PackedSequence:
        """A ``PackedSequence`` as ``pack_padded_sequence(enforce_sorted=False)`` makes it.

        PackedSequence cannot hold a zero-length sequence, so one raises here.
        """
        offsets = self._host_offsets()
        lengths = offsets[1:] - offsets[:-1]
        if lengths.numel() > 0 and int(lengths.min()) == 0:
            empty = int((lengths == 0).nonzero()[0])
            raise ValueError(f"a PackedSequence cannot hold zero-length sequences, but sequence {empty} has length 0")
        sorted_lengths, sorted_indices = torch.sort(lengths, descending=True)
        rows = _packed_rows(offsets, sorted_indices, sorted_lengths)
        batch_sizes = (sorted_lengths[None, :] > torch.arange(_longest(offsets))[:, None]).sum(1)
        device = self.values.device
        return PackedSequence(
            self.values.index_select(0, rows.to(device)),
            batch_sizes,
            sorted_indices.to(device),
            torch.argsort(sorted_indices).to(device),
        )

    def to_nested(self) -> torch.Tensor:
        """A ``torch.nested`` jagged tensor ``[B, j, *F]`` sharing ``values``.

        Its min/max sequence lengths are set (a host read of the offsets), so that
        ``to_padded_tensor`` pads to the longest sequence rather than to L.
        """
        offsets = self._host_offsets()
        lengths = offsets[1:] - offsets[:-1]
        shortest = int(lengths.min()) if lengths.numel() > 0 else 0
        return torch.nested.nested_tensor_from_jagged(
            self.values, self._check(), min_seqlen=shortest, max_seqlen=_longest(offsets))


# Ragged holds only tensors, so torch.load(weights_only=True), the default, may rebuild it.
torch.serialization.add_safe_globals([Ragged])


def _to_arguments(args, kwargs):
    """``Tensor.to``'s arguments as (device, dtype, non_blocking, copy, memory_format).

    torch's own parser (what ``nn.Module.to`` uses) takes all but ``copy``, which
    ``Tensor.to`` accepts by keyword or as the second trailing bool (after non_blocking).
    """
    kwargs, args = dict(kwargs), list(args)
    copy = kwargs.pop("copy", False)
    flags = []
    while args and isinstance(args[-1], bool):
        flags.insert(0, args.pop())
    if len(flags) > 2:
        raise TypeError(f"to() takes at most two bools (non_blocking, copy), got {len(flags)}")
    if len(flags) == 2:
        copy = flags.pop()
    device, dtype, non_blocking, memory_format = torch._C._nn._parse_to(*args, *flags, **kwargs)
    return device, dtype, non_blocking, copy, memory_format or torch.preserve_format


def _longest(offsets: torch.Tensor) -> int:
    return int((offsets[1:] - offsets[:-1]).max()) if offsets.numel() > 1 else 0


def _check_total_length(total_length, offsets: torch.Tensor):
    """``total_length`` as an int; where the offsets' contents are checked, at least the longest sequence."""
    if isinstance(total_length, torch.SymInt):  # under torch.compile
        return total_length
    if isinstance(total_length, bool):
        raise TypeError("total_length must be an int, got bool")
    try:
        total_length = operator.index(total_length)
    except TypeError:
        raise TypeError(f"total_length must be an int, got {type(total_length).__name__}") from None
    if total_length < 0:
        raise ValueError(f"total_length must be non-negative, got {total_length}")
    if _validate.contents_checked(offsets) and _longest(offsets) > total_length:
        raise ValueError(f"total_length must be at least the longest sequence {_longest(offsets)}, got {total_length}")
    return total_length


def _check_alike(tensors, name: str, suffix: str = "") -> None:
    """Every tensor has the first one's feature shape (dims after the first), dtype and device."""
    first = tensors[0]
    for i, tensor in enumerate(tensors[1:], start=1):
        this, that = f"{name}[{i}]{suffix}", f"{name}[0]{suffix}"
        if tuple(tensor.shape[1:]) != tuple(first.shape[1:]):
            raise ValueError(
                f"{this} must have {that}'s feature shape {tuple(first.shape[1:])} (all dimensions after the first), "
                f"got {tuple(tensor.shape[1:])}"
            )
        if tensor.dtype != first.dtype:
            raise TypeError(f"{this} must have {that}'s dtype {first.dtype}, got {tensor.dtype}")
        if tensor.device != first.device:
            raise ValueError(f"{this} must be on {that}'s device {first.device}, got {tensor.device}")


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
