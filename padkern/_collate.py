"""``padkern.collate``: a DataLoader ``collate_fn`` that batches sequences into one ``Ragged``.

Samples may be single sequences (tensors ``[length, *F]``), ``Ragged`` batches, or
tuples / namedtuples / dicts (nested freely) whose fields are such, or anything
``default_collate`` handles. Every tensor field with at least one dimension is a
sequence; 0-D tensors, numbers and strings go to ``default_collate``. The structure
is walked by torch's own ``collate`` with this element map, so it behaves exactly as
``default_collate`` does apart from sequences.

Importing padkern also teaches ``default_collate`` itself to concatenate ``Ragged``
items (``Ragged.cat``): left alone it treats a Ragged as a namedtuple and stacks its
fields, which gives 2-D offsets.
"""
import torch
from torch.utils.data._utils.collate import collate as _collate_structure
from torch.utils.data._utils.collate import default_collate_fn_map

from .ragged import Ragged


def _collate_sequences(batch, *, collate_fn_map=None):
    """B items, each a tensor [length_i, *F] or a Ragged -> one Ragged (values [L, *F], offsets [B'+1])."""
    if all(isinstance(item, torch.Tensor) for item in batch):
        if batch[0].dim() == 0:  # a per-sample scalar (a label), not a sequence
            return default_collate_fn_map[torch.Tensor](batch, collate_fn_map=collate_fn_map)
        return Ragged.from_list(batch)
    return Ragged.cat([item if isinstance(item, Ragged) else Ragged.from_list([item]) for item in batch])


# Ragged before Tensor; both looked up before torch's namedtuple and sequence rules.
_COLLATE_FN_MAP = {Ragged: _collate_sequences, **default_collate_fn_map, torch.Tensor: _collate_sequences}
default_collate_fn_map[Ragged] = _collate_sequences


def collate(batch):
    """``collate_fn`` for ``torch.utils.data.DataLoader``: sequence fields become one ``Ragged``.

    ``batch`` is a list of samples. A field that is a tensor ``[length, *F]`` in every
    sample becomes ``Ragged`` with B = len(batch) sequences (lengths may be 0); a
    ``Ragged`` field is concatenated (``Ragged.cat``); other fields are collated as
    ``torch.utils.data.default_collate`` does.
    """
    if not isinstance(batch, (list, tuple)):
        raise TypeError(f"batch must be a list of samples, got {type(batch).__name__}")
    if len(batch) == 0:
        raise ValueError("batch must hold at least one sample")
    return _collate_structure(batch, collate_fn_map=_COLLATE_FN_MAP)
