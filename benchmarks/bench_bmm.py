"""ragged_bmm (each sequence times its own matrix) and ragged_outer_bmm (per-sequence
x^T y, ragged_bmm's weight gradient) against padding to a batch and calling torch.bmm,
and against a Python loop of torch.mm over the sequences."""
import torch

import padkern
from padkern import Ragged
from .bench_padding import random_lengths
from .harness import Report, backend_candidates, interleaved_medians, matmul_rate

# (batch, padded length, K, N, real fraction)
CASES_CPU = [(64, 256, 128, 128, 0.5), (256, 64, 64, 64, 0.5)]
CASES_GPU = [(256, 512, 256, 256, 0.5), (1024, 128, 128, 128, 0.5), (64, 2048, 512, 512, 0.25)]
QUICK_CASES = [(256, 512, 256, 256, 0.5)]


def run(device: torch.device, rounds: int, cases=None) -> Report:
    report = Report("ragged_bmm", device)
    rate = matmul_rate(device, torch.bfloat16 if device.type == "cuda" else torch.float32)
    generator = torch.Generator().manual_seed(0)
    for batch, padded_length, k, n, fraction in cases or (CASES_GPU if device.type == "cuda" else CASES_CPU):
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        dtype_name = str(dtype).replace("torch.", "")
        lengths = random_lengths(batch, padded_length, fraction, generator)
        x = torch.randn(batch, padded_length, k, device=device, dtype=dtype)
        ragged = Ragged.from_padded(x, lengths)
        weights = torch.randn(batch, k, n, device=device, dtype=dtype) / k ** 0.5
        other = torch.randn(ragged.values.shape[0], n, device=device, dtype=dtype)
        bounds = ragged.offsets.tolist()
        tokens = bounds[-1]
        case = f"B{batch} T{padded_length} K{k} N{n} {int(fraction * 100)}%"
        bmm = interleaved_medians({
            "pad + torch.bmm + unpad": lambda: Ragged.from_padded(
                torch.bmm(ragged.to_padded(padded_length), weights), lengths).values,
            "loop of torch.mm": lambda: torch.cat([ragged.values[bounds[b]:bounds[b + 1]] @ weights[b]
                                                   for b in range(batch)]),
            **backend_candidates("ragged_bmm", device, lambda b: lambda: padkern.ops.ragged_bmm(
                ragged.values, ragged.offsets, weights, backend=b)),
        }, device, rounds)
        report.add({"case": case, "dtype": dtype_name, "op": "ragged_bmm"}, bmm, "pad + torch.bmm + unpad",
                   2 * tokens * k * n / rate)
        other_padded_ragged = Ragged(other, ragged.offsets)
        outer = interleaved_medians({
            "pad + torch.bmm": lambda: torch.bmm(ragged.to_padded(padded_length).transpose(1, 2),
                                                 other_padded_ragged.to_padded(padded_length)),
            "loop of torch.mm": lambda: torch.stack([ragged.values[bounds[b]:bounds[b + 1]].t()
                                                     @ other[bounds[b]:bounds[b + 1]] for b in range(batch)]),
            **backend_candidates("ragged_outer_bmm", device, lambda b: lambda: padkern.ops.ragged_outer_bmm(
                ragged.values, other, ragged.offsets, backend=b)),
        }, device, rounds)
        report.add({"case": case, "dtype": dtype_name, "op": "ragged_outer_bmm"}, outer, "pad + torch.bmm",
                   2 * tokens * k * n / rate)
    return report
