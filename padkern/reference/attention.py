"""Reference ragged attention: each sequence on its own, in plain PyTorch, differentiable by
autograd to any order. The specification every kernel backend is tested against.

Shapes: q [L, Hq, D]; k, v [Lk, Hkv, D], Hq a multiple of Hkv (query head h reads key/value
head h // (Hq / Hkv), as ``F.scaled_dot_product_attention(enable_gqa=True)``); offsets and
kv_offsets [B+1] index q and k/v (the same offsets for self-attention).

The softmax is written the way the kernels compute it (FlashAttention-2's): the row maximum m
(taken as 0 when every score is -inf), l = sum exp(s - m), lse = m + log l, and the weights
exp(s - lse) (exactly 0 for masked keys), out = weights v.
So a query with no key, or whose every score is -inf, gives out 0 and lse -inf with zero
gradients instead of softmax's NaN; NaN in a score makes its row NaN.
"""
import math

import torch


def _sequence(q, k, v, causal: bool, scale: float):
    """q [n, Hq, D], k/v [m, Hkv, D] -> out [n, Hq, D], lse [n, Hq] in q's dtype."""
    group = q.shape[1] // k.shape[1]
    keys = k.repeat_interleave(group, dim=1).transpose(0, 1)  # [Hq, m, D]
    values = v.repeat_interleave(group, dim=1).transpose(0, 1)
    scores = (q.transpose(0, 1) @ keys.transpose(1, 2)) * scale  # [Hq, n, m]
    n, m = scores.shape[1], scores.shape[2]
    seen = torch.ones(n, m, dtype=torch.bool, device=q.device)
    if causal:
        seen = torch.arange(m, device=q.device)[None, :] <= torch.arange(n, device=q.device)[:, None]
        scores = scores.masked_fill(~seen, float("-inf"))
    peak = scores.amax(-1, keepdim=True) if m > 0 else scores.new_zeros(scores.shape[:-1] + (1,))
    # The maximum only keeps exp in range; it cancels from the weights, so no gradient flows through it.
    peak = torch.where(peak == float("-inf"), torch.zeros_like(peak), peak).detach()
    total = torch.exp(scores - peak).sum(-1, keepdim=True)
    # total is 0 only where every weight is 0: log(1) there keeps lse (and its gradient) finite.
    no_weight = total == 0
    lse = peak + torch.log(torch.where(no_weight, torch.ones_like(total), total))
    # Weights exp(s - lse), with masked keys exactly 0 (NaN in a row reaches only the keys it sees).
    weights = torch.exp(scores - lse).masked_fill(~seen, 0.0)
    out = weights @ values
    lse = lse.masked_fill(no_weight, float("-inf")).squeeze(-1)
    return out.transpose(0, 1), lse.transpose(0, 1)


def ragged_attention(q, k, v, offsets, kv_offsets, causal: bool, scale: float):
    """-> out [L, Hq, D] (q's dtype), lse [L, Hq] (float32: the log-sum-exp of each row's
    scaled scores, -inf for a query with no key). causal: query i of a sequence sees keys
    0..i of that sequence."""
    bounds, kv_bounds = offsets.tolist(), kv_offsets.tolist()
    outs, lses = [], []
    for b in range(len(bounds) - 1):
        qs, ks = slice(bounds[b], bounds[b + 1]), slice(kv_bounds[b], kv_bounds[b + 1])
        out, lse = _sequence(q[qs], k[ks], v[ks], causal, scale)
        outs.append(out)
        lses.append(lse)
    if not outs:
        return q[:0].clone() + (k[:0].sum() + v[:0].sum()), q.new_empty((0, q.shape[1]), dtype=torch.float32)
    # Sequences of no tokens still join the graph, so k and v get (zero) gradients.
    out = torch.cat(outs) + (k[:0].sum() + v[:0].sum())
    return out, torch.cat(lses).to(torch.float32)


def default_scale(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim)
