"""ragged_attention: the reference against per-sequence F.scaled_dot_product_attention, every
backend against the reference (forward and backward), fuzzing, bad input, opcheck, compile,
autocast. Edge values and layouts: tests/test_agreement.py, tests/test_layouts.py."""
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import padkern
from padkern.ops import attention as attention_ops
from padkern.reference.attention import ragged_attention as reference
from attention_truth import assert_within as truth_assert_within, make_case, truth
from ragged_cases import EDGE_LENGTHS, nan_filled_allocations, offsets_of

F64 = dict(rtol=1e-10, atol=1e-12)


def skip_missing(backend):
    if backend == "triton" and attention_ops._TRITON is None:
        pytest.skip("padkern's Triton attention kernels are not in this build")


def make(lengths, heads=4, kv_heads=2, dim=8, kv_lengths=None, dtype=torch.float64, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    kv = lengths if kv_lengths is None else kv_lengths
    q = torch.randn(sum(lengths), heads, dim, generator=g, dtype=torch.float64)
    k = torch.randn(sum(kv), kv_heads, dim, generator=g, dtype=torch.float64)
    v = torch.randn(sum(kv), kv_heads, dim, generator=g, dtype=torch.float64)
    cast = lambda t: t.to(dtype).to(device)  # noqa: E731
    return cast(q), cast(k), cast(v), offsets_of(lengths, device), offsets_of(kv, device)


def per_sequence_sdpa(q, k, v, offsets, kv_offsets, causal, scale=None):
    """Each sequence alone through F.scaled_dot_product_attention ([H, n, D] layout), with
    zeros for a query that has no key."""
    out = torch.zeros_like(q)
    bounds, kv_bounds = offsets.tolist(), kv_offsets.tolist()
    for b in range(len(bounds) - 1):
        qs, ks = slice(bounds[b], bounds[b + 1]), slice(kv_bounds[b], kv_bounds[b + 1])
        if qs.stop == qs.start or ks.stop == ks.start:
            continue
        out[qs] = F.scaled_dot_product_attention(q[qs].transpose(0, 1), k[ks].transpose(0, 1), v[ks].transpose(0, 1),
                                                 is_causal=causal, scale=scale, enable_gqa=True).transpose(0, 1)
    return out


def forward_backward(q, k, v, offsets, kv_offsets, causal, backend, scale=None, seed=7):
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]
    out = padkern.ops.ragged_attention(*leaves, offsets, kv_offsets=kv_offsets, causal=causal, scale=scale,
                                       backend=backend)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(out)
    return [out.detach()] + list(torch.autograd.grad(out, leaves, grad))


# ----- the reference is the specification ---------------------------------------------------
REFERENCE_CASES = {
    "self": dict(lengths=[5, 0, 9, 1], heads=2, kv_heads=2, dim=8, causal=False),
    "causal": dict(lengths=[5, 0, 9, 1], heads=2, kv_heads=2, dim=8, causal=True),
    "grouped_query": dict(lengths=[6, 3, 0], heads=6, kv_heads=2, dim=16, causal=True),
    "cross": dict(lengths=[4, 2, 7], kv_lengths=[9, 1, 3], heads=4, kv_heads=1, dim=8, causal=False),
    "head_dim_128": dict(lengths=[33, 17], heads=2, kv_heads=1, dim=128, causal=True),
    "long": dict(lengths=[700, 3, 300], heads=1, kv_heads=1, dim=16, causal=True),
}


@pytest.mark.parametrize("case", list(REFERENCE_CASES))
def test_reference_matches_sdpa(case):
    c = dict(REFERENCE_CASES[case])
    causal = c.pop("causal")
    q, k, v, offsets, kv_offsets = make(c.pop("lengths"), **c)
    out, lse = reference(q, k, v, offsets, kv_offsets, causal, 0.5)
    torch.testing.assert_close(out, per_sequence_sdpa(q, k, v, offsets, kv_offsets, causal, 0.5), **F64)
    assert lse.dtype == torch.float32 and lse.shape == q.shape[:2]


def test_reference_no_keys_gives_zero_and_zero_gradients():
    q, k, v, offsets, kv_offsets = make([3, 2, 4], kv_lengths=[0, 5, 0])
    got = forward_backward(q, k, v, offsets, kv_offsets, False, "reference")
    assert got[0][:3].eq(0).all() and got[0][5:].eq(0).all() and got[1][:3].eq(0).all()
    assert all(torch.isfinite(t).all() for t in got)


# ----- every backend against the reference ----------------------------------------------------
BACKEND_CASES = {
    "mixed_unsorted": dict(lengths=EDGE_LENGTHS["mixed_unsorted"], causal=False),
    "causal_not_tile_multiples": dict(lengths=[15, 113, 0, 127], causal=True, heads=2, kv_heads=1),
    "every_fifth_empty_causal": dict(lengths=EDGE_LENGTHS["every_fifth_empty"], causal=True),
    "all_empty": dict(lengths=[0, 0, 0], causal=False),
    "one_long": dict(lengths=[2, 1, 300, 3], causal=True, heads=1, kv_heads=1, dim=17),
    "cross_empty_keys": dict(lengths=[4, 0, 7, 3], kv_lengths=[9, 2, 0, 260], causal=False, heads=3, kv_heads=1),
    "head_dim_128": dict(lengths=[20, 9], causal=True, heads=2, kv_heads=2, dim=128),
}


@pytest.mark.parametrize("case", list(BACKEND_CASES))
def test_backend_matches_reference_float64(device_backend, case):
    device, backend = device_backend
    skip_missing(backend)
    c = dict(BACKEND_CASES[case])
    causal, lengths = c.pop("causal"), c.pop("lengths")
    q, k, v, offsets, kv_offsets = make(lengths, device=device, **c)
    kv = None if "kv_lengths" not in c else kv_offsets
    got = forward_backward(q, k, v, offsets, kv, causal, backend)
    want = forward_backward(q, k, v, offsets, kv, causal, "reference")
    for name, g, w in zip(("out", "grad q", "grad k", "grad v"), got, want):
        torch.testing.assert_close(g, w, **F64, msg=lambda m, name=name: f"{case} on {backend}, {name}: {m}")
    if backend != "reference":
        scale = c.get("dim", 8) ** -0.5
        op = (attention_ops._TRITON if backend == "triton" else attention_ops._NATIVE)[0]
        torch.testing.assert_close(op(q, k, v, offsets, kv_offsets, causal, scale)[1],
                                   reference(q, k, v, offsets, kv_offsets, causal, scale)[1], rtol=2e-6, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("causal", [False, True])
def test_low_precision_within_twice_torchs_error(kernel_backend, dtype, causal):
    """Error against a float64 truth at most 2x that of the same computation done by PyTorch
    in `dtype` (the reference run in `dtype`), plus one rounding of the largest result."""
    device, backend = kernel_backend
    skip_missing(backend)
    if backend == "triton" and dtype == torch.bfloat16 and device == "cpu":
        pytest.skip("the Triton interpreter computes bfloat16 dots wrongly (README)")
    q, k, v, offsets, _ = make([37, 0, 80, 5], heads=4, kv_heads=2, dim=32, device=device)
    truth = forward_backward(q, k, v, offsets, None, causal, "reference")
    low = [t.to(dtype) for t in (q, k, v)]
    torch_low = forward_backward(*low, offsets, None, causal, "reference")
    got = forward_backward(*low, offsets, None, causal, backend)
    eps = torch.finfo(dtype).eps
    for name, g, t, w in zip(("out", "grad q", "grad k", "grad v"), got, torch_low, truth):
        assert g.dtype == dtype
        error, torch_error = (g.double() - w).abs().max(), (t.double() - w).abs().max()
        bound = 2 * torch_error + eps * w.abs().max()
        assert error <= bound, f"{name} {dtype} causal={causal} on {backend}: error {error:.3g} > {bound:.3g}"


# float32 on the CPU runs the tiles on oneDNN's brgemm micro-kernel with few shapes
# (csrc/cpu/attention_brgemm.h): query tiles of 16, 32 or 64 rows (partial ones padded), score
# widths rounded up to 16 keys, products over whole 16-key groups plus a loop over the rest,
# keys and values transposed once per (sequence, kv head), and sequences of fewer than 16
# queries on the BLAS tiles. Lengths here cross every one of those edges.
CPU_FLOAT32_CASES = {
    "partial_tiles_and_key_groups": ([5, 0, 37, 64, 65, 1, 17, 33], None, 2, 2, 16, False),
    "causal_many_key_tiles": ([700, 3, 257, 0], None, 2, 1, 16, True),
    "grouped_causal_odd_dim": ([33, 130, 0, 18], None, 4, 2, 17, True),
    "cross_with_empty_keys": ([4, 0, 70, 3, 9, 20], [9, 2, 0, 260, 513, 0], 3, 1, 40, False),
    "causal_cross": ([70, 20, 300, 16], [40, 300, 100, 16], 2, 2, 24, True),
    "one_head_decode_and_prefill": ([1, 1, 200, 2, 15, 16], [300, 17, 200, 0, 40, 600], 1, 1, 32, False),
    "head_dim_128": ([100, 17], None, 2, 2, 128, False),
    "head_dim_1_tiles_of_32_in_place": ([32, 96, 40], None, 2, 1, 1, True),
}


@pytest.mark.parametrize("case", list(CPU_FLOAT32_CASES))
def test_cpu_float32_within_truth_bounds(case):
    """The cpu backend's float32 forward and backward against the float64 truth's propagated
    error bounds (attention_truth.py)."""
    lengths, kv_lengths, heads, kv_heads, head_dim, causal = CPU_FLOAT32_CASES[case]
    q, k, v, grad_out, offsets, kv_offsets = make_case(lengths, kv_lengths or lengths, heads, kv_heads, head_dim,
                                                       torch.float32)
    scale = 1 / math.sqrt(head_dim)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out, lse = torch.ops.padkern.ragged_attention(*leaves, offsets, kv_offsets, causal, scale)
    grads = torch.autograd.grad(out, leaves, grad_out)
    expected = truth(q, k, v, grad_out, offsets, kv_offsets, causal, scale, torch.float32)
    for name, got, (value, bound) in zip(("out", "lse", "grad_q", "grad_k", "grad_v"), (out, lse) + grads, expected):
        truth_assert_within(name, got, value, bound)


@pytest.mark.parametrize("causal", [False, True])
def test_gradcheck(device_backend, causal):
    device, backend = device_backend
    skip_missing(backend)
    q, k, v, offsets, _ = make([3, 0, 4, 1], heads=2, kv_heads=1, dim=3, device=device)
    leaves = [t.requires_grad_() for t in (q, k, v)]
    # fast_mode: one random projection per input; full Jacobians take 20+ s under the Triton interpreter.
    torch.autograd.gradcheck(lambda *t: padkern.ops.ragged_attention(*t, offsets, causal=causal, backend=backend),
                             leaves, fast_mode=True)


def test_no_keys_gives_zero_and_zero_gradients(device_backend):
    device, backend = device_backend
    skip_missing(backend)
    q, k, v, offsets, kv_offsets = make([3, 2, 4, 0], kv_lengths=[0, 5, 0, 2], device=device)
    out, grad_q, grad_k, grad_v = forward_backward(q, k, v, offsets, kv_offsets, False, backend)
    assert out[:3].eq(0).all() and out[5:].eq(0).all()
    assert grad_q[:3].eq(0).all() and grad_q[5:].eq(0).all() and grad_k[5:].eq(0).all() and grad_v[5:].eq(0).all()
    assert all(torch.isfinite(t).all() for t in (out, grad_q, grad_k, grad_v))


def test_nan_row_reaches_only_the_keys_it_sees(device_backend):
    """Causal: query 0's score against key 0 is inf - inf = NaN, so row 0 is NaN, yet key 1 (past
    query 0's mask) gets finite gradients, as the reference gives. (Query 1's gradient is NaN
    there too: its zero weight on key 0 meets k0's infinities, 0 * inf.)"""
    device, backend = device_backend
    skip_missing(backend)
    inf = float("inf")
    q = torch.tensor([[[1.0, 1.0]], [[-1.0, 1.0]]], dtype=torch.float64, device=device)
    k = torch.tensor([[[inf, -inf]], [[0.0, 0.0]]], dtype=torch.float64, device=device)
    v = torch.tensor([[[1.0, 2.0]], [[3.0, -1.0]]], dtype=torch.float64, device=device)
    offsets = torch.tensor([0, 2], device=device)
    got = forward_backward(q, k, v, offsets, None, True, backend)
    want = forward_backward(q, k, v, offsets, None, True, "reference")
    out, grad_q, grad_k, grad_v = got
    assert out[0].isnan().all() and out[1].isfinite().all()
    assert grad_k[1].isfinite().all() and grad_v[1].isfinite().all()
    for name, a, b in zip(("out", "grad_q", "grad_k", "grad_v"), got, want):
        torch.testing.assert_close(a, b, equal_nan=True, msg=lambda m: f"{name} on {backend}: {m}")


def test_cpu_float32_nan_row_reaches_only_what_the_reference_reaches():
    """The float32 brgemm tiles (20 queries, so not the BLAS ones) on non-finite input: query 0's
    score against key 0 is inf - inf = NaN, every other query's is -inf. Which outputs and
    gradients are NaN must be exactly the float64 reference's."""
    inf = float("inf")
    n = 20
    g = torch.Generator().manual_seed(3)
    rows = [torch.tensor([1.0, 1.0])] + [torch.tensor([-1.0, 1.0]) * (1 + i / n) for i in range(1, n)]
    q = torch.stack(rows)[:, None]
    k = torch.randn(n, 1, 2, generator=g, dtype=torch.float64)
    k[0, 0] = torch.tensor([inf, -inf])
    v = torch.randn(n, 1, 2, generator=g, dtype=torch.float64)
    offsets = torch.tensor([0, n])
    want = forward_backward(q.double(), k, v, offsets, None, True, "reference")
    got = forward_backward(q.float(), k.float(), v.float(), offsets, None, True, "cpu")
    assert want[0][0].isnan().all() and want[0][1:].isfinite().all()
    for name, a, b in zip(("out", "grad_q", "grad_k", "grad_v"), got, want):
        assert torch.equal(a.isnan(), b.isnan()), f"{name}: NaN at {a.isnan().nonzero().tolist()}, " \
                                                  f"reference {b.isnan().nonzero().tolist()}"


@pytest.mark.parametrize("poisoned", ["grad_out", "q"])
def test_cpu_float32_non_finite_row_reaches_the_keys_it_sees(poisoned):
    """Causal over 300 keys from 20 queries (the op's causal cross-attention; the public API
    allows causal self-attention only, whose tiles end where their keys do): query 3's dO (or
    q) holds inf. Its tile's score width is rounded up to 32 keys, 12 of them real keys it does
    not see; the float32 brgemm tiles must leave NaN exactly where the float64 BLAS tiles do,
    not in those 12."""
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(n, 1, 8, generator=g, dtype=torch.float64) for n in (20, 300, 300))
    grad = torch.randn(20, 1, 8, generator=g, dtype=torch.float64)
    (grad if poisoned == "grad_out" else q)[3, 0, 0] = float("inf")
    offsets, kv_offsets = torch.tensor([0, 20]), torch.tensor([0, 300])

    def run(dtype):
        leaves = [t.to(dtype).requires_grad_() for t in (q, k, v)]
        out, _ = torch.ops.padkern.ragged_attention(*leaves, offsets, kv_offsets, True, 8 ** -0.5)
        return [out.detach(), *torch.autograd.grad(out, leaves, grad.to(dtype))]

    for name, got, want in zip(("out", "grad q", "grad k", "grad v"), run(torch.float32), run(torch.float64)):
        rows_of = lambda t: t.isnan().nonzero()[:, 0].unique().tolist()  # noqa: E731
        assert torch.equal(got.isnan(), want.isnan()), f"{name}: NaN in rows {rows_of(got)}, float64 {rows_of(want)}"


@pytest.mark.parametrize("causal", [False, True])
def test_cpu_float32_neighbours_infinities_stay_out(causal):
    """Sequences of 21 and 37 keys (a last key group of 5) beside sequences whose keys and values
    are all infinite: the float32 brgemm tiles take their last few keys from a zero-padded copy,
    so no product over a tile's 16-key group reaches the next sequence's rows (a zero weight
    there would meet inf, 0 * inf = NaN). NaN lies exactly where the float64 reference puts it,
    in the poisoned sequences only, and the clean sequences' results are bit for bit those of a
    batch without the poisoned ones (each sequence's tiles are computed alike in any batch)."""
    g = torch.Generator().manual_seed(5)
    # A poisoned sequence with a last group of 15 keys before a clean one with 5 (a copy that kept
    # the previous group's rows would keep infinities), and a clean one last, against the end.
    lengths = [21, 31, 37, 20, 29]
    offsets = offsets_of(lengths, "cpu")
    q, k, v, grad = (torch.randn(sum(lengths), 2, 16, generator=g, dtype=torch.float64) for _ in range(4))
    for b in (1, 3):
        k[offsets[b]:offsets[b + 1]] = float("inf")
        v[offsets[b]:offsets[b + 1]] = -float("inf")

    def run(dtype, rows=slice(None), offsets=offsets):
        leaves = [t[rows].to(dtype).requires_grad_() for t in (q, k, v)]
        out, _ = torch.ops.padkern.ragged_attention(*leaves, offsets, offsets, causal, 0.25)
        return [out.detach(), *torch.autograd.grad(out, leaves, grad[rows].to(dtype))]

    clean = torch.cat([torch.arange(offsets[b], offsets[b + 1]) for b in (0, 2, 4)])
    alone = run(torch.float32, clean, offsets_of([lengths[0], lengths[2], lengths[4]], "cpu"))
    for name, got, want, got_alone in zip(("out", "grad q", "grad k", "grad v"), run(torch.float32),
                                          run(torch.float64), alone):
        assert want[clean].isfinite().all()
        assert torch.equal(got.isnan(), want.isnan()), f"{name}: NaN at {got.isnan().nonzero()[:, 0].unique().tolist()}"
        assert torch.equal(got[clean], got_alone), name


@pytest.mark.parametrize("causal", [False, True])
def test_cpu_float32_query_seeing_only_minus_infinity(causal):
    """Query 3 holds -inf in a feature where every key is positive: each of its scores is -inf,
    so it has no weight (out 0, as the float64 reference gives), yet its scores against the zero
    keys that round a tile up to 16 are -inf * 0 = NaN. The float32 brgemm tiles must zero them
    before the weighted sum over the last key group."""
    g = torch.Generator().manual_seed(6)
    q, k, v, grad = (torch.randn(21, 1, 4, generator=g, dtype=torch.float64) for _ in range(4))
    k[:, 0, 0] = k[:, 0, 0].abs() + 0.5
    q[3, 0, 0] = -float("inf")
    offsets = torch.tensor([0, 21])

    def run(dtype):
        leaves = [t.to(dtype).requires_grad_() for t in (q, k, v)]
        out, _ = torch.ops.padkern.ragged_attention(*leaves, offsets, offsets, causal, 0.5)
        return [out.detach(), *torch.autograd.grad(out, leaves, grad.to(dtype))]

    got, want = run(torch.float32), run(torch.float64)
    assert want[0][3].eq(0).all()
    for name, a, b in zip(("out", "grad q", "grad k", "grad v"), got, want):
        assert torch.equal(a.isnan(), b.isnan()), f"{name}: NaN at {a.isnan().nonzero()[:, 0].unique().tolist()}, " \
                                                  f"float64 {b.isnan().nonzero()[:, 0].unique().tolist()}"
    assert got[0][3].eq(0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_keys_far_below_the_peak(kernel_backend, dtype):
    """Keys from 0 to twice the exp floor's reach (87 in float32, 708 in float64) below their
    row's peak, in a sequence of 24 queries and one of 5 (in float32, the CPU's brgemm and
    BLAS tiles):
    every output within the truth's bounds, which allow for an exp that flushes to zero; on
    the CPU, a key past host_exp's floor weighs exactly nothing and gets no gradient."""
    device, backend = kernel_backend
    skip_missing(backend)
    floor = 87.0 if dtype == torch.float32 else 708.0
    lengths = [24, 5]
    q, k, v, grad_out, offsets, kv_offsets = make_case(lengths, lengths, 1, 1, 4, torch.float64, seed=5)
    q[:, :, 0], q[:, :, 1:] = 1.0, q[:, :, 1:] / 10
    k[:, :, 1:] /= 10
    gaps = torch.cat([torch.linspace(0, 2 * floor, n, dtype=torch.float64) for n in lengths])
    k[:, 0, 0] = -gaps  # the first key of each sequence is every row's peak
    q, k, v, grad_out = (t.to(dtype) for t in (q, k, v, grad_out))
    leaves = [t.to(device).requires_grad_() for t in (q, k, v)]
    out = padkern.ops.ragged_attention(*leaves, offsets.to(device), scale=1.0, backend=backend)
    grads = torch.autograd.grad(out, leaves, grad_out.to(device))
    expected = truth(q, k, v, grad_out, offsets, kv_offsets, False, 1.0, dtype)
    for name, got, (value, bound) in zip(("out", "grad_q", "grad_k", "grad_v"), (out,) + grads,
                                         expected[:1] + expected[2:]):
        truth_assert_within(name, got, value, bound)
    if backend == "cpu":
        far = gaps > floor + 1  # past the floor for every query (their scores differ by < 1)
        assert far.any() and (grads[1][far] == 0).all() and (grads[2][far] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("mode", ["cross", "causal"])
def test_every_output_written(kernel_backend, dtype, mode):
    # The CPU backward writes each gradient row once, without zeroing first: sequences of 16
    # queries or more take the float32 brgemm tiles (70 queries over 300 keys: two query tiles,
    # two key blocks, the last partial; 20 queries over none), shorter ones and float64 the BLAS
    # tiles; the keys of an empty query sequence (cross) get 0.
    device, backend = kernel_backend
    skip_missing(backend)
    kv_lengths = [2, 4, 300, 0, 0] if mode == "cross" else None
    causal = mode == "causal"
    q, k, v, offsets, kv_offsets = make([5, 0, 70, 3, 20], kv_lengths=kv_lengths, dtype=dtype, device=device)
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64).to(q)
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]
    with nan_filled_allocations():
        out = padkern.ops.ragged_attention(*leaves, offsets, kv_offsets=None if causal else kv_offsets,
                                           causal=causal, backend=backend)
        grads = torch.autograd.grad(out, leaves, grad_out)
    expected = truth(q, k, v, grad_out, offsets, kv_offsets, causal, q.shape[-1] ** -0.5, dtype)
    for name, got, (value, bound) in zip(("out", "grad_q", "grad_k", "grad_v"), (out,) + grads,
                                         expected[:1] + expected[2:]):
        truth_assert_within(name, got, value, bound)


def test_double_backward_raises(kernel_backend):
    device, backend = kernel_backend
    skip_missing(backend)
    q, k, v, offsets, _ = make([3, 2], device=device)
    q.requires_grad_()
    out = padkern.ops.ragged_attention(q, k, v, offsets, backend=backend)
    (grad,) = torch.autograd.grad(out.sum(), q, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        grad.sum().backward()


@settings(max_examples=20, deadline=None)
@given(lengths=st.lists(st.integers(0, 40), min_size=1, max_size=5), kv_heads=st.integers(1, 2),
       group=st.integers(1, 3), dim=st.integers(1, 9), mode=st.sampled_from(["self", "causal", "cross"]),
       seed=st.integers(0, 2 ** 16))
def test_fuzz(lengths, kv_heads, group, dim, mode, seed):
    from conftest import DEVICE_BACKENDS

    kv_lengths = [(n * 7 + seed) % 23 for n in lengths] if mode == "cross" else None
    for device, backend in DEVICE_BACKENDS:
        if backend == "triton" and attention_ops._TRITON is None:
            continue
        q, k, v, offsets, kv_offsets = make(lengths, kv_heads * group, kv_heads, dim, kv_lengths, device=device,
                                            seed=seed)
        kv = kv_offsets if mode == "cross" else None
        got = forward_backward(q, k, v, offsets, kv, mode == "causal", backend)
        want = forward_backward(q, k, v, offsets, kv, mode == "causal", "reference")
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, **F64)


# ----- bad input --------------------------------------------------------------------------------
def _bad(**change):
    q, k, v, offsets, _ = make([3, 4])
    args = dict(q=q, k=k, v=v, offsets=offsets)
    kwargs = {key: change.pop(key) for key in ("kv_offsets", "causal", "scale") if key in change}
    args.update(change)
    return lambda: padkern.ops.ragged_attention(args["q"], args["k"], args["v"], args["offsets"], **kwargs)


@pytest.mark.parametrize("change, error, message", [
    (dict(q=torch.zeros(7, 8)), ValueError, "q must be 3-D"),
    (dict(k=torch.zeros(7, 2, 7, dtype=torch.float64)), ValueError, "k and v must have the same shape"),
    (dict(k=torch.zeros(7, 3, 8, dtype=torch.float64), v=torch.zeros(7, 3, 8, dtype=torch.float64)), ValueError,
     r"q's heads \(4\) must be a multiple of k's and v's heads \(3\)"),
    (dict(k=torch.zeros(7, 2, 7, dtype=torch.float64), v=torch.zeros(7, 2, 7, dtype=torch.float64)), ValueError,
     "must have q's head_dim 8"),
    (dict(v=torch.zeros(7, 2, 8, dtype=torch.float32)), TypeError, "v must have q's dtype"),
    (dict(q=torch.zeros(7, 4, 8, dtype=torch.int64)), TypeError, "q must be floating point"),
    (dict(k=torch.zeros(8, 2, 8, dtype=torch.float64), v=torch.zeros(8, 2, 8, dtype=torch.float64)), ValueError,
     "self-attention .* needs k and v with q's 7 tokens"),
    (dict(kv_offsets=torch.tensor([0, 7]), causal=True), ValueError, "causal=True needs self-attention"),
    (dict(kv_offsets=torch.tensor([0, 3, 5, 7])), ValueError, "kv_offsets must have offsets' B\\+1 = 3 entries"),
    (dict(kv_offsets=torch.tensor([0, 3, 6])), ValueError, r"kv_offsets\[-1\] must equal"),
    (dict(offsets=torch.tensor([0, 5, 3])), ValueError, "offsets must be non-decreasing"),
    (dict(offsets=torch.tensor([0, 3.0, 7])), TypeError, "offsets must be int64 or int32"),
])
def test_bad_input(change, error, message):
    with pytest.raises(error, match=message):
        _bad(**change)()


def test_gpu_head_dim_and_head_count_limits():
    """Past D=256 no GPU kernel backend fits its tiles, and past 65535 query heads none fits its
    grid: auto runs the reference there, an explicit kernel backend is refused by name
    (tests/test_gpu_attention.py runs both on a GPU)."""
    from padkern.ops.attention import GPU_MAX_HEAD_DIM, GPU_MAX_HEADS, gpu_limits_backend

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert gpu_limits_backend("cuda", None, cuda, GPU_MAX_HEADS, GPU_MAX_HEAD_DIM) == "cuda"
    assert gpu_limits_backend("triton", None, cuda, 8, 257) == "reference"
    assert gpu_limits_backend("cuda", None, cuda, 65536, 64) == "reference"
    assert gpu_limits_backend("triton", "triton", cpu, 65536, 257) == "triton"  # the interpreter has no limit
    for name in ("cuda", "triton"):
        with pytest.raises(ValueError, match=f"backend '{name}' takes head_dim up to 256 on a GPU, got 257"):
            gpu_limits_backend(name, name, cuda, 8, 257)
        with pytest.raises(ValueError, match=f"backend '{name}' takes up to 65535 query heads on a GPU, got 65536"):
            gpu_limits_backend(name, name, cuda, 65536, 64)
    with padkern.use_backend("triton"), pytest.raises(ValueError, match="backend='reference' takes any"):
        gpu_limits_backend("triton", None, cuda, 8, 300)


def test_native_op_checks_layout():
    q, k, v, offsets, _ = make([3, 4])
    with pytest.raises(RuntimeError, match="row-major"):
        torch.ops.padkern.ragged_attention(q.transpose(0, 1).contiguous().transpose(0, 1), k, v, offsets, offsets,
                                           False, 1.0)
    with pytest.raises(RuntimeError, match=r"offsets\[-1\] must equal"):
        torch.ops.padkern.ragged_attention(q, k, v, offsets, torch.tensor([0, 3, 9]), False, 1.0)


# ----- registration -----------------------------------------------------------------------------
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(kernel_backend, requires_grad):
    device, backend = kernel_backend
    skip_missing(backend)
    ops = attention_ops._TRITON if backend == "triton" else attention_ops._NATIVE
    q, k, v, offsets, kv_offsets = make([3, 0, 5], kv_lengths=[2, 4, 0], device=device)
    for t in (q, k, v):
        t.requires_grad_(requires_grad)
    torch.library.opcheck(ops[0], (q, k, v, offsets, kv_offsets, False, 0.5))
    out, lse = ops[0](q, k, v, offsets, kv_offsets, False, 0.5)
    torch.library.opcheck(ops[1], (torch.ones_like(out).detach(), q.detach(), k.detach(), v.detach(), out.detach(),
                                   lse, offsets, kv_offsets, False, 0.5))


def test_compile_fullgraph():
    q, k, v, offsets, _ = make([3, 0, 5], dtype=torch.float32)
    q.requires_grad_()
    fn = torch.compile(lambda q, k, v, o: padkern.ops.ragged_attention(q, k, v, o, causal=True), fullgraph=True)
    out = fn(q, k, v, offsets)
    (grad,) = torch.autograd.grad(out.sum(), q)
    eager = padkern.ops.ragged_attention(q, k, v, offsets, causal=True)
    torch.testing.assert_close(out, eager)
    torch.testing.assert_close(grad, torch.autograd.grad(eager.sum(), q)[0])


def test_autocast_runs_in_lower_precision(kernel_backend):
    """As F.scaled_dot_product_attention under autocast: computed in the autocast dtype."""
    device, backend = kernel_backend
    skip_missing(backend)
    # The Triton interpreter computes bfloat16 dots wrongly (README): float16 there.
    low = torch.float16 if (backend, device) == ("triton", "cpu") else torch.bfloat16
    q, k, v, offsets, _ = make([4, 6], dtype=torch.float32, device=device)
    with torch.autocast(device, dtype=low):
        out = padkern.ops.ragged_attention(q, k.to(low), v, offsets, backend=backend)
    want = padkern.ops.ragged_attention(*(t.to(low) for t in (q, k, v)), offsets, backend="reference")
    assert out.dtype == low
    torch.testing.assert_close(out.float(), want.float(), rtol=2e-2, atol=2e-2)


def test_cpu_without_blas_matches_reference():
    """The CPU kernel's loop GEMMs (a torch without a BLAS; PADKERN_CPU_BLAS=0 forces them)."""
    code = ("import torch, padkern;"
            "from test_attention import make, forward_backward;"
            "q, k, v, o, ko = make([5, 0, 70, 3], kv_lengths=[2, 4, 0, 300]);"
            "got = forward_backward(q, k, v, o, ko, False, 'cpu');"
            "want = forward_backward(q, k, v, o, ko, False, 'reference');"
            "[torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12) for g, w in zip(got, want)];"
            "q, k, v, o, _ = make([40, 9]);"
            "got = forward_backward(q, k, v, o, None, True, 'cpu');"
            "want = forward_backward(q, k, v, o, None, True, 'reference');"
            "[torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12) for g, w in zip(got, want)]")
    env = dict(os.environ, PADKERN_CPU_BLAS="0", PYTHONPATH=os.pathsep.join([os.path.dirname(__file__)] + sys.path))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
