"""padkern.nn.LSTM/GRU against what users write: pack_padded_sequence + torch.nn.LSTM +
pad_packed_sequence (enforce_sorted=False), and torch.nn.LSTM on the padded tensor
(oneDNN on CPU, cuDNN on GPU: wrong at padded rows, a speed reference only)."""
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import padkern
from padkern import Ragged
from .bench_padding import random_lengths
from .harness import Report, backend_candidates, interleaved_medians, matmul_rate

# (cell, batch, padded length, hidden, real fraction); input size = hidden.
CASES_CPU = [("lstm", 64, 256, 256, 0.5), ("gru", 64, 256, 256, 0.5), ("lstm", 32, 128, 128, 0.25),
             ("lstm", 32, 128, 128, 0.75), ("lstm", 8, 256, 512, 0.5), ("lstm", 256, 64, 256, 0.25)]
CASES_GPU = [(cell, batch, 256, hidden, fraction) for cell in ("lstm", "gru") for hidden in (128, 256, 512, 1024)
             for batch in (8, 32, 128, 256) for fraction in (0.25, 0.5, 0.75)
             if not (hidden == 1024 and batch == 256)]
# For the one-call GPU check (benchmarks/gpu_check.sh) and a quick CPU look.
QUICK_CASES = [("lstm", 32, 256, 256, 0.5), ("lstm", 128, 256, 512, 0.5), ("lstm", 8, 256, 128, 0.5),
               ("gru", 32, 256, 256, 0.5)]


def matmul_flops(cell: str, tokens: int, hidden: int, backward: bool) -> float:
    """Matmul FLOPs the real tokens need: input and recurrent projections (x3 with backward)."""
    gates = (4 if cell == "lstm" else 3) * hidden
    forward = 2 * tokens * gates * (hidden + hidden)
    return forward * (3 if backward else 1)


def run(device: torch.device, rounds: int, cases=None) -> Report:
    report = Report("rnn", device)
    rate = matmul_rate(device)
    generator = torch.Generator().manual_seed(0)
    for cell, batch, padded_length, hidden, fraction in cases or (CASES_GPU if device.type == "cuda" else CASES_CPU):
        torch_cls, ours_cls = (torch.nn.LSTM, padkern.nn.LSTM) if cell == "lstm" else (torch.nn.GRU, padkern.nn.GRU)
        reference = torch_cls(hidden, hidden, batch_first=True).to(device)
        ours = ours_cls(hidden, hidden, batch_first=True).to(device)
        ours.load_state_dict(reference.state_dict())
        x = torch.randn(batch, padded_length, hidden, device=device, requires_grad=True)
        lengths = random_lengths(batch, padded_length, fraction, generator)
        tokens = int(lengths.sum())

        def packed_pipeline():
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            return pad_packed_sequence(reference(packed)[0], batch_first=True, total_length=padded_length)[0]

        candidates = {
            "torch packed": packed_pipeline,
            "torch padded (wrong at pads)": lambda: reference(x)[0],
            "padkern padded": lambda: ours(x, lengths=lengths)[0],
        }
        ragged = Ragged.from_padded(x.detach(), lengths)
        ragged_leaf = ragged.values.requires_grad_()
        candidates["padkern ragged"] = lambda: ours(Ragged(ragged_leaf, ragged.offsets))[0].values
        if device.type == "cuda":
            # Every GPU backend by name: benchmarks/auto_table.py ranks them for backend="auto".
            def forced(backend):
                module = ours_cls(hidden, hidden, batch_first=True, backend=backend).to(device)
                module.load_state_dict(reference.state_dict())
                return lambda: module(Ragged(ragged_leaf, ragged.offsets))[0].values

            candidates.update(backend_candidates(cell, device, forced))
        case = f"{cell} B{batch} T{padded_length} H{hidden} {int(fraction * 100)}%"
        with torch.no_grad():
            report.add({"case": case, "dtype": "float32", "pass": "forward"},
                       interleaved_medians(candidates, device, rounds), "torch packed",
                       matmul_flops(cell, tokens, hidden, False) / rate)
        training = {name: (lambda fn=fn: fn().sum().backward()) for name, fn in candidates.items()}
        report.add({"case": case, "dtype": "float32", "pass": "forward+backward"},
                   interleaved_medians(training, device, rounds), "torch packed",
                   matmul_flops(cell, tokens, hidden, True) / rate)
    return report
