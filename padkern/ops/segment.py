"""Segment reductions over each sequence's rows: sum, mean, max (-> [B, D]) and softmax
(-> [L, D]). Empty sequences reduce to 0. Native ops ``padkern::segment_reduce`` and
``padkern::segment_softmax`` (+ ``*_triton`` twins); registration and autograd here."""
import math
from typing import Optional

import torch

from .. import _backend, _validate
from .._extension import TRITON_MISSING
from ..reference import linear as reference
from ..reference.padding import token_coordinates
from ._registration import register_family

MODES = {"sum": 0, "mean": 1, "max": 2}

_NATIVE = (torch.ops.padkern.segment_reduce.default, torch.ops.padkern.segment_softmax.default)
if TRITON_MISSING is None:
    from ..triton import segment as triton_segment

    _TRITON = (triton_segment.segment_reduce_triton, triton_segment.segment_softmax_triton)
else:
    _TRITON = None


def _reduce_fake(values, offsets, mode):
    batch = offsets.shape[0] - 1
    argmax_rows = batch if mode == MODES["max"] else 0
    return values.new_empty((batch, values.shape[1])), values.new_empty((argmax_rows, values.shape[1]), dtype=torch.int64)


def _softmax_fake(values, offsets):
    return torch.empty_like(values)


def _register(reduce_op, softmax_op):
    def reduce_setup(ctx, inputs, output):
        values, offsets, mode = inputs
        ctx.save_for_backward(offsets, output[1])
        ctx.mode, ctx.shape = mode, values.shape

    def reduce_backward(ctx, grad, _grad_argmax):
        offsets, argmax = ctx.saved_tensors
        total = ctx.shape[0]
        if ctx.mode == MODES["max"]:
            # All of a feature's gradient goes to the row that held its maximum. An empty
            # sequence (argmax -1) sends its gradient to a spare row L, dropped after: no
            # index exists to clamp to when L = 0.
            rows = torch.where(argmax >= 0, argmax, total)
            spare = grad.new_zeros((total + 1,) + tuple(ctx.shape[1:]))
            return spare.scatter_add(0, rows, grad)[:total], None, None
        seq, _ = token_coordinates(offsets, total)
        grad_rows = grad[seq]
        if ctx.mode == MODES["mean"]:
            lengths = (offsets[1:] - offsets[:-1]).to(grad.dtype)
            grad_rows = grad_rows / lengths[seq][:, None]
        return grad_rows, None, None

    def softmax_setup(ctx, inputs, output):
        ctx.save_for_backward(inputs[1], output)

    def softmax_backward(ctx, grad):
        offsets, y = ctx.saved_tensors
        seq, _ = token_coordinates(offsets, y.shape[0])
        # grad arrives in any layout; the reduction kernels read row-major values.
        weighted = reduce_op(_validate.dense(grad * y), offsets, MODES["sum"])[0]
        return y * (grad - weighted[seq]), None

    torch.library.register_autograd(reduce_op, reduce_backward, setup_context=reduce_setup)
    torch.library.register_autograd(softmax_op, softmax_backward, setup_context=softmax_setup)


register_family(_NATIVE, _TRITON, (_reduce_fake, _softmax_fake), _register)


def _prepare(values, offsets):
    _validate.check_tensor(values, "values")
    if values.dim() < 1:
        raise ValueError("values must have a token dimension")
    if not values.is_floating_point():
        raise TypeError(f"values must be floating point, got {values.dtype}")
    offsets = _validate.check_offsets(offsets, values.shape[0], values.device)
    flat = values.reshape(values.shape[0], math.prod(values.shape[1:]))
    return _validate.dense(flat), offsets


def _reduce(values, offsets, mode: str, backend):
    flat, offsets = _prepare(values, offsets)
    features = values.shape[1:]
    name = _backend.resolve(backend, values.device, f"segment_{mode}", values.dtype)
    if name == "reference":
        out = getattr(reference, f"segment_{mode}")(flat, offsets)
    else:
        out = (_TRITON if name == "triton" else _NATIVE)[0](flat, offsets, MODES[mode])[0]
    return out.reshape((offsets.shape[0] - 1,) + features)


def segment_sum(values, offsets, *, backend: Optional[str] = None):
    """values [L, *F] -> [B, *F]: each sequence's rows summed (0 for an empty sequence)."""
    return _reduce(values, offsets, "sum", backend)


def segment_mean(values, offsets, *, backend: Optional[str] = None):
    """values [L, *F] -> [B, *F]: each sequence's mean row (0 for an empty sequence)."""
    return _reduce(values, offsets, "mean", backend)


def segment_max(values, offsets, *, backend: Optional[str] = None):
    """values [L, *F] -> [B, *F]: each sequence's elementwise maximum, as ``torch.amax``: NaN
    propagates and an all ``-inf`` sequence gives ``-inf``; an empty sequence gives 0. The
    gradient goes to the first row holding the maximum (the first NaN where there is one)."""
    return _reduce(values, offsets, "max", backend)


def segment_softmax(values, offsets, *, backend: Optional[str] = None):
    """values [L, *F] -> [L, *F]: softmax over each sequence's rows, per feature."""
    flat, offsets = _prepare(values, offsets)
    name = _backend.resolve(backend, values.device, "segment_softmax", values.dtype)
    if name == "reference":
        out = reference.segment_softmax(flat, offsets)
    else:
        out = (_TRITON if name == "triton" else _NATIVE)[1](flat, offsets)
    return out.reshape(values.shape)
