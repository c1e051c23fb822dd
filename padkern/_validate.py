"""Checks at the public boundary. Kernels trust what passes them.

The offsets contract (stated once, referenced everywhere): ``offsets`` is a 1-D
int64 or int32 tensor of length B+1 on the same device as the values, with
``offsets[0] == 0``, non-decreasing, and ``offsets[-1] == values.shape[0]``.
Sequence i is ``values[offsets[i]:offsets[i+1]]``; zero-length sequences are legal.

Checks of the offsets' *contents* read them on the host. On CPU tensors they
always run; on a GPU they would cost a device-to-host copy per call, so they run
only in debug mode (``padkern.set_debug(True)`` or ``PADKERN_DEBUG=1``). Under
torch.compile content checks are skipped (they would break the graph).
"""
import os

import torch
from torch.fx.experimental.symbolic_shapes import guard_or_false

_debug = [os.environ.get("PADKERN_DEBUG", "0") == "1"]


def set_debug(enabled: bool) -> None:
    """Also check offsets' contents on GPU tensors (one device-to-host copy per op)."""
    _debug[0] = bool(enabled)


def contents_checked(tensor: torch.Tensor) -> bool:
    if torch.compiler.is_compiling():
        return False
    return tensor.device.type == "cpu" or _debug[0]


def dense(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` with row-major strides, as every kernel reading by pointer assumes.

    ``.contiguous()`` alone is not enough: on a zero-element tensor it is a no-op whatever
    the strides (``torch.ones(()).expand(2, 0, 4)`` keeps stride 0). A zero-element clone
    is free and stays in the autograd graph.
    """
    return restrided_if_empty(tensor).contiguous()


def restrided_if_empty(tensor: torch.Tensor) -> torch.Tensor:
    """A zero-element tensor with row-major strides (free); any other tensor unchanged, for
    kernels that read through any strides."""
    # Under torch.compile the size may be an unbacked symbol that cannot be compared with
    # 0; the compiled graph materialises its own tensors. `is_compiling()` alone does not
    # cover that: a backward traced by AOTAutograd runs outside Dynamo (torch 2.11 then says
    # False), so an undecidable size counts as non-empty, without a guard.
    if torch.compiler.is_compiling() or not guard_or_false(tensor.numel() == 0):
        return tensor
    return tensor.clone(memory_format=torch.contiguous_format)


def check_tensor(tensor, name: str) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")


def check_token_rows(values, name: str, layout: str) -> None:
    """``values`` is a floating-point tensor of token rows, 2-D as ``layout`` names it
    (e.g. "[L, input_size]")."""
    check_tensor(values, name)
    if values.dim() != 2:
        raise ValueError(f"{name} must be {layout}, got shape {tuple(values.shape)}")
    if not values.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {values.dtype}")


def check_offsets(offsets, total_rows, device: torch.device, name: str = "offsets") -> torch.Tensor:
    """Validate ``offsets`` against a values tensor of ``total_rows`` rows (None: any L);
    returns contiguous int64 offsets."""
    check_tensor(offsets, name)
    if offsets.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name} must be int64 or int32, got {offsets.dtype}")
    if offsets.dim() != 1 or offsets.numel() < 1:
        raise ValueError(f"{name} must be 1-D with B+1 >= 1 entries, got shape {tuple(offsets.shape)}")
    if offsets.device != device:
        raise ValueError(f"{name} must be on the values' device {device}, got {offsets.device}")
    if contents_checked(offsets):
        if int(offsets[0]) != 0:
            raise ValueError(f"{name}[0] must be 0, got {int(offsets[0])}")
        if offsets.numel() > 1 and bool((offsets[1:] < offsets[:-1]).any()):
            i = int((offsets[1:] < offsets[:-1]).nonzero()[0])
            raise ValueError(
                f"{name} must be non-decreasing, but {name}[{i + 1}]={int(offsets[i + 1])} < {name}[{i}]={int(offsets[i])}"
            )
        if total_rows is not None and int(offsets[-1]) != total_rows:
            raise ValueError(f"{name}[-1] must equal the number of value rows {total_rows}, got {int(offsets[-1])}")
    # A B+1 element conversion: kernels index with int64 only, through a unit stride.
    return dense(offsets.to(torch.int64))


def check_lengths(lengths, batch: int, padded_length: int, name: str = "lengths") -> torch.Tensor:
    """Validate per-sequence ``lengths`` against a padded batch; returns int64 lengths."""
    if isinstance(lengths, (list, tuple)):
        lengths = torch.tensor(lengths, dtype=torch.int64)
    check_tensor(lengths, name)
    if lengths.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"{name} must be an integer tensor, got {lengths.dtype}")
    if lengths.dim() != 1 or lengths.numel() != batch:
        raise ValueError(f"{name} must be 1-D with one entry per sequence ({batch}), got shape {tuple(lengths.shape)}")
    if contents_checked(lengths) and batch > 0:
        low, high = int(lengths.min()), int(lengths.max())
        if low < 0:
            raise ValueError(f"{name} must be non-negative, got {low}")
        if high > padded_length:
            raise ValueError(f"{name} must not exceed the padded length {padded_length}, got {high}")
    return dense(lengths.to(torch.int64))


def check_same_device_dtype(reference: torch.Tensor, reference_name: str, **others) -> None:
    for name, tensor in others.items():
        if tensor is None:
            continue
        check_tensor(tensor, name)
        if tensor.device != reference.device:
            raise ValueError(f"{name} must be on {reference_name}'s device {reference.device}, got {tensor.device}")
        # Under torch.autocast floating dtypes may differ, as for torch's own ops: the
        # Autocast kernels (padkern/ops/_autocast.py) cast them before any kernel runs.
        mixed_under_autocast = (torch.is_autocast_enabled(reference.device.type) and tensor.is_floating_point()
                                and reference.is_floating_point())
        if tensor.dtype != reference.dtype and not mixed_under_autocast:
            raise TypeError(f"{name} must have {reference_name}'s dtype {reference.dtype}, got {tensor.dtype}")


def check_shape(tensor: torch.Tensor, expected: tuple, name: str) -> None:
    if tuple(tensor.shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)}, got {tuple(tensor.shape)}")
