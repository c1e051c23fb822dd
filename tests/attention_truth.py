"""Ragged attention's float64 truth (padkern's reference, the specification) with the error a
kernel may make in a given dtype, propagated sequence by sequence: the kernel tests (tests/test_triton_attention.py,
tests/test_gpu_attention.py) check every element against it.

Bounds follow TESTING.md: eps times the magnitudes summed, propagated through each step
of FlashAttention-2's forward and backward (scores, softmax, P V; dP, delta, dS, dQ, dK,
dV), so they hold for any seed rather than for one draw. Each kept weight p may also be off
by an underflow allowance, twice the arithmetic dtype's smallest normal: where p lies below
it, an exp that flushes to zero (a GPU's, padkern's CPU loops below host_exp's floor) gives
0 and the truth a subnormal.
"""
import math

import torch

from padkern.reference import attention as reference
from ragged_cases import offsets_of

SAFETY = 4.0


def make_case(lengths, kv_lengths, heads, kv_heads, head_dim, dtype, device="cpu", seed=0):
    """q [L, Hq, D], k, v [Lk, Hkv, D], grad_out like q, offsets, kv_offsets."""
    generator = torch.Generator().manual_seed(seed)

    def draw(rows, h):
        return torch.randn(rows, h, head_dim, generator=generator, dtype=torch.float64).to(dtype).to(device)

    q, k, v = draw(sum(lengths), heads), draw(sum(kv_lengths), kv_heads), draw(sum(kv_lengths), kv_heads)
    grad_out = draw(sum(lengths), heads)
    return q, k, v, grad_out, offsets_of(lengths, device), offsets_of(kv_lengths, device)


def _sequence(q, k, v, grad_out, causal, scale, eps, tiny):
    """One sequence, heads expanded: q, grad_out [n, H, D]; k, v [m, H, D] (float64); eps and
    tiny: the arithmetic dtype's epsilon and underflow allowance."""
    n, m, head_dim = q.shape[0], k.shape[0], q.shape[2]
    s = torch.einsum("ihd,jhd->hij", q, k) * scale
    keep = torch.ones(n, m, dtype=torch.bool, device=q.device)
    if causal:
        keep = keep.tril()
    s = s.masked_fill(~keep, -math.inf)
    lse = torch.logsumexp(s, -1) if m else s.new_full((q.shape[1], n), -math.inf)
    p = torch.where(keep, torch.exp(s - lse[..., None]), 0.0) if m else s
    out = torch.einsum("hij,jhd->ihd", p, v)
    dp = torch.einsum("ihd,jhd->hij", grad_out, v)
    delta = (grad_out * out).sum(-1).T  # [H, n]
    ds = p * (dp - delta[..., None])
    dq = torch.einsum("hij,jhd->ihd", ds, k) * scale
    dk = torch.einsum("hij,ihd->jhd", ds, q) * scale
    dv = torch.einsum("hij,ihd->jhd", p, grad_out)

    # Error bounds. A score's absolute error, then each row's relative error of p.
    abs_q, abs_k, abs_v, abs_do = q.abs(), k.abs(), v.abs(), grad_out.abs()
    mag_s = torch.einsum("ihd,jhd->hij", abs_q, abs_k) * scale
    row_err = head_dim * eps * torch.where(keep, mag_s, 0.0).amax(-1, keepdim=True) if m else mag_s.sum(-1, True)
    rel_p = 2 * row_err + (m + 4) * eps  # [H, n, 1]
    err_p = rel_p * p + keep.to(p.dtype) * tiny  # [H, n, m]
    err_out = torch.einsum("hij,jhd->ihd", err_p, abs_v)
    err_lse = (row_err[..., 0] + (m + 2) * eps).T + torch.finfo(torch.float32).eps * lse.T.abs().nan_to_num(0, 0, 0)
    err_dp = head_dim * eps * torch.einsum("ihd,jhd->hij", abs_do, abs_v)
    err_delta = (head_dim * eps * (abs_do * out.abs()).sum(-1) + (abs_do * err_out).sum(-1)).T
    err_ds = err_p * (dp - delta[..., None]).abs() + (p + err_p) * (err_dp + err_delta[..., None]) + eps * ds.abs()
    abs_ds = ds.abs()
    err_dq = scale * (torch.einsum("hij,jhd->ihd", err_ds, abs_k) + m * eps * torch.einsum("hij,jhd->ihd", abs_ds, abs_k))
    err_dk = scale * (torch.einsum("hij,ihd->jhd", err_ds, abs_q) + n * eps * torch.einsum("hij,ihd->jhd", abs_ds, abs_q))
    err_dv = torch.einsum("hij,ihd->jhd", err_p + n * eps * p, abs_do)
    values = (out, lse.T, dq, dk, dv)
    errors = (err_out, err_lse, err_dq, err_dk, err_dv)
    return values, errors


def reference_values(q, k, v, grad_out, offsets, kv_offsets, causal, scale):
    """(out, lse, grad_q, grad_k, grad_v) of padkern's reference (the specification) on these
    tensors, in their dtype and device; gradients by autograd."""
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]
    out, lse = reference.ragged_attention(*leaves, offsets, kv_offsets, causal, scale)
    grads = torch.autograd.grad(out, leaves, grad_out)
    return (out.detach(), lse) + tuple(grads)


def truth(q, k, v, grad_out, offsets, kv_offsets, causal, scale, dtype):
    """(out, lse, grad_q, grad_k, grad_v): the reference's values in float64 (on the CPU) and
    their error bounds for a kernel computing in ``dtype`` (float32 accumulation for reduced
    precisions)."""
    arithmetic = torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32)
    eps, tiny = arithmetic.eps, 2 * arithmetic.tiny
    group = q.shape[1] // k.shape[1]
    q, k, v, grad_out = (t.double() for t in (q, k, v, grad_out))
    pieces = []
    bounds, kv_bounds = offsets.tolist(), kv_offsets.tolist()
    for b in range(len(bounds) - 1):
        rows, kv_rows = slice(bounds[b], bounds[b + 1]), slice(kv_bounds[b], kv_bounds[b + 1])
        expand = lambda t: t[kv_rows].repeat_interleave(group, 1)  # noqa: E731
        values, errors = _sequence(q[rows], expand(k), expand(v), grad_out[rows], causal, scale, eps, tiny)
        pieces.append((values, errors))
    results = []
    for index in range(5):
        error = torch.cat([piece[1][index] for piece in pieces]).cpu()
        if index >= 3:  # dK, dV: the group of query heads sharing a kv head sums
            error = error.unflatten(1, (k.shape[1], group)).sum(2)
        results.append(SAFETY * error)
    values = reference_values(q.cpu(), k.cpu(), v.cpu(), grad_out.cpu(), offsets.cpu(), kv_offsets.cpu(), causal,
                              scale)
    return [(value.double(), bound) for value, bound in zip(values, results)]


def assert_within(name, got, expected, bound):
    """Every element of ``got`` within ``bound`` of the float64 ``expected`` (infinities equal)."""
    got = got.double().cpu()
    assert got.shape == expected.shape, f"{name}: shape {tuple(got.shape)} != {tuple(expected.shape)}"
    assert not got.isnan().any(), f"{name}: NaN at {got.isnan().nonzero()[:5].tolist()}"
    same_inf = (got == expected) & expected.isinf()
    err = torch.where(same_inf, 0.0, (got - expected).abs())
    bad = ~(err <= bound.cpu())
    if bad.any():
        where = bad.nonzero()[0].tolist()
        raise AssertionError(f"{name}: {int(bad.sum())} of {got.numel()} elements off, first at {where}: got "
                             f"{got[tuple(where)].item()}, expected {expected[tuple(where)].item()}, "
                             f"bound {bound[tuple(where)].item()}")


def low_precision_errors(q, k, v, grad_out, offsets, kv_offsets, causal, scale, expected):
    """The largest error of the reference run in q's (reduced) dtype, per output, against the
    float64 ``expected`` values: what PyTorch's own computation in that dtype gets."""
    values = reference_values(q, k, v, grad_out, offsets, kv_offsets, causal, scale)
    errors = []
    for got, (want, _) in zip(values, expected):
        got = got.double().cpu()
        errors.append(torch.where(got == want, 0.0, (got - want).abs()).amax().item() if want.numel() else 0.0)
    return errors
