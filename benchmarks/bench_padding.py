"""Ragged.from_padded / to_padded against pack_padded_sequence / pad_packed_sequence."""
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from padkern import Ragged
from .harness import Report, copy_bandwidth, interleaved_medians

CASES_CPU = [(64, 256, 256, 0.5), (256, 128, 64, 0.25), (16, 512, 512, 0.75)]
CASES_GPU = [(64, 256, 256, 0.5), (256, 512, 256, 0.25), (128, 1024, 1024, 0.75), (1024, 128, 64, 0.5)]


def random_lengths(batch: int, padded_length: int, real_fraction: float, generator) -> torch.Tensor:
    """Lengths uniform around the requested mean fraction, in unsorted order, one full-length."""
    spread = min(real_fraction, 1 - real_fraction)
    low, high = real_fraction - spread, real_fraction + spread
    fractions = low + (high - low) * torch.rand(batch, generator=generator)
    lengths = (fractions * padded_length).round().long().clamp(1, padded_length)
    lengths[batch // 2] = padded_length
    return lengths


QUICK_CASES = [(64, 256, 256, 0.5), (256, 512, 256, 0.25)]


def run(device: torch.device, rounds: int, cases=None) -> Report:
    report = Report("padding", device)
    bandwidth = copy_bandwidth(device)
    generator = torch.Generator().manual_seed(0)
    for batch, padded_length, features, real_fraction in cases or (CASES_GPU if device.type == "cuda" else CASES_CPU):
        x = torch.randn(batch, padded_length, features, device=device)
        lengths = random_lengths(batch, padded_length, real_fraction, generator)
        ragged = Ragged.from_padded(x, lengths)
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        real_bytes = ragged.values.numel() * 4
        case = f"B{batch} T{padded_length} F{features} {int(real_fraction * 100)}%"
        unpad = interleaved_medians({
            "pack_padded_sequence": lambda: pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False),
            "padkern from_padded": lambda: Ragged.from_padded(x, lengths),
        }, device, rounds)
        report.add({"case": case, "direction": "unpad"}, unpad, "pack_padded_sequence", 2 * real_bytes / bandwidth)
        pad = interleaved_medians({
            "pad_packed_sequence": lambda: pad_packed_sequence(packed, batch_first=True, total_length=padded_length),
            "padkern to_padded": lambda: ragged.to_padded(padded_length),
        }, device, rounds)
        report.add({"case": case, "direction": "pad"}, pad, "pad_packed_sequence", (real_bytes + x.numel() * 4) / bandwidth)
    return report
