"""ragged_attention against what users write today: F.scaled_dot_product_attention over the
padded batch with a key padding mask (the baseline), torch.nested + SDPA, and a loop of SDPA
over each sequence alone; forward, and forward+backward.

Floor: the real tokens' attention FLOPs over the measured GEMM rate. Forward is two GEMMs
per sequence and head (q k^T, p v): 4 D len^2 FLOPs (half of it under causal masking);
backward four more (dV, dP, dQ, dK), so forward+backward counts 3x forward (Sum len_i^2,
not B T^2: padding needs none).
"""
import torch
import torch.nn.functional as F

import padkern
from .bench_padding import random_lengths
from .harness import Report, interleaved_medians, matmul_rate

# (B, T, heads, head_dim, real fraction, causal)
CASES_CPU = [(16, 512, 8, 64, 0.5, False), (16, 512, 8, 64, 0.5, True), (32, 256, 4, 128, 0.5, False)]
CASES_GPU = [(32, 2048, 16, 64, 0.5, False), (32, 2048, 16, 128, 0.5, True), (64, 1024, 16, 64, 0.25, False)]
QUICK_CASES = [(8, 256, 4, 64, 0.5, False)]


def _candidates(q_pad, k_pad, v_pad, keep, q, k, v, offsets, lengths, causal, backward):
    """name -> callable running one pass (forward, or forward and backward) of each way."""
    batch, heads, padded_length, _ = q_pad.shape
    mask = keep[:, None, None, :]
    if causal:
        mask = mask & torch.ones(padded_length, padded_length, dtype=torch.bool, device=keep.device).tril()
    bounds = offsets.tolist()
    nested = [torch.nested.nested_tensor_from_jagged(t, offsets).transpose(1, 2) for t in (q, k, v)]

    def run(fn, inputs):
        def call():
            out = fn(*inputs)
            if backward:
                out.backward(torch.ones_like(out))
        return call

    def per_sequence(q, k, v):
        outs = []
        for b in range(batch):
            s = slice(bounds[b], bounds[b + 1])
            if s.stop > s.start:
                outs.append(F.scaled_dot_product_attention(q[s].transpose(0, 1), k[s].transpose(0, 1),
                                                           v[s].transpose(0, 1), is_causal=causal))
        return torch.cat([o.transpose(0, 1) for o in outs])

    candidates = {
        "SDPA padded + key padding mask": run(
            lambda q_, k_, v_: F.scaled_dot_product_attention(q_, k_, v_, attn_mask=mask), (q_pad, k_pad, v_pad)),
        "torch.nested + SDPA": run(
            lambda q_, k_, v_: F.scaled_dot_product_attention(q_, k_, v_, is_causal=causal).values(), nested),
        "per-sequence SDPA loop": run(per_sequence, (q, k, v)),
        "padkern ragged_attention": run(
            lambda q_, k_, v_: padkern.ops.ragged_attention(q_, k_, v_, offsets, causal=causal), (q, k, v)),
    }
    usable = {}
    for name, fn in candidates.items():
        try:
            fn()
            usable[name] = fn
        except (RuntimeError, NotImplementedError) as error:  # e.g. nested SDPA without a kernel here
            print(f"bench_attention: {name} skipped: {str(error).splitlines()[0]}")
    return usable


def run(device: torch.device, rounds: int, cases=None) -> Report:
    report = Report("attention", device)
    rate = matmul_rate(device)
    generator = torch.Generator().manual_seed(0)
    for batch, padded_length, heads, dim, real_fraction, causal in cases or (
            CASES_GPU if device.type == "cuda" else CASES_CPU):
        lengths = random_lengths(batch, padded_length, real_fraction, generator)
        offsets = F.pad(lengths.cumsum(0), (1, 0)).to(device)
        keep = (torch.arange(padded_length)[None, :] < lengths[:, None]).to(device)
        dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
        padded = [torch.randn(batch, heads, padded_length, dim, device=device, dtype=dtype) for _ in range(3)]
        ragged = [t.transpose(1, 2)[keep].contiguous() for t in padded]  # [L, heads, dim]
        square_sum = float((lengths.double() ** 2).sum())
        forward_flops = 4 * heads * dim * square_sum * (0.5 if causal else 1.0)
        case = {"case": f"B{batch} T{padded_length} H{heads} D{dim} {int(real_fraction * 100)}%"
                        + (" causal" if causal else "")}
        for backward in (False, True):
            inputs = [t.detach().requires_grad_(backward) for t in padded + ragged]
            candidates = _candidates(*inputs[:3], keep, *inputs[3:], offsets, lengths, causal, backward)
            medians = interleaved_medians(candidates, device, rounds)
            flops = forward_flops * (3 if backward else 1)
            report.add(dict(case, passes="forward+backward" if backward else "forward"), medians,
                       "SDPA padded + key padding mask", flops / rate)
    return report
