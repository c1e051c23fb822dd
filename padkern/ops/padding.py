"""pad / unpad: moving rows between a ragged buffer and a padded tensor.

Registration (fake functions and autograd) for the native ops (``padkern::pad``,
``padkern::unpad``: C++ on CPU, CUDA on GPU) and the Triton ops, plus the public
functions that validate once and dispatch to the chosen backend. pad and unpad
are each other's adjoint, so each one's backward is the other.
"""
import math
import operator

import torch

from .. import _backend, _validate
from .._extension import TRITON_MISSING
from ..reference import padding as reference
from ._registration import register_family

_NATIVE = (torch.ops.padkern.pad.default, torch.ops.padkern.unpad.default)
if TRITON_MISSING is None:
    from ..triton.padding import pad_triton, unpad_triton

    _TRITON = (pad_triton, unpad_triton)
else:
    _TRITON = None


def _pad_fake(values, offsets, total_length, padding_value, batch_first):
    batch = offsets.shape[0] - 1
    shape = (batch, total_length) if batch_first else (total_length, batch)
    return values.new_empty(shape + (values.shape[1],))


def _unpad_fake(padded, offsets, total_tokens, batch_first):
    return padded.new_empty((total_tokens, padded.shape[2]))


def feature_contiguous(tensor: torch.Tensor) -> torch.Tensor:
    """Kernels need unit stride along the last (feature) dimension; only then is a copy made
    (a zero-element tensor gets row-major strides, which costs nothing)."""
    tensor = _validate.restrided_if_empty(tensor)
    return tensor if tensor.shape[-1] <= 1 or tensor.stride(-1) == 1 else tensor.contiguous()


def _register_adjoint_pair(pad_op, unpad_op):
    def pad_setup(ctx, inputs, output):
        values, offsets, _, _, batch_first = inputs
        ctx.save_for_backward(offsets)
        ctx.total_tokens, ctx.batch_first = values.shape[0], batch_first

    def pad_backward(ctx, grad):
        (offsets,) = ctx.saved_tensors
        return unpad_op(feature_contiguous(grad), offsets, ctx.total_tokens, ctx.batch_first), None, None, None, None

    def unpad_setup(ctx, inputs, output):
        padded, offsets, _, batch_first = inputs
        ctx.save_for_backward(offsets)
        ctx.padded_length, ctx.batch_first = padded.shape[1 if batch_first else 0], batch_first

    def unpad_backward(ctx, grad):
        (offsets,) = ctx.saved_tensors
        return pad_op(feature_contiguous(grad), offsets, ctx.padded_length, 0.0, ctx.batch_first), None, None, None

    torch.library.register_autograd(pad_op, pad_backward, setup_context=pad_setup)
    torch.library.register_autograd(unpad_op, unpad_backward, setup_context=unpad_setup)


register_family(_NATIVE, _TRITON, (_pad_fake, _unpad_fake), _register_adjoint_pair)


def _ops_for(backend: str):
    if backend == "reference":
        return reference.pad, reference.unpad
    if backend == "triton":
        return _TRITON
    return _NATIVE


def pad(values, offsets, total_length=None, padding_value=0.0, batch_first=True, *, backend=None):
    """Ragged ``values [L, *F]`` -> padded ``[B, T, *F]`` (or ``[T, B, *F]``).

    ``offsets`` follows the offsets contract (padkern/_validate.py). ``total_length``
    (T) defaults to the longest sequence, which reads the offsets on the host; pass
    it explicitly to avoid that under torch.compile or on a GPU. Positions past a
    sequence's length hold ``padding_value``.
    """
    _validate.check_tensor(values, "values")
    if values.dim() < 1:
        raise ValueError(f"values must have a token dimension, got a {values.dim()}-D tensor")
    offsets = _validate.check_offsets(offsets, values.shape[0], values.device)
    lengths = offsets[1:] - offsets[:-1]
    if total_length is None:
        total_length = int(lengths.max()) if lengths.numel() > 0 else 0
    elif not isinstance(total_length, torch.SymInt):
        try:
            total_length = operator.index(total_length)
        except TypeError:
            raise TypeError(f"total_length must be an int, got {type(total_length).__name__}") from None
    if _validate.contents_checked(offsets) and lengths.numel() > 0 and int(lengths.max()) > total_length:
        raise ValueError(f"total_length must be at least the longest sequence {int(lengths.max())}, got {total_length}")
    if total_length < 0:
        raise ValueError(f"total_length must be non-negative, got {total_length}")
    features = values.shape[1:]
    pad_op, _ = _ops_for(_backend.resolve(backend, values.device, "pad", values.dtype))
    flat = feature_contiguous(values.reshape(values.shape[0], math.prod(features)))
    padded = pad_op(flat, offsets, total_length, float(padding_value), batch_first)
    return padded.view(padded.shape[:2] + features)


def unpad(padded, offsets, batch_first=True, *, total_tokens=None, backend=None):
    """Padded ``[B, T, *F]`` (or ``[T, B, *F]``) -> ragged ``values [L, *F]``.

    Keeps the first ``offsets[b+1] - offsets[b]`` steps of each sequence, in batch
    order. ``total_tokens`` (L) defaults to ``offsets[-1]`` (read on the host).
    """
    _validate.check_tensor(padded, "padded")
    if padded.dim() < 2:
        raise ValueError(f"padded must have batch and time dimensions, got a {padded.dim()}-D tensor")
    batch, padded_length = (padded.shape[0], padded.shape[1]) if batch_first else (padded.shape[1], padded.shape[0])
    _validate.check_tensor(offsets, "offsets")
    if offsets.dim() == 1 and offsets.numel() != batch + 1:
        raise ValueError(f"offsets must have B+1 = {batch + 1} entries for a padded batch of {batch}, got {offsets.numel()}")
    if total_tokens is None:
        total_tokens = int(offsets[-1]) if offsets.dim() == 1 and offsets.numel() > 0 else 0
    offsets = _validate.check_offsets(offsets, total_tokens, padded.device)
    if _validate.contents_checked(offsets) and batch > 0:
        longest = int((offsets[1:] - offsets[:-1]).max())
        if longest > padded_length:
            raise ValueError(f"lengths must not exceed the padded length {padded_length}, got {longest}")
    features = padded.shape[2:]
    _, unpad_op = _ops_for(_backend.resolve(backend, padded.device, "unpad", padded.dtype))
    flat = feature_contiguous(padded.reshape(padded.shape[0], padded.shape[1], math.prod(features)))
    return unpad_op(flat, offsets, total_tokens, batch_first).view((total_tokens,) + features)
