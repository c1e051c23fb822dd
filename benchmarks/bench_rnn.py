"""padkern.nn.LSTM/GRU/RNN against what users write: pack_padded_sequence + torch.nn.LSTM +
pad_packed_sequence (enforce_sorted=False), and torch.nn.LSTM on the padded tensor
(oneDNN on CPU, cuDNN on GPU: wrong at padded rows, a speed reference only)."""
import functools

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import padkern
from padkern import Ragged
from .bench_padding import random_lengths
from .harness import Report, backend_candidates, interleaved_medians, matmul_rate, with_environment

# (cell, batch, padded length, hidden, real fraction); input size = hidden. Cells: lstm, gru,
# rnn_tanh (torch.nn.RNN's default nonlinearity).
CASES_CPU = [("lstm", 64, 256, 256, 0.5), ("gru", 64, 256, 256, 0.5), ("rnn_tanh", 64, 256, 256, 0.5),
             ("lstm", 32, 128, 128, 0.25), ("lstm", 32, 128, 128, 0.75), ("lstm", 8, 256, 512, 0.5),
             ("lstm", 256, 64, 256, 0.25)]
# LSTMs with projections (torch.nn.LSTM's proj_size): (batch, padded length, hidden, proj_size,
# real fraction); input size = proj_size. CPU only: there padkern runs its own kernel for them.
PROJECTED_CASES_CPU = [(32, 128, 1024, 256, 0.5)]
CASES_GPU = [(cell, batch, 256, hidden, fraction) for cell in ("lstm", "gru") for hidden in (128, 256, 512, 1024)
             for batch in (8, 32, 128, 256) for fraction in (0.25, 0.5, 0.75)
             if not (hidden == 1024 and batch == 256)]
CASES_GPU += [("rnn_tanh", batch, 256, hidden, 0.5) for hidden in (256, 1024) for batch in (32, 256)]
# For the one-call GPU check (benchmarks/gpu_check.sh) and a quick CPU look; a sixth field
# names the dtype (float32 otherwise).
QUICK_CASES = [("lstm", 32, 256, 256, 0.5), ("lstm", 128, 256, 512, 0.5), ("lstm", 8, 256, 128, 0.5),
               ("gru", 32, 256, 256, 0.5), ("rnn_tanh", 32, 256, 256, 0.5), ("lstm", 64, 256, 256, 0.5, "bfloat16"),
               ("gru", 64, 256, 256, 0.5, "bfloat16"), ("lstm", 256, 256, 1024, 0.5, "bfloat16")]


GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1}


def module_classes(cell: str):
    """(torch.nn's module, padkern's) for a benchmark cell."""
    if cell == "rnn_tanh":
        return (functools.partial(torch.nn.RNN, nonlinearity="tanh"),
                functools.partial(padkern.nn.RNN, nonlinearity="tanh"))
    return (torch.nn.LSTM, padkern.nn.LSTM) if cell == "lstm" else (torch.nn.GRU, padkern.nn.GRU)


def matmul_flops(cell: str, tokens: int, hidden: int, backward: bool) -> float:
    """Matmul FLOPs the real tokens need: input and recurrent projections (x3 with backward)."""
    gates = GATES[cell] * hidden
    forward = 2 * tokens * gates * (hidden + hidden)
    return forward * (3 if backward else 1)


def projected_matmul_flops(tokens: int, hidden: int, projection: int, backward: bool) -> float:
    """An LSTM with projections (input size = projection): input, recurrent and output
    projections (x3 with backward)."""
    forward = 2 * tokens * (4 * hidden * projection * 2 + projection * hidden)
    return forward * (3 if backward else 1)


def user_candidates(reference, ours, x, lengths, padded_length):
    """What users write and padkern's module, on padded x [B, T, *] and on a Ragged of it.
    Returns (candidates, the Ragged's values leaf and offsets)."""
    def packed_pipeline():
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        return pad_packed_sequence(reference(packed)[0], batch_first=True, total_length=padded_length)[0]

    ragged = Ragged.from_padded(x.detach(), lengths)
    leaf = ragged.values.requires_grad_()
    return {
        "torch packed": packed_pipeline,
        "torch padded (wrong at pads)": lambda: reference(x)[0],
        "padkern padded": lambda: ours(x, lengths=lengths)[0],
        "padkern ragged": lambda: ours(Ragged(leaf, ragged.offsets))[0].values,
    }, leaf, ragged.offsets


def add_passes(report: Report, case: dict, candidates, device, rounds, floor_seconds) -> None:
    """Forward, then forward+backward, of every candidate against torch packed."""
    with torch.no_grad():
        report.add({**case, "pass": "forward"}, interleaved_medians(candidates, device, rounds), "torch packed",
                   floor_seconds(False))
    training = {name: (lambda fn=fn: fn().float().sum().backward()) for name, fn in candidates.items()}
    report.add({**case, "pass": "forward+backward"}, interleaved_medians(training, device, rounds), "torch packed",
               floor_seconds(True))


def add_projected_case(report: Report, device, rounds, rate, generator, batch, padded_length, hidden, projection,
                       fraction) -> None:
    reference = torch.nn.LSTM(projection, hidden, proj_size=projection, batch_first=True).to(device)
    ours = padkern.nn.LSTM(projection, hidden, proj_size=projection, batch_first=True).to(device)
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(batch, padded_length, projection, device=device, requires_grad=True)
    lengths = random_lengths(batch, padded_length, fraction, generator)
    tokens = int(lengths.sum())
    candidates, _, _ = user_candidates(reference, ours, x, lengths, padded_length)
    case = f"lstm B{batch} T{padded_length} H{hidden} P{projection} {int(fraction * 100)}%"
    add_passes(report, {"case": case, "dtype": "float32"}, candidates, device, rounds,
               lambda backward: projected_matmul_flops(tokens, hidden, projection, backward) / rate)


def run(device: torch.device, rounds: int, cases=None) -> Report:
    report = Report("rnn", device)
    rates = {}  # the measured GEMM rate per dtype: the floor's denominator
    generator = torch.Generator().manual_seed(0)
    for cell, batch, padded_length, hidden, fraction, *precision in \
            cases or (CASES_GPU if device.type == "cuda" else CASES_CPU):
        dtype = getattr(torch, precision[0]) if precision else torch.float32
        if dtype != torch.float32 and device.type != "cuda":
            continue  # the CPU figures are float32
        if dtype not in rates:
            rates[dtype] = matmul_rate(device, dtype)
        rate = rates[dtype]
        torch_cls, ours_cls = module_classes(cell)
        reference = torch_cls(hidden, hidden, batch_first=True).to(device, dtype)
        ours = ours_cls(hidden, hidden, batch_first=True).to(device, dtype)
        ours.load_state_dict(reference.state_dict())
        x = torch.randn(batch, padded_length, hidden, device=device, dtype=dtype, requires_grad=True)
        lengths = random_lengths(batch, padded_length, fraction, generator)
        tokens = int(lengths.sum())

        candidates, ragged_leaf, ragged_offsets = user_candidates(reference, ours, x, lengths, padded_length)
        if device.type == "cuda":
            # Every GPU backend by name: benchmarks/auto_table.py ranks them for backend="auto".
            def forced(backend):
                module = ours_cls(hidden, hidden, batch_first=True, backend=backend).to(device, dtype)
                module.load_state_dict(reference.state_dict())
                return lambda: module(Ragged(ragged_leaf, ragged_offsets))[0].values

            candidates.update(backend_candidates(cell.split("_")[0], device, forced))
            if dtype != torch.float32 and cell != "rnn_tanh":  # persistent kernels: tensor cores; TF32 float32
                candidates["padkern ragged, persistent (cuda)"] = with_environment(
                    "PADKERN_CUDA_RNN", "persistent", lambda: ours(Ragged(ragged_leaf, ragged_offsets))[0].values)
        case = f"{cell} B{batch} T{padded_length} H{hidden} {int(fraction * 100)}%"
        add_passes(report, {"case": case, "dtype": str(dtype).replace("torch.", "")}, candidates, device, rounds,
                   lambda backward: matmul_flops(cell, tokens, hidden, backward) / rate)
    if cases is None and device.type == "cpu":
        rate = rates.get(torch.float32) or matmul_rate(device, torch.float32)
        for projected_case in PROJECTED_CASES_CPU:
            add_projected_case(report, device, rounds, rate, generator, *projected_case)
    return report
