"""masked_linear against what users write to keep padding out of a dense layer:
(a) multiply by the mask and run F.linear over the whole padded tensor (the usual
recipe), (b) gather the real rows, F.linear, scatter back, (c) torch.nested jagged +
F.linear; and the floor: F.linear on already-packed real rows alone."""
import torch
import torch.nn.functional as F

import padkern
from .bench_padding import random_lengths
from .harness import Report, backend_candidates, interleaved_medians, matmul_rate, with_environment

# (batch, padded length, in features, out features, real fraction, precision); "float32+tf32"
# lets torch and padkern use TF32 tensor cores, "float32" keeps exact float32 products.
CASES_CPU = [(32, 256, 512, 512, f, "float32") for f in (0.1, 0.25, 0.5, 0.75, 1.0)]
CASES_GPU = [(64, 1024, kn, kn, f, p) for p in ("bfloat16", "float16", "float32+tf32", "float32")
             for kn in (512, 1024, 4096) for f in (0.1, 0.25, 0.5, 0.85, 1.0)]
QUICK_CASES = [(64, 512, 1024, 1024, 0.5, p) for p in ("bfloat16", "float16", "float32+tf32", "float32")] + \
              [(64, 512, 4096, 4096, 0.25, "bfloat16")]


def run(device: torch.device, rounds: int, cases=None) -> Report:
    report = Report("masked_linear", device)
    generator = torch.Generator().manual_seed(0)
    tf32_before = torch.backends.cuda.matmul.allow_tf32
    for batch, padded_length, k, n, fraction, precision in cases or (CASES_GPU if device.type == "cuda" else CASES_CPU):
        dtype = getattr(torch, precision.split("+")[0])
        torch.backends.cuda.matmul.allow_tf32 = precision.endswith("+tf32")
        rate = matmul_rate(device, dtype)
        x = torch.randn(batch, padded_length, k, device=device, dtype=dtype, requires_grad=True)
        weight = (torch.randn(n, k, device=device, dtype=dtype) / k ** 0.5).requires_grad_()
        bias = torch.zeros(n, device=device, dtype=dtype, requires_grad=True)
        lengths = random_lengths(batch, padded_length, fraction, generator) if fraction < 1 else \
            torch.full((batch,), padded_length)
        mask = (torch.arange(padded_length)[None, :] < lengths[:, None]).to(device)
        rows = mask.reshape(-1).nonzero().squeeze(1)
        packed = x.detach().reshape(-1, k)[rows].requires_grad_()
        offsets = padkern.Ragged.from_padded(x.detach(), lengths).offsets

        def gather_scatter():
            out = x.new_zeros(batch * padded_length, n)
            return out.index_copy(0, rows, F.linear(x.reshape(-1, k)[rows], weight, bias)).view(batch, padded_length, n)

        def nested():
            jagged = torch.nested.nested_tensor_from_jagged(x.reshape(-1, k)[rows], offsets)
            return F.linear(jagged, weight, bias).values()

        candidates = {
            "mask multiply + F.linear": lambda: F.linear(x * mask[..., None].to(dtype), weight, bias) * mask[..., None].to(dtype),
            "gather + F.linear + scatter": gather_scatter,
            "torch.nested + F.linear": nested,
            "F.linear on packed rows": lambda: F.linear(packed, weight, bias),
            **backend_candidates("masked_linear", device, lambda b: lambda: padkern.ops.masked_linear(
                x, lengths, weight, bias, backend=b)),
        }
        if device.type == "cuda":
            candidates.update(backend_candidates("ragged_linear", device, lambda b: lambda: padkern.ops.ragged_linear(
                packed, weight, bias, offsets=offsets, backend=b)))
            # The cuda backend's dense cuBLAS route off: padkern's own GEMM kernel.
            candidates["padkern ragged_linear, own kernel (cuda)"] = with_environment(
                "PADKERN_DENSE_LINEAR", "0",
                lambda: padkern.ops.ragged_linear(packed, weight, bias, offsets=offsets, backend="cuda"))
        tokens = int(lengths.sum())
        case = {"case": f"B{batch} T{padded_length} K{k} N{n} {int(fraction * 100)}%", "dtype": precision}
        with torch.no_grad():
            report.add(dict(case, **{"pass": "forward"}), interleaved_medians(candidates, device, rounds),
                       "mask multiply + F.linear", 2 * tokens * k * n / rate)
        training = {name: (lambda fn=fn: fn().float().sum().backward()) for name, fn in candidates.items()}
        report.add(dict(case, **{"pass": "forward+backward"}), interleaved_medians(training, device, rounds),
                   "mask multiply + F.linear", 6 * tokens * k * n / rate)
    torch.backends.cuda.matmul.allow_tf32 = tf32_before
    return report
