"""Reference masked/ragged matmuls and segment reductions, in plain PyTorch."""
import torch
import torch.nn.functional as F

from .padding import token_coordinates

ACTIVATIONS = {None: lambda z: z, "relu": F.relu, "gelu": F.gelu, "silu": F.silu}


def ragged_linear(values, weight, bias=None, activation=None):
    """values [L, K] @ weight [N, K]^T + bias, then the activation: every row is real."""
    return ACTIVATIONS[activation](F.linear(values, weight, bias))


def masked_linear(x, lengths, weight, bias=None, activation=None):
    """x [B, T, K] -> [B, T, N]; rows t >= lengths[b] are exactly zero."""
    mask = torch.arange(x.shape[1], device=x.device)[None, :] < lengths.to(x.device)[:, None]
    out = ACTIVATIONS[activation](F.linear(x, weight, bias))
    # where, not a multiply: whatever the padding holds (NaN included) cannot leak.
    return torch.where(mask[..., None], out, torch.zeros_like(out))


def ragged_bmm(values, offsets, weights):
    """values [L, K], weights [B, K, N] -> [L, N]: each sequence times its own matrix."""
    seq, _ = token_coordinates(offsets, values.shape[0])
    return torch.bmm(values[:, None, :], weights[seq])[:, 0]


def ragged_outer_bmm(x, y, offsets):
    """x [L, M], y [L, N] -> [B, M, N]: sum over each sequence's rows of x_t^T y_t."""
    seq, _ = token_coordinates(offsets, x.shape[0])
    batch = offsets.shape[0] - 1
    outer = x[:, :, None] * y[:, None, :]
    return outer.new_zeros((batch,) + outer.shape[1:]).index_add(0, seq, outer)


def segment_sum(values, offsets):
    seq, _ = token_coordinates(offsets, values.shape[0])
    return values.new_zeros((offsets.shape[0] - 1,) + values.shape[1:]).index_add(0, seq, values)


def segment_mean(values, offsets):
    lengths = (offsets[1:] - offsets[:-1]).clamp(min=1).to(values.dtype)
    return segment_sum(values, offsets) / lengths.view((-1,) + (1,) * (values.dim() - 1))


def segment_max(values, offsets):
    """Per-sequence maximum; an empty sequence gives 0."""
    seq, _ = token_coordinates(offsets, values.shape[0])
    batch = offsets.shape[0] - 1
    index = seq.view((-1,) + (1,) * (values.dim() - 1)).expand_as(values)
    out = values.new_full((batch,) + values.shape[1:], float("-inf"))
    out = out.scatter_reduce(0, index, values, reduce="amax", include_self=True)
    return torch.where(torch.isinf(out) & (out < 0), torch.zeros_like(out), out)


def segment_softmax(values, offsets):
    """Softmax over each sequence's rows, per feature."""
    seq, _ = token_coordinates(offsets, values.shape[0])
    shifted = values - segment_max(values, offsets).detach()[seq]
    exp = shifted.exp()
    return exp / segment_sum(exp, offsets)[seq]
