"""Masked and ragged matmuls: a GEMM over each sequence's real rows only.

Native op ``padkern::grouped_linear`` (C++ on CPU, CUDA on GPU; ``*_triton`` twin)
covers ``masked_linear`` (padded input, shared weight), ``ragged_linear`` (ragged
input, shared weight) and ``ragged_bmm`` (ragged input, one weight per sequence);
``padkern::ragged_outer_bmm`` is the per-sequence ``x_b^T @ y_b`` (ragged_bmm's weight
gradient). Fake functions, autograd and the public functions live here.
"""
from typing import Optional

import torch

from .. import _backend, _validate
from .._extension import TRITON_MISSING
from ..reference import linear as reference
from ._registration import needs_grad, register_family
from ._weight_gradient import weight_gradient
from . import padding
from ..reference.padding import offsets_from_lengths, token_count, unpad as reference_unpad

ACTIVATIONS = {None: 0, "relu": 1, "gelu": 2, "silu": 3}

_NATIVE = (torch.ops.padkern.grouped_linear.default, torch.ops.padkern.ragged_outer_bmm.default)
if TRITON_MISSING is None:
    from ..triton import linear as triton_linear

    _TRITON = (triton_linear.grouped_linear_triton, triton_linear.ragged_outer_bmm_triton)
else:
    _TRITON = None


def _grouped_linear_fake(input, offsets, weight, bias, activation, save_preactivation, total_tokens):
    features = weight.shape[0] if weight.dim() == 2 else weight.shape[2]
    out = input.new_empty(input.shape[:-1] + (features,))
    save = save_preactivation and activation != 0
    return out, (torch.empty_like(out) if save else input.new_empty((0,)))


def _ragged_outer_bmm_fake(x, y, offsets):
    return x.new_empty((offsets.shape[0] - 1, x.shape[1], y.shape[1]))


def activation_backward(grad, preactivation, activation: int):
    """d activation(z) / dz * grad, differentiable again. relu and gelu use torch's own fused
    backward kernels (gelu spelled out in element-wise ops made ragged_linear + gelu
    forward+backward 1.6x its floor on the CPU; fused, 1.25x); silu's has no derivative in
    torch, so it stays in element-wise ops."""
    if activation == 0:
        return grad
    if activation == 1:
        # torch.relu's rule: zero where z <= 0, the gradient elsewhere (NaN included).
        return torch.ops.aten.threshold_backward(grad, preactivation, 0)
    if activation == 2:
        return torch.ops.aten.gelu_backward(grad, preactivation)
    sigmoid = torch.sigmoid(preactivation)
    return grad * sigmoid * (1.0 + preactivation * (1.0 - sigmoid))


def masked_rows(padded, offsets):
    """padded [B, T, D] -> [B*T, D] with every row past its sequence's length exactly zero."""
    lengths = offsets[1:] - offsets[:-1]
    real = torch.arange(padded.shape[1], device=padded.device)[None, :] < lengths[:, None]
    return torch.where(real[..., None], padded, torch.zeros_like(padded)).flatten(0, 1)


def _register(grouped_op, outer_op):
    family_unpad = (padding._NATIVE if grouped_op is _NATIVE[0] else padding._TRITON)[1]

    def gather_real_rows(padded, offsets, total_tokens):
        """[B, T, D] -> the real rows [L, D]: the same family's unpad (the native one needs
        native kernels for the tensor's device, as grouped_op does), which took half the time
        of torch's index kernel; that kernel for a gradient whose features repeat (stride 0,
        as from `.sum()`), which the unpad would first expand over all B T rows."""
        if padded.stride(-1) == 1:
            return family_unpad(padded, offsets, total_tokens, True)
        return reference_unpad(padded, offsets, total_tokens, True)

    def grouped_setup(ctx, inputs, output):
        input, offsets, weight, bias, activation, save_preactivation, total_tokens = inputs
        out, preactivation = output
        ctx.save_for_backward(input, offsets, weight, preactivation)
        ctx.activation, ctx.has_bias, ctx.total_tokens = activation, bias is not None, total_tokens
        ctx.saved_preactivation = save_preactivation and activation != 0

    def grouped_backward(ctx, grad_out, grad_preactivation):
        input, offsets, weight, preactivation = ctx.saved_tensors
        grad_z = activation_backward(grad_out, preactivation, ctx.activation)
        # The pre-activation is an output too (backward reads it): a gradient reaching it,
        # as in double backward, joins here.
        if grad_preactivation is not None and ctx.saved_preactivation:
            grad_z = grad_z + grad_preactivation
        padded = input.dim() == 3
        input_weight = weight.t() if weight.dim() == 2 else weight.transpose(1, 2)
        grad_input = grouped_op(grad_z, offsets, input_weight, None, 0, False, ctx.total_tokens)[0]
        # Weight and bias gradients from real rows only.
        if padded and ctx.total_tokens >= 0:
            real_grad, real_input = (gather_real_rows(t, offsets, ctx.total_tokens) for t in (grad_z, input))
        elif padded:
            # L unknown on the host (offsets on the GPU): mask the padded rows rather than
            # synchronise to learn L. `where`, not a multiply, so NaN in padding cannot leak.
            real_grad, real_input = (masked_rows(t, offsets) for t in (grad_z, input))
        else:
            real_grad, real_input = grad_z, input
        if weight.dim() == 2:
            grad_weight = weight_gradient(real_grad, real_input)
        else:
            grad_weight = outer_op(real_input, real_grad, offsets)
        grad_bias = real_grad.sum(0) if ctx.has_bias else None
        return grad_input, None, grad_weight, grad_bias, None, None, None

    def outer_setup(ctx, inputs, output):
        x, y, offsets = inputs
        ctx.save_for_backward(x, y, offsets)

    def outer_backward(ctx, grad):
        x, y, offsets = ctx.saved_tensors
        total = x.shape[0]
        # d/dx_b = y_b @ grad_b^T, d/dy_b = x_b @ grad_b: both per-sequence GEMMs.
        grad_x = grouped_op(y, offsets, grad.transpose(1, 2), None, 0, False, total)[0]
        grad_y = grouped_op(x, offsets, grad, None, 0, False, total)[0]
        return grad_x, grad_y, None

    torch.library.register_autograd(grouped_op, grouped_backward, setup_context=grouped_setup)
    torch.library.register_autograd(outer_op, outer_backward, setup_context=outer_setup)


register_family(_NATIVE, _TRITON, (_grouped_linear_fake, _ragged_outer_bmm_fake), _register)


def _ops(backend: str):
    return _TRITON if backend == "triton" else _NATIVE


def _dense_or_none(tensor):
    return None if tensor is None else _validate.dense(tensor)


def _check_activation(activation) -> int:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {list(ACTIVATIONS)}, got {activation!r}")
    return ACTIVATIONS[activation]


def _check_weight(weight, bias, reference_tensor, in_features, name="weight"):
    _validate.check_tensor(weight, name)
    _validate.check_same_device_dtype(reference_tensor, "x", **{name: weight, "bias": bias})
    if weight.dim() != 2 or weight.shape[1] != in_features:
        raise ValueError(f"{name} must be [out_features, {in_features}], got shape {tuple(weight.shape)}")
    if bias is not None:
        _validate.check_shape(bias, (weight.shape[0],), "bias")



def masked_linear(x, lengths, weight, bias=None, *, offsets=None, activation=None, batch_first=True,
                  backend: Optional[str] = None):
    """``F.linear`` on the real rows of a padded batch; padded rows of the output are exactly zero.

    x [B, T, K] (or [T, B, K]); the real rows are given by ``lengths [B]``, or by
    ``offsets=[B+1]`` (keyword only, with ``lengths=None``): never guessed from a size.
    weight [N, K], bias [N]. No multiply-accumulate is spent on padded rows and the input is
    never gathered. ``activation``: None, "relu", "gelu" or "silu", fused into the epilogue.

    No host synchronisation when ``lengths``/``offsets`` live on x's GPU (CUDA-graph safe):
    the token count L is then unknown on the host, and the weight gradient runs over the
    padded rows with padding masked out. CPU lengths (as ``pack_padded_sequence`` takes
    them) give L for free, and the weight gradient touches real rows only.
    """
    _validate.check_tensor(x, "x")
    if x.dim() != 3:
        raise ValueError(f"x must be [B, T, K] (or [T, B, K]), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be floating point, got {x.dtype}")
    act = _check_activation(activation)
    bx = x if batch_first else x.transpose(0, 1)
    batch, padded_length = bx.shape[0], bx.shape[1]
    _check_weight(weight, bias, x, x.shape[2])
    if (lengths is None) == (offsets is None):
        raise ValueError("masked_linear needs exactly one of lengths [B] (positional) or offsets=[B+1] (keyword)")
    if offsets is not None:
        _validate.check_tensor(offsets, "offsets")
        offsets = _validate.check_offsets(offsets, None, offsets.device)  # L is whatever offsets[-1] says
        if offsets.numel() != batch + 1:
            raise ValueError(f"offsets must have B+1 = {batch + 1} entries, got {offsets.numel()}")
        lengths = offsets[1:] - offsets[:-1]
    lengths = _validate.check_lengths(lengths, batch, padded_length)
    offsets = offsets_from_lengths(lengths)
    # L is read on the host only where that costs no device synchronisation.
    total_tokens = token_count(offsets) if offsets.device.type == "cpu" else -1
    offsets = offsets.to(x.device, non_blocking=True)
    name = _backend.resolve(backend, x.device, "masked_linear", x.dtype)
    # The kernels read x through its strides, whatever they are (no copy of a big padded
    # tensor); a zero-element x gets a real layout, which is free.
    bx = _validate.restrided_if_empty(bx)
    if name == "reference":
        out = reference.masked_linear(bx, lengths, weight, bias, activation)
    else:
        save = needs_grad(x, weight, bias)
        out = _ops(name)[0](bx, offsets, _validate.dense(weight), _dense_or_none(bias), act, save, total_tokens)[0]
    return out if batch_first else out.transpose(0, 1)


def ragged_linear(values, weight, bias=None, *, offsets=None, activation=None, backend: Optional[str] = None):
    """``F.linear`` (+ fused activation) on a :class:`Ragged` (returns a Ragged) or on
    ``values [L, K]`` with ``offsets`` (returns values ``[L, N]``)."""
    from ..ragged import Ragged  # padkern.ragged imports padkern.ops

    ragged = values if isinstance(values, Ragged) else None
    if ragged is not None:
        values, offsets = ragged.values, ragged.offsets
    _validate.check_tensor(values, "values")
    if values.dim() != 2:
        raise ValueError(f"values must be [L, K], got shape {tuple(values.shape)}")
    act = _check_activation(activation)
    _check_weight(weight, bias, values, values.shape[1])
    if offsets is None:
        offsets = torch.tensor([0, values.shape[0]], device=values.device)
    offsets = _validate.check_offsets(offsets, values.shape[0], values.device)
    name = _backend.resolve(backend, values.device, "ragged_linear", values.dtype)
    if name == "reference":
        out = reference.ragged_linear(values, weight, bias, activation)
    else:
        out = _ops(name)[0](values, offsets, weight, _dense_or_none(bias), act, needs_grad(values, weight, bias),
                            values.shape[0])[0]
    return Ragged(out, ragged.offsets) if ragged is not None else out


def ragged_bmm(values, offsets, weights, *, backend: Optional[str] = None):
    """Each sequence times its own matrix: values [L, K], weights [B, K, N] -> [L, N]."""
    _validate.check_tensor(values, "values")
    if values.dim() != 2:
        raise ValueError(f"values must be [L, K], got shape {tuple(values.shape)}")
    offsets = _validate.check_offsets(offsets, values.shape[0], values.device)
    _validate.check_tensor(weights, "weights")
    _validate.check_same_device_dtype(values, "values", weights=weights)
    batch = offsets.shape[0] - 1
    if weights.dim() != 3 or weights.shape[0] != batch or weights.shape[1] != values.shape[1]:
        raise ValueError(f"weights must be [B={batch}, K={values.shape[1]}, N], got shape {tuple(weights.shape)}")
    name = _backend.resolve(backend, values.device, "ragged_bmm", values.dtype)
    if name == "reference":
        return reference.ragged_bmm(values, offsets, weights)
    return _ops(name)[0](values, offsets, weights, None, 0, False, values.shape[0])[0]


def ragged_outer_bmm(x_values, y_values, offsets, *, backend: Optional[str] = None):
    """Per sequence ``x_b^T @ y_b``: x [L, M], y [L, N] -> [B, M, N] (zeros for an empty sequence)."""
    _validate.check_tensor(x_values, "x_values")
    _validate.check_tensor(y_values, "y_values")
    if x_values.dim() != 2 or y_values.dim() != 2 or x_values.shape[0] != y_values.shape[0]:
        raise ValueError(f"x_values and y_values must be [L, M] and [L, N] with the same L, got "
                         f"{tuple(x_values.shape)} and {tuple(y_values.shape)}")
    offsets = _validate.check_offsets(offsets, x_values.shape[0], x_values.device)
    _validate.check_same_device_dtype(x_values, "x_values", y_values=y_values)
    name = _backend.resolve(backend, x_values.device, "ragged_outer_bmm", x_values.dtype)
    if name == "reference":
        return reference.ragged_outer_bmm(x_values, y_values, offsets)
    return _ops(name)[1](x_values, y_values, offsets)
