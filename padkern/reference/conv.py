"""Reference ragged 1-D convolution: each sequence alone through ``F.conv1d``, zero-padded
at its own edges. The specification the cpu, triton and cuda kernels are tested against."""
import torch
import torch.nn.functional as F


def padding_sides(kernel_size: int, dilation: int, left_pad: int):
    """(left, right) zeros around a sequence so the output keeps its length."""
    return left_pad, dilation * (kernel_size - 1) - left_pad


def ragged_conv1d(values, offsets, weight, bias, left_pad: int, dilation: int, groups: int):
    """values [L, C_in], weight [C_out, C_in / groups, k] -> [L, C_out]: per sequence,
    ``F.conv1d`` over that sequence alone with its own zero padding, concatenated. An empty
    sequence adds no rows. Differentiable to any order by autograd."""
    left, right = padding_sides(weight.shape[2], dilation, left_pad)
    bounds = offsets.tolist()
    pieces = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        if end == start:
            continue
        sequence = F.pad(values[start:end].t()[None], (left, right))
        pieces.append(F.conv1d(sequence, weight, bias, dilation=dilation, groups=groups)[0].t())
    if not pieces:
        # No tokens: an empty result that is still in the graph of every input.
        empty = values[:0] @ weight.new_zeros(values.shape[1], weight.shape[0]) + weight.sum() * 0
        return empty if bias is None else empty + bias * 0
    return torch.cat(pieces)
