"""The swap-in model of README: embedding -> bidirectional LSTM -> masked mean pooling ->
classifier, written once for torch.nn (pack_padded_sequence around nn.LSTM, a mask for the
pooling) and once for padkern (the same layers on a Ragged), timed for a training step."""
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import padkern
from .bench_padding import random_lengths
from .harness import Report, interleaved_medians, matmul_rate

# (batch, padded length, embedding = hidden, real fraction)
CASES_CPU = [(64, 128, 128, 0.5), (32, 256, 256, 0.5)]
CASES_GPU = [(64, 256, 256, 0.5), (128, 256, 512, 0.5)]
QUICK_CASES = [(32, 128, 128, 0.5)]
VOCABULARY, CLASSES = 1000, 8


class TorchClassifier(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.embed = nn.Embedding(VOCABULARY, hidden, padding_idx=0)
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, CLASSES)

    def forward(self, tokens, lengths):
        packed = pack_padded_sequence(self.embed(tokens), lengths, batch_first=True, enforce_sorted=False)
        out, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=tokens.shape[1])
        mask = torch.arange(tokens.shape[1], device=tokens.device)[None, :] < lengths.to(tokens.device)[:, None]
        pooled = (out * mask[..., None]).sum(1) / lengths.to(out.device).clamp(min=1)[:, None]
        return self.head(pooled)


class PadkernClassifier(TorchClassifier):
    """The same parameters (state_dict-compatible), computed on the real tokens only."""

    def __init__(self, hidden):
        super().__init__(hidden)
        self.lstm = padkern.nn.LSTM(hidden, hidden, batch_first=True, bidirectional=True)

    def forward(self, tokens, lengths):
        ragged = padkern.Ragged.from_padded(tokens, lengths)
        out, _ = self.lstm(ragged.with_values(self.embed(ragged.values)))
        return self.head(padkern.ops.segment_mean(out.values, out.offsets))


def run(device: torch.device, rounds: int, cases=None) -> Report:
    report = Report("swap_in", device)
    rate = matmul_rate(device)
    generator = torch.Generator().manual_seed(0)
    for batch, padded_length, hidden, fraction in cases or (CASES_GPU if device.type == "cuda" else CASES_CPU):
        baseline = TorchClassifier(hidden).to(device)
        ours = PadkernClassifier(hidden).to(device)
        ours.load_state_dict(baseline.state_dict())
        lengths = random_lengths(batch, padded_length, fraction, generator).clamp(min=1)  # packing needs >= 1
        tokens = torch.randint(1, VOCABULARY, (batch, padded_length), generator=generator).to(device)
        labels = torch.randint(0, CLASSES, (batch,), generator=generator).to(device)
        step = {name: (lambda model=model: F.cross_entropy(model(tokens, lengths), labels).backward())
                for name, model in (("torch.nn packed", baseline), ("padkern", ours))}
        real = int(lengths.sum())
        # Floor: the LSTM's matmuls over real tokens in both directions, forward and backward.
        floor = 2 * 3 * (2 * real * 4 * hidden * 2 * hidden) / rate
        report.add({"case": f"B{batch} T{padded_length} H{hidden} {int(fraction * 100)}%", "pass": "train step"},
                   interleaved_medians(step, device, rounds), "torch.nn packed", floor)
    return report
