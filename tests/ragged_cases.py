"""Ragged shapes every op is tested on (TESTING.md's fixed edge cases), and helpers."""
import contextlib

import torch

EDGE_LENGTHS = {
    "mixed_unsorted": [3, 0, 6, 1, 4],
    "no_tokens_single": [0],
    "all_empty": [0, 0, 0],
    "first_empty": [0, 2, 3],
    "last_empty": [2, 3, 0],
    "every_fifth_empty": [0 if i % 5 == 0 else 1 + (i * 7) % 9 for i in range(12)],
    "all_length_one": [1] * 7,
    "single_sequence": [9],
    "one_long": [2, 1, 40, 3],
    "not_tile_multiples": [15, 113, 127],
}


def offsets_of(lengths, device="cpu", dtype=torch.int64):
    offsets = [0]
    for n in lengths:
        offsets.append(offsets[-1] + n)
    return torch.tensor(offsets, dtype=dtype, device=device)


def random_ragged(lengths, features, dtype=torch.float32, device="cpu", seed=0):
    generator = torch.Generator().manual_seed(seed)
    total = sum(lengths)
    values = torch.randn((total,) + tuple(features), generator=generator, dtype=torch.float64).to(dtype).to(device)
    return values, offsets_of(lengths, device)


def split(values, offsets):
    """The per-sequence slices: the reference that needs no padkern code."""
    bounds = offsets.tolist()
    return [values[bounds[i]:bounds[i + 1]] for i in range(len(bounds) - 1)]


@contextlib.contextmanager
def nan_filled_allocations():
    """Fresh allocations come filled with NaN (deterministic mode's fill), so an output
    element a kernel never writes stays NaN."""
    previous = torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.utils.deterministic.fill_uninitialized_memory = previous[1]
