"""Attention within each sequence of a ragged batch (FlashAttention-2's varlen scheme): native
ops ``padkern::ragged_attention`` and ``padkern::ragged_attention_backward`` (+ ``*_triton``
twins); registration, autograd and the public function here.

Shapes: q [L, Hq, D]; k, v [Lk, Hkv, D] with Hq a multiple of Hkv (grouped-query heads: query
head h reads key/value head h // (Hq / Hkv)); offsets [B+1] index q, kv_offsets [B+1] index k
and v (self-attention: the same offsets). No kernel stores a score matrix: forward keeps the
float32 log-sum-exp of each row, lse [L, Hq], and backward recomputes the scores from it.
"""
import importlib.util
from typing import Optional

import torch

from .. import _backend, _validate
from .._extension import TRITON_MISSING
from ..reference import attention as reference
from ._registration import register_family

_NATIVE = (torch.ops.padkern.ragged_attention.default, torch.ops.padkern.ragged_attention_backward.default)
if TRITON_MISSING is None and importlib.util.find_spec("padkern.triton.attention") is not None:
    from ..triton import attention as triton_attention

    _TRITON = (triton_attention.ragged_attention_triton, triton_attention.ragged_attention_backward_triton)
else:
    _TRITON = None


def _forward_fake(q, k, v, offsets, kv_offsets, causal, scale):
    return torch.empty_like(q), q.new_empty(q.shape[:2], dtype=torch.float32)


def _backward_fake(grad_out, q, k, v, out, lse, offsets, kv_offsets, causal, scale):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _no_double_backward(ctx, *grads):
    raise RuntimeError("padkern's attention kernels do not support double backward; use backend='reference' "
                       "(pure PyTorch) for higher-order gradients")


def _register(forward_op, backward_op):
    def setup(ctx, inputs, output):
        q, k, v, offsets, kv_offsets, causal, scale = inputs
        out, lse = output
        ctx.save_for_backward(q, k, v, out, lse, offsets, kv_offsets)
        ctx.causal, ctx.scale = causal, scale
        ctx.mark_non_differentiable(lse)

    def backward(ctx, grad_out, _grad_lse):
        # lse is an output for backward's sake only (marked non-differentiable).
        q, k, v, out, lse, offsets, kv_offsets = ctx.saved_tensors
        grad_out = torch.zeros_like(out) if grad_out is None else _validate.dense(grad_out)
        grad_q, grad_k, grad_v = backward_op(grad_out, q, k, v, out, lse, offsets, kv_offsets, ctx.causal, ctx.scale)
        return grad_q, grad_k, grad_v, None, None, None, None

    torch.library.register_autograd(forward_op, backward, setup_context=setup)
    torch.library.register_autograd(backward_op, _no_double_backward)


register_family(_NATIVE, _TRITON, (_forward_fake, _backward_fake), _register)


def _check_heads(q, k, v):
    for name, tensor in (("q", q), ("k", k), ("v", v)):
        _validate.check_tensor(tensor, name)
        if tensor.dim() != 3:
            raise ValueError(f"{name} must be 3-D [tokens, heads, head_dim], got shape {tuple(tensor.shape)}")
    if not q.is_floating_point():
        raise TypeError(f"q must be floating point, got {q.dtype}")
    _validate.check_same_device_dtype(q, "q", k=k, v=v)
    if q.shape[2] < 1:
        raise ValueError(f"q's head_dim must be at least 1, got shape {tuple(q.shape)}")
    if tuple(k.shape) != tuple(v.shape):
        raise ValueError(f"k and v must have the same shape [Lk, Hkv, D], got {tuple(k.shape)} and {tuple(v.shape)}")
    if k.shape[2] != q.shape[2]:
        raise ValueError(f"k and v must have q's head_dim {q.shape[2]}, got shape {tuple(k.shape)}")
    if k.shape[1] < 1 or q.shape[1] % k.shape[1] != 0:
        raise ValueError(f"q's heads ({q.shape[1]}) must be a multiple of k's and v's heads ({k.shape[1]})")


# The GPU kernels (padkern's CUDA kernel, torch's flash kernel, the Triton kernels) keep tiles
# of rows of D elements in shared memory and registers, sized for D up to 256, and put the
# heads on their grid's y axis, which CUDA stops at 65535.
GPU_MAX_HEAD_DIM = 256
GPU_MAX_HEADS = 65535


def gpu_limits_backend(name: str, requested, device: torch.device, heads: int, head_dim: int) -> str:
    """``name`` unless a GPU kernel backend cannot take ``heads`` query heads of ``head_dim``:
    auto then runs the reference (torch's own ops, on the GPU too); an explicit choice is an
    error."""
    if device.type != "cuda" or name == "reference" or (head_dim <= GPU_MAX_HEAD_DIM and heads <= GPU_MAX_HEADS):
        return name
    if _backend.requested_name(requested) == "auto":
        return "reference"
    if head_dim > GPU_MAX_HEAD_DIM:
        raise ValueError(f"backend {name!r} takes head_dim up to {GPU_MAX_HEAD_DIM} on a GPU, got {head_dim}; "
                         f"backend='reference' takes any")
    raise ValueError(f"backend {name!r} takes up to {GPU_MAX_HEADS} query heads on a GPU, got {heads}; "
                     f"backend='reference' takes any")


def ragged_attention(q, k, v, offsets, *, kv_offsets=None, causal: bool = False, scale: Optional[float] = None,
                     backend: Optional[str] = None):
    """Scaled dot-product attention of each sequence with its own keys only -> [L, Hq, D].

    q [L, Hq, D], k and v [Lk, Hkv, D] (Hq a multiple of Hkv: grouped-query heads share k and
    v). ``kv_offsets=None``: self-attention, k and v are indexed by ``offsets`` (Lk = L);
    otherwise cross-attention, sequence i's keys are ``k[kv_offsets[i]:kv_offsets[i+1]]``.
    ``causal=True`` (self-attention only) lets query t see keys 0..t of its sequence; with
    ``kv_offsets`` it is an error, since a query's position in another sequence has no
    single meaning (mask by building the keys you want instead). ``scale`` defaults to
    1/sqrt(D). A query with no key (an empty key sequence) gives 0 and zero gradients.
    The offsets contract: padkern/_validate.py.
    """
    _check_heads(q, k, v)
    offsets = _validate.check_offsets(offsets, q.shape[0], q.device)
    if kv_offsets is None:
        if k.shape[0] != q.shape[0]:
            raise ValueError(f"self-attention (kv_offsets=None) needs k and v with q's {q.shape[0]} tokens, "
                             f"got {k.shape[0]}; pass kv_offsets for cross-attention")
        kv_offsets = offsets
    else:
        if causal:
            raise ValueError("causal=True needs self-attention (kv_offsets=None): causal masking of "
                             "cross-attention is not defined")
        kv_offsets = _validate.check_offsets(kv_offsets, k.shape[0], q.device, name="kv_offsets")
        if kv_offsets.shape[0] != offsets.shape[0]:
            raise ValueError(f"kv_offsets must have offsets' B+1 = {offsets.shape[0]} entries, "
                             f"got {kv_offsets.shape[0]}")
    scale = reference.default_scale(q.shape[2]) if scale is None else float(scale)
    q, k, v = _validate.dense(q), _validate.dense(k), _validate.dense(v)
    name = _backend.resolve(backend, q.device, "ragged_attention", q.dtype)
    name = gpu_limits_backend(name, backend, q.device, q.shape[1], q.shape[2])
    if name == "reference":
        return reference.ragged_attention(q, k, v, offsets, kv_offsets, bool(causal), scale)[0]
    if name == "triton" and _TRITON is None:
        raise _backend.BackendUnavailableError("backend 'triton' was requested but is unavailable: padkern's "
                                               "Triton attention kernels are not in this build")
    op = (_TRITON if name == "triton" else _NATIVE)[0]
    return op(q, k, v, offsets, kv_offsets, bool(causal), scale)[0]
