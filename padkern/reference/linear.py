"""Reference masked/ragged matmuls and segment reductions, in plain PyTorch."""
import torch
import torch.nn.functional as F

from .padding import longest_length, offsets_from_lengths, pad, token_coordinates, token_count, unpad

ACTIVATIONS = {None: lambda z: z, "relu": F.relu, "gelu": F.gelu, "silu": F.silu}


def ragged_linear(values, weight, bias=None, activation=None):
    """values [L, K] @ weight [N, K]^T + bias, then the activation: every row is real."""
    return ACTIVATIONS[activation](F.linear(values, weight, bias))


def masked_linear(x, lengths, weight, bias=None, activation=None):
    """x [B, T, K] -> [B, T, N]; rows t >= lengths[b] are exactly zero.

    Only the real rows are gathered and multiplied, so whatever the padding holds (NaN
    included) reaches neither the output nor any gradient, and x's gradient is exactly
    zero at padding: the promises every backend keeps.
    """
    offsets = offsets_from_lengths(lengths.to(x.device))
    total_tokens = token_count(offsets)
    real = ACTIVATIONS[activation](F.linear(unpad(x, offsets, total_tokens, True), weight, bias))
    return pad(real, offsets, x.shape[1], 0.0, True)


def _bmm_rows(offsets) -> int:
    """Rows per sequence of the padded operands below: the longest sequence, and at least 2.
    Under torch.compile T is an unbacked size, and Inductor's bmm lowering asks whether T == 1
    (a matrix-vector product), which it cannot decide: at least 2 (a row or two of zeros per
    sequence in the worst case) answers it for every B and L."""
    rows = max(longest_length(offsets), 2)
    if torch.compiler.is_compiling():
        torch._check(rows >= 2)
    return rows


def ragged_bmm(values, offsets, weights):
    """values [L, K], weights [B, K, N] -> [L, N]: each sequence times its own matrix.

    Sequence b's rows, zero-padded to the longest length T (at least 2), times weights[b]: one
    ``torch.bmm`` of [B, T, K] by [B, K, N], then the real rows. Each padded row is a row
    of its own in the product, so padding reaches no real output and no gradient. No
    Python loop over sequences: under torch.compile the graph is the same for any B (a
    loop would slice one sequence per unbacked offset, and compile time would grow with
    B). Memory O(B x T x (K + N)).
    """
    rows = _bmm_rows(offsets)
    product = torch.bmm(pad(values, offsets, rows, 0.0, True), weights)
    return unpad(product, offsets, values.shape[0], True)


def ragged_outer_bmm(x, y, offsets):
    """x [L, M], y [L, N] -> [B, M, N]: sum over each sequence's rows of x_t^T y_t (an empty
    sequence gives zeros). Both zero-padded to [B, T, *], then one ``torch.bmm``: padded
    rows pair with padded rows only and add exact zeros."""
    rows = _bmm_rows(offsets)
    return torch.bmm(pad(x, offsets, rows, 0.0, True).transpose(1, 2), pad(y, offsets, rows, 0.0, True))


def segment_sum(values, offsets):
    seq, _ = token_coordinates(offsets, values.shape[0])
    return values.new_zeros((offsets.shape[0] - 1,) + values.shape[1:]).index_add(0, seq, values)


def segment_mean(values, offsets):
    lengths = (offsets[1:] - offsets[:-1]).clamp(min=1).to(values.dtype)
    return segment_sum(values, offsets) / lengths.view((-1,) + (1,) * (values.dim() - 1))


def segment_max(values, offsets):
    """Per-sequence maximum of values [L, D], as ``torch.amax``: NaN propagates, an all
    ``-inf`` sequence gives ``-inf``. An empty sequence gives 0. Differentiable, with the
    whole gradient on the first row holding the maximum (the first NaN where there is one).
    """
    total, batch = values.shape[0], offsets.shape[0] - 1
    seq, _ = token_coordinates(offsets, total)
    index = seq[:, None].expand_as(values)
    with torch.no_grad():
        peak = values.new_full((batch,) + values.shape[1:], float("-inf"))
        peak = peak.scatter_reduce(0, index, values, reduce="amax", include_self=True)
        has_nan = torch.zeros_like(peak, dtype=torch.bool).scatter_reduce(
            0, index, values.isnan(), reduce="amax", include_self=True)
        peak = torch.where(has_nan, torch.full_like(peak, float("nan")), peak)
        hit = torch.where(has_nan[seq], values.isnan(), values == peak[seq])
        rows = torch.arange(total, device=values.device)[:, None].expand_as(values)
        # Row L (a zero row appended below) stands for "no row": an empty sequence.
        first = torch.full_like(peak, total, dtype=torch.int64)
        first = first.scatter_reduce(0, index, torch.where(hit, rows, total), reduce="amin", include_self=True)
    with_zero_row = torch.cat([values, values.new_zeros((1,) + values.shape[1:])])
    return with_zero_row.gather(0, first)


def segment_softmax(values, offsets):
    """Softmax over each sequence's rows, per feature."""
    seq, _ = token_coordinates(offsets, values.shape[0])
    shifted = values - segment_max(values, offsets).detach()[seq]
    exp = shifted.exp()
    return exp / segment_sum(exp, offsets)[seq]
