"""ragged_conv1d against what users write today: ``nn.Conv1d`` over the padded batch
(``[B, C, T]``, padding="same"), then re-masking the padded positions. The padded conv
spends its FLOPs on padding too and lets each sequence read its zeros only because the
padding happens to be zero; padkern computes the real tokens alone. Forward and
forward+backward (gradients of input, weight and bias), about half the tokens real."""
import torch
import torch.nn.functional as F

import padkern
from padkern import Ragged
from .bench_padding import random_lengths
from .harness import Report, backend_candidates, interleaved_medians, matmul_rate

# (batch, padded length, channels, kernel size, groups, real fraction): a depthwise
# (Mamba-style causal conv shape) case, a dense one and one in between.
CASES_CPU = [(32, 512, 256, 3, 256, 0.5), (32, 256, 128, 3, 1, 0.5), (32, 256, 256, 5, 16, 0.5)]
CASES_GPU = [(64, 2048, 1024, 4, 1024, 0.5), (64, 1024, 512, 3, 1, 0.5), (64, 1024, 1024, 5, 16, 0.5)]
QUICK_CASES = [(32, 256, 128, 3, 128, 0.5)]


def _grads(out, inputs, upstream):
    return torch.autograd.grad(out, inputs, upstream)


def run(device: torch.device, rounds: int, cases=None) -> Report:
    report = Report("conv1d", device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    dtype_name = str(dtype).replace("torch.", "")
    rate = matmul_rate(device, dtype)
    generator = torch.Generator().manual_seed(0)
    for batch, padded_length, channels, kernel_size, groups, fraction in cases or (
            CASES_GPU if device.type == "cuda" else CASES_CPU):
        lengths = random_lengths(batch, padded_length, fraction, generator)
        padded = torch.randn(batch, channels, padded_length, device=device, dtype=dtype)
        mask = (torch.arange(padded_length)[None, :] < lengths[:, None]).to(device)[:, None, :].to(dtype)
        ragged = Ragged.from_padded(padded.transpose(1, 2), lengths)
        values = ragged.values.contiguous()
        weight = (torch.randn(channels, channels // groups, kernel_size, device=device, dtype=dtype)
                  / (channels // groups * kernel_size) ** 0.5)
        bias = torch.randn(channels, device=device, dtype=dtype)
        tokens = values.shape[0]
        upstream_padded = torch.randn(batch, channels, padded_length, device=device, dtype=dtype)
        upstream_ragged = torch.randn(tokens, channels, device=device, dtype=dtype)
        leaves_padded = [t.detach().requires_grad_() for t in (padded, weight, bias)]
        leaves_ragged = [t.detach().requires_grad_() for t in (values, weight, bias)]

        def padded_conv(x, w, b):
            return F.conv1d(x, w, b, padding="same", groups=groups) * mask

        def ragged_conv(backend, x, w, b):
            return padkern.ops.ragged_conv1d(x, ragged.offsets, w, b, padding="same", groups=groups, backend=backend)

        case = f"B{batch} T{padded_length} C{channels} k{kernel_size} g{groups} {int(fraction * 100)}%"
        flops = 2 * tokens * channels * (channels // groups) * kernel_size
        baseline = "nn.Conv1d padded + mask"
        with torch.no_grad():
            forward = interleaved_medians({
                baseline: lambda: padded_conv(padded, weight, bias),
                **backend_candidates("ragged_conv1d", device, lambda b: lambda: ragged_conv(b, values, weight, bias)),
            }, device, rounds)
        report.add({"case": case, "dtype": dtype_name, "pass": "forward"}, forward, baseline, flops / rate)
        training = interleaved_medians({
            baseline: lambda: _grads(padded_conv(*leaves_padded), leaves_padded, upstream_padded),
            **backend_candidates("ragged_conv1d", device, lambda b: lambda: _grads(
                ragged_conv(b, *leaves_ragged), leaves_ragged, upstream_ragged)),
        }, device, rounds)
        report.add({"case": case, "dtype": dtype_name, "pass": "forward+backward"}, training, baseline,
                   3 * flops / rate)
    return report
