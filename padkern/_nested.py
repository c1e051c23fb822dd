"""torch.nested jagged tensors in and out of padkern, for modules that take either.

A module that accepts an NJT ``[B, j, *F]`` turns it into a :class:`Ragged` with
:func:`ragged_of` (``values`` shared when the tensor has no holes) and returns its
result in the same form with :func:`nested_like`. Where the output has the input's
sequences (the same offsets tensor), the output NJT is built on that very tensor, so
its ragged dimension is the input's (``out.shape[1] == njt.shape[1]``, the same
nested int) and ``torch.nested`` code can combine the two.
"""
import torch

from .ragged import Ragged


def is_jagged(input) -> bool:
    """Whether ``input`` is a ``torch.nested`` tensor with layout ``torch.jagged``."""
    return isinstance(input, torch.Tensor) and input.is_nested and input.layout == torch.jagged


def ragged_of(nested: torch.Tensor) -> Ragged:
    """The NJT's sequences as a Ragged (see ``Ragged.from_nested``: holes are gathered)."""
    return Ragged.from_nested(nested)


def nested_like(ragged: Ragged, nested: torch.Tensor) -> torch.Tensor:
    """``ragged`` as an NJT, with ``nested``'s ragged dimension when it has the same offsets.

    ``ragged`` must hold the sequences of ``ragged_of(nested)`` (same B and lengths): the
    sequence lengths known to ``nested`` (its cached min/max) are reused, so no host read
    happens here.
    """
    if nested.lengths() is None and ragged.offsets is nested.offsets():
        return torch.nested.nested_tensor_from_jagged(
            ragged.values, nested.offsets(), min_seqlen=_cached(nested, "min"), max_seqlen=_cached(nested, "max"))
    return ragged.to_nested()


def _cached(nested: torch.Tensor, which: str):
    """The NJT's cached min or max sequence length (a host read once, if torch has not cached it)."""
    value = getattr(nested, f"_{which}_seqlen", None)
    if value is None:
        return None
    return int(value) if not torch.compiler.is_compiling() else value
