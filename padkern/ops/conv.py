"""Ragged 1-D convolution: a Conv1d over each sequence on its own, zero-padded at that
sequence's own edges, never reading a neighbour's tokens. Native ops
``padkern::ragged_conv1d`` and ``padkern::ragged_conv1d_backward`` (C++ on CPU, CUDA on
GPU; ``*_triton`` twins); registration, fake functions and autograd here. The backward
op is itself differentiable (its derivatives are the forward and backward ops again),
so double backward works on every backend.
"""
from typing import Optional, Union

import torch

from .. import _backend, _validate
from .._extension import TRITON_MISSING
from ..reference import conv as reference
from ._registration import register_family

PADDINGS = ("same", "causal")

_NATIVE = (torch.ops.padkern.ragged_conv1d.default, torch.ops.padkern.ragged_conv1d_backward.default)
if TRITON_MISSING is None:
    from ..triton import conv as triton_conv

    _TRITON = (triton_conv.ragged_conv1d_triton, triton_conv.ragged_conv1d_backward_triton)
else:
    _TRITON = None


def _fake(values, offsets, weight, bias, left_pad, dilation, groups):
    return values.new_empty((values.shape[0], weight.shape[0]))


def _backward_fake(grad_output, values, offsets, weight, left_pad, dilation, groups, output_mask):
    return (values.new_empty(values.shape) if output_mask[0] else values.new_empty((0,)),
            weight.new_empty(weight.shape) if output_mask[1] else weight.new_empty((0,)),
            weight.new_empty((weight.shape[0],)) if output_mask[2] else weight.new_empty((0,)))


def _register(forward_op, backward_op):
    def setup(ctx, inputs, output):
        values, offsets, weight, bias, left_pad, dilation, groups = inputs
        ctx.save_for_backward(values, offsets, weight)
        ctx.args = (left_pad, dilation, groups)
        ctx.has_bias = bias is not None

    def backward(ctx, grad):
        values, offsets, weight = ctx.saved_tensors
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[2], ctx.has_bias and ctx.needs_input_grad[3]]
        grad_values, grad_weight, grad_bias = backward_op(_validate.dense(grad), values, offsets, weight, *ctx.args,
                                                          mask)
        return (grad_values if mask[0] else None, None, grad_weight if mask[1] else None,
                grad_bias if mask[2] else None, None, None, None)

    def backward_setup(ctx, inputs, output):
        grad_output, values, offsets, weight, left_pad, dilation, groups, output_mask = inputs
        ctx.save_for_backward(grad_output, values, offsets, weight)
        ctx.args, ctx.mask = (left_pad, dilation, groups), output_mask

    def double_backward(ctx, grad_grad_values, grad_grad_weight, grad_grad_bias):
        # grad_values = B_x(grad_output, weight), grad_weight = B_w(grad_output, values) and
        # grad_bias = sum_t grad_output are each linear in their two inputs; their
        # derivatives are the forward convolution (B_x's adjoint in grad_output) and the
        # backward op's two halves again.
        grad_output, values, offsets, weight = ctx.saved_tensors
        use = [ctx.mask[i] and g is not None and g.numel() > 0
               for i, g in enumerate((grad_grad_values, grad_grad_weight, grad_grad_bias))]
        out_grad = values_grad = weight_grad = None
        terms = []
        if use[0]:
            u = _validate.dense(grad_grad_values)
            terms.append(forward_op(u, offsets, weight, None, *ctx.args))
            weight_grad = backward_op(grad_output, u, offsets, weight, *ctx.args, [False, True, False])[1]
        if use[1]:
            v = _validate.dense(grad_grad_weight)
            terms.append(forward_op(values, offsets, v, None, *ctx.args))
            values_grad = backward_op(grad_output, values, offsets, v, *ctx.args, [True, False, False])[0]
        if use[2]:
            terms.append(grad_grad_bias.expand_as(grad_output))
        if terms:
            out_grad = sum(terms[1:], terms[0])
        return out_grad, values_grad, None, weight_grad, None, None, None, None

    torch.library.register_autograd(forward_op, backward, setup_context=setup)
    torch.library.register_autograd(backward_op, double_backward, setup_context=backward_setup)


register_family(_NATIVE, _TRITON, (_fake, _backward_fake), _register)


def left_padding(padding: Union[str, int], kernel_size: int, dilation: int) -> int:
    """Zeros before each sequence; the output keeps the input's length, so the right side
    gets ``dilation * (kernel_size - 1)`` minus this.

    ``"same"`` is ``F.conv1d(padding="same")``: the extra zero of an even span goes right.
    ``"causal"`` puts all of them on the left. An int ``p`` is ``F.conv1d(padding=p)``, which
    keeps the length only when ``2 * p == dilation * (kernel_size - 1)``; any other ``p``
    would change each sequence's length, which a ragged output under the same offsets cannot
    hold, so it is refused.
    """
    total = dilation * (kernel_size - 1)
    if isinstance(padding, str):
        if padding == "same":
            return total // 2
        if padding == "causal":
            return total
        raise ValueError(f"padding must be 'same', 'causal' or an int, got {padding!r}")
    if isinstance(padding, int) and not isinstance(padding, bool):
        if 2 * padding != total:
            raise ValueError(
                f"padding={padding} changes each sequence's length (it keeps it only when 2 * padding == "
                f"dilation * (kernel_size - 1) = {total}); use padding='same' or 'causal'")
        return padding
    raise TypeError(f"padding must be 'same', 'causal' or an int, got {type(padding).__name__}")


def _positive_int(value, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _prepare(values, offsets, weight, bias, padding, dilation, groups):
    _validate.check_token_rows(values, "values", "[L, C_in]")
    _validate.check_tensor(weight, "weight")
    offsets = _validate.check_offsets(offsets, values.shape[0], values.device)
    _validate.check_same_device_dtype(values, "values", weight=weight, bias=bias)
    dilation, groups = _positive_int(dilation, "dilation"), _positive_int(groups, "groups")
    if weight.dim() != 3 or weight.shape[2] < 1:
        raise ValueError(f"weight must be [C_out, C_in / groups, kernel_size] with kernel_size >= 1, "
                         f"got shape {tuple(weight.shape)}")
    channels_in, channels_out = values.shape[1], weight.shape[0]
    if channels_in % groups or channels_out % groups:
        raise ValueError(f"groups={groups} must divide both C_in={channels_in} and C_out={channels_out}")
    if weight.shape[1] * groups != channels_in:
        raise ValueError(f"weight must be [C_out, C_in / groups = {channels_in // groups}, kernel_size] for "
                         f"C_in={channels_in} and groups={groups}, got shape {tuple(weight.shape)}")
    if bias is not None:
        _validate.check_shape(bias, (channels_out,), "bias")
    left_pad = left_padding(padding, weight.shape[2], dilation)
    bias = None if bias is None else _validate.dense(bias)
    return _validate.dense(values), offsets, _validate.dense(weight), bias, left_pad, dilation, groups


def ragged_conv1d(values, offsets, weight, bias=None, *, padding: Union[str, int] = "same", dilation: int = 1,
                  groups: int = 1, backend: Optional[str] = None):
    """values [L, C_in] -> [L, C_out] under the same offsets: ``F.conv1d`` applied to each
    sequence alone, zero-padded at its own edges (no token ever reads a neighbour's).

    weight [C_out, C_in / groups, kernel_size] and bias [C_out] as ``torch.nn.Conv1d``'s.
    ``padding``: ``"same"`` (as ``F.conv1d(padding="same")``; an even span's extra zero on the
    right), ``"causal"`` (``dilation * (kernel_size - 1)`` zeros on the left only, as causal
    Mamba-style convolutions), or an int equal to ``dilation * (kernel_size - 1) / 2`` (see
    :func:`left_padding`). Stride is 1: the output keeps every sequence's length.
    ``groups == C_in == C_out`` (depthwise) runs its own pass over the tokens. ``backend``:
    per call, else ``padkern.use_backend``'s, else auto.
    """
    values, offsets, weight, bias, left_pad, dilation, groups = _prepare(values, offsets, weight, bias, padding,
                                                                         dilation, groups)
    name = _backend.resolve(backend, values.device, "ragged_conv1d", values.dtype)
    if name == "reference":
        return reference.ragged_conv1d(values, offsets, weight, bias, left_pad, dilation, groups)
    op = (_TRITON if name == "triton" else _NATIVE)[0]
    return op(values, offsets, weight, bias, left_pad, dilation, groups)
