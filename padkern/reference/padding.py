"""Reference pad/unpad: index arithmetic in plain PyTorch, differentiable by autograd."""
import torch


def offsets_from_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """int64 offsets [B+1] = [0, cumsum(lengths)]."""
    offsets = lengths.new_zeros(lengths.numel() + 1, dtype=torch.int64)
    torch.cumsum(lengths, 0, out=offsets[1:])
    return offsets


def token_count(offsets: torch.Tensor) -> int:
    """L = offsets[-1] as a Python int (a host read); under torch.compile an unbacked size,
    declared non-negative so that code branching on it (a backward's `total >= 0`) does not
    stop the trace on a data-dependent guard."""
    if not torch.compiler.is_compiling():
        return int(offsets[-1])
    total = offsets[-1].item()
    torch._check(total >= 0)
    return total


def longest_length(offsets: torch.Tensor) -> int:
    """T = the longest sequence's length (0 for B = 0) as a Python int (a host read); under
    torch.compile one unbacked size, whatever B is."""
    lengths = offsets[1:] - offsets[:-1]
    longest = torch.cat([lengths, lengths.new_zeros(1)]).max()  # the zero makes B = 0 need no branch
    return longest.item() if torch.compiler.is_compiling() else int(longest)


def token_coordinates(offsets: torch.Tensor, total_tokens: int):
    """(sequence index, position in sequence) of each of the L tokens, int64 [L] each."""
    lengths = offsets[1:] - offsets[:-1]
    batch = lengths.numel()
    seq = torch.repeat_interleave(torch.arange(batch, device=offsets.device), lengths, output_size=total_tokens)
    pos = torch.arange(total_tokens, device=offsets.device) - offsets[seq]
    return seq, pos


def pad(values, offsets, total_length: int, padding_value: float, batch_first: bool):
    """values [L, D] -> [B, T, D] (batch_first) or [T, B, D]; positions past each length hold padding_value."""
    batch = offsets.numel() - 1
    seq, pos = token_coordinates(offsets, values.shape[0])
    shape = (batch, total_length) if batch_first else (total_length, batch)
    out = values.new_full(shape + tuple(values.shape[1:]), padding_value)
    index = (seq, pos) if batch_first else (pos, seq)
    return out.index_put(index, values)


def unpad(padded, offsets, total_tokens: int, batch_first: bool):
    """[B, T, D] (batch_first) or [T, B, D] -> values [L, D], the first lengths[b] rows of each sequence."""
    seq, pos = token_coordinates(offsets, total_tokens)
    return padded[seq, pos] if batch_first else padded[pos, seq]
