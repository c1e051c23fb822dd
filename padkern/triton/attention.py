"""Triton ragged attention, FlashAttention-2's varlen scheme, registered as
``padkern::ragged_attention_triton`` and ``padkern::ragged_attention_backward_triton``
(the signatures of the native ``ragged_attention`` / ``ragged_attention_backward``).

Shapes: q, out [L, Hq, D]; k, v [Lk, Hkv, D], row-major; offsets index q and
kv_offsets index k, v, both [B+1]. Query head h reads kv head h // (Hq // Hkv).
lse [L, Hq] float32: each row's log-sum-exp of scaled scores (-inf, out 0, with no key).

Schedule: as the grouped matmuls (linear.py), a prefix over per-sequence tile counts
built on the device gives every program its (sequence, tile) by binary search; the grid
is cdiv(rows, BLOCK) + B tiles per head, an upper bound known without reading the
offsets on the host, and programs past the last tile exit at once. So no tile lies in
padding or across a sequence boundary, and a causal tile never visits keys above its
diagonal. Scores live in registers only (online softmax: running max and sum).

Backward recomputes the scores from lse, as FlashAttention-2: first dQ per query tile
(which also writes delta = rowsum(dO * O)), then dK/dV per key tile, summing over the
query heads that share the kv head. Each output element has one writer, so no atomics
and run-to-run bitwise equality.
"""
import contextlib
import functools
import os

import torch
from torch._subclasses.fake_tensor import is_fake
import triton
import triton.language as tl
from .._backend import triton_interpreted
from . import guards
from .guards import sequence_bounds
from .linear import _find_sequence, _precision, accumulator, tile_starts
from .registration import launchable, triton_kernel_op

# Shared memory per block: sm_80 allows 166,912 B (sm_90 232,448 B), and a config over
# it compiles but fails at launch. What a program keeps there (triton 3.8): its outer
# tiles (forward: Q; dQ: Q and dO; dK/dV: K and V), the inner tiles it streams (K and V,
# or Q and dO) in stages - 1 buffers each, and layout conversions. So tiles are sized by
# the bytes of a row of BLOCK_D elements, and a config is kept where those tiles take at
# most 128 KB: the conversions added up to 17 KB in every config compiled for sm_80 and
# sm_90 at D <= 256 (the largest, float32 dK/dV at D=128 with 64-row inner tiles, uses
# 147,968 B). With fixed 64-row tiles float64 at D=128 needed 205-656 KB, and the
# untuned bfloat16 D=256 forward 172 KB.
SHARED_BUDGET = 128 * 1024


def _tile_rows(block_d: int, element_size: int) -> int:
    """Outer tile height (BLOCK_Q, BLOCK_KV): 64 rows, fewer where a 64-row float32 or
    float64 accumulator tile would pass 32 KB (D=256, or float64 at D=128), as dK/dV
    holds two: at bfloat16 D=256, 64 rows in 4 warps spilled 5,192 B per thread. The grid
    and the prefix over tile counts are built with the same value. Under the interpreter
    16 rows keep CI's tiny sequences multi-tile."""
    if triton_interpreted():
        return 16
    accumulator_size = 8 if element_size == 8 else 4
    return max(16, min(64, 32 * 1024 // (block_d * accumulator_size)))


def _configs(inner: str, options):
    # One config under the interpreter or with PADKERN_TRITON_AUTOTUNE=0 (test runs on a
    # GPU: every new shape would otherwise compile and time each config).
    if triton_interpreted():
        return [triton.Config({inner: 16}, num_warps=4)]
    if os.environ.get("PADKERN_TRITON_AUTOTUNE", "1") == "0":
        options = options[:1]
    return [triton.Config({inner: b}, num_warps=w, num_stages=s) for b, w, s in options]


# (inner tile, warps, stages) a GPU autotunes over, in order of preference: the first one
# that fits is the untuned choice. The last ones are small enough for float64 at D=256.
FORWARD_CONFIGS = ((64, 4, 3), (32, 4, 3), (128, 8, 3), (64, 4, 2), (32, 4, 2), (16, 4, 2))
DQ_CONFIGS = ((32, 4, 2), (64, 4, 2), (64, 8, 3), (16, 4, 2))
DKV_CONFIGS = ((32, 4, 2), (64, 8, 2), (16, 4, 3), (16, 4, 2))


def _fitting(options, outer_tiles: int, rows: int, row_bytes: int):
    """The options whose tiles fit SHARED_BUDGET; past D=256 none may, and the smallest
    one is left to fail at launch."""
    fitting = tuple(option for option in options
                    if (outer_tiles * rows + 2 * (option[2] - 1) * option[0]) * row_bytes <= SHARED_BUDGET)
    return fitting or options[-1:]


@triton.jit
def _scaled(s, scale_hi, scale_lo, ACC: tl.constexpr):
    # A float argument arrives as float32: float64 scores take the scale as hi + lo (48
    # bits of it), the others multiply by hi alone.
    if ACC == tl.float64:
        s = s * scale_hi + s * scale_lo
    else:
        s = s * scale_hi
    return s


@triton.jit
def _forward_tile(acc, m_i, l_i, b_q, p_k, p_v, n0, o_m, kv_len, stride_kv, o_d, m_d, scale_hi, scale_lo,
                  MASK: tl.constexpr, CAUSAL: tl.constexpr, LSE_ONLY: tl.constexpr, PRECISION: tl.constexpr,
                  ACC: tl.constexpr, BLOCK_N: tl.constexpr):
    """One key tile folded into the running max m_i, sum l_i and output acc. MASK: the
    tile holds keys past the sequence or (CAUSAL) above the diagonal."""
    o_n = n0 + tl.arange(0, BLOCK_N).to(tl.int64)
    m_kv = (o_n < kv_len)[:, None] & m_d[None, :]
    b_k = tl.load(p_k + o_n[:, None] * stride_kv + o_d[None, :], mask=m_kv, other=0.0)
    s = _scaled(tl.dot(b_q, tl.trans(b_k), input_precision=PRECISION, out_dtype=ACC), scale_hi, scale_lo, ACC)
    if MASK:
        keep = (o_n < kv_len)[None, :]
        if CAUSAL:
            keep = keep & (o_n[None, :] <= o_m[:, None])
        s = tl.where(keep, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    # A row with no key yet keeps max -inf; exponentiate against 0 so it adds 0, not NaN.
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    b_p = tl.exp(s - m_safe[:, None])
    alpha = tl.exp(m_i - m_safe)
    l_i = l_i * alpha + tl.sum(b_p, 1)
    if not LSE_ONLY:
        b_v = tl.load(p_v + o_n[:, None] * stride_kv + o_d[None, :], mask=m_kv, other=0.0)
        acc = acc * alpha[:, None] + tl.dot(b_p.to(b_v.dtype), b_v, input_precision=PRECISION, out_dtype=ACC)
    return acc, m_new, l_i


@triton.jit
def _forward_kernel(
    p_q, p_k, p_v, p_out, p_lse, p_offsets, p_kv_offsets, p_starts, B, L, LK, D, HQ, stride_q, stride_kv,
    scale_hi, scale_lo,
    GROUP: tl.constexpr, CAUSAL: tl.constexpr, LSE_ONLY: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """LSE_ONLY: write only lse, in p_lse's dtype (float64 backward recomputes it exactly)."""
    i_tile = tl.program_id(0)
    i_h = tl.program_id(1)
    if i_tile < tl.load(p_starts + B):
        i_b = _find_sequence(p_starts, B, i_tile)
        bos, eos = sequence_bounds(p_offsets, i_b, L)
        kv_bos, kv_eos = sequence_bounds(p_kv_offsets, i_b, LK)
        kv_len = kv_eos - kv_bos
        start_m = (i_tile - tl.load(p_starts + i_b)) * BLOCK_M
        o_m = start_m + tl.arange(0, BLOCK_M).to(tl.int64)
        m_m = o_m < eos - bos
        o_d = tl.arange(0, BLOCK_D)
        m_d = o_d < D
        rows = (bos + o_m) * stride_q + i_h * D
        b_q = tl.load(p_q + rows[:, None] + o_d[None, :], mask=m_m[:, None] & m_d[None, :], other=0.0)
        p_k_h = p_k + kv_bos * stride_kv + (i_h // GROUP) * D
        p_v_h = p_v + kv_bos * stride_kv + (i_h // GROUP) * D
        acc = tl.zeros((BLOCK_M, BLOCK_D), ACC)
        m_i = tl.full((BLOCK_M,), float("-inf"), ACC)
        l_i = tl.zeros((BLOCK_M,), ACC)
        # Keys [0, full) need no mask; [full, hi) straddle the end or the diagonal; keys
        # past hi are never visited.
        hi = kv_len
        full = (kv_len // BLOCK_N) * BLOCK_N
        if CAUSAL:
            hi = tl.minimum(hi, start_m + BLOCK_M)
            full = tl.minimum(full, ((start_m + 1) // BLOCK_N) * BLOCK_N)
        for n0 in range(0, full, BLOCK_N):
            acc, m_i, l_i = _forward_tile(acc, m_i, l_i, b_q, p_k_h, p_v_h, n0, o_m, kv_len, stride_kv, o_d, m_d,
                                          scale_hi, scale_lo, False, CAUSAL, LSE_ONLY, PRECISION, ACC, BLOCK_N)
        for n0 in range(full, hi, BLOCK_N):
            acc, m_i, l_i = _forward_tile(acc, m_i, l_i, b_q, p_k_h, p_v_h, n0, o_m, kv_len, stride_kv, o_d, m_d,
                                          scale_hi, scale_lo, True, CAUSAL, LSE_ONLY, PRECISION, ACC, BLOCK_N)
        seen = l_i > 0.0
        lse = tl.where(seen, m_i + tl.log(tl.where(seen, l_i, 1.0)), float("-inf"))
        tl.store(p_lse + (bos + o_m) * HQ + i_h, lse.to(p_lse.dtype.element_ty), mask=m_m)
        if not LSE_ONLY:
            # A query with no key gives 0 (l_i = 0), never 0/0.
            b_o = acc / tl.where(seen, l_i, 1.0)[:, None]
            tl.store(p_out + rows[:, None] + o_d[None, :], b_o.to(p_out.dtype.element_ty),
                     mask=m_m[:, None] & m_d[None, :])


@triton.jit
def _backward_dq_kernel(
    p_q, p_k, p_v, p_out, p_do, p_lse, p_delta, p_dq, p_offsets, p_kv_offsets, p_starts, B, L, LK, D, HQ,
    stride_q, stride_kv, scale_hi, scale_lo,
    GROUP: tl.constexpr, CAUSAL: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """dQ of one query tile and head; writes delta = rowsum(dO * O) for the dK/dV pass."""
    i_tile = tl.program_id(0)
    i_h = tl.program_id(1)
    if i_tile < tl.load(p_starts + B):
        i_b = _find_sequence(p_starts, B, i_tile)
        bos, eos = sequence_bounds(p_offsets, i_b, L)
        kv_bos, kv_eos = sequence_bounds(p_kv_offsets, i_b, LK)
        kv_len = kv_eos - kv_bos
        start_m = (i_tile - tl.load(p_starts + i_b)) * BLOCK_M
        o_m = start_m + tl.arange(0, BLOCK_M).to(tl.int64)
        m_m = o_m < eos - bos
        o_d = tl.arange(0, BLOCK_D)
        m_d = o_d < D
        m_rows = m_m[:, None] & m_d[None, :]
        rows = (bos + o_m) * stride_q + i_h * D
        b_q = tl.load(p_q + rows[:, None] + o_d[None, :], mask=m_rows, other=0.0)
        b_do = tl.load(p_do + rows[:, None] + o_d[None, :], mask=m_rows, other=0.0)
        b_o = tl.load(p_out + rows[:, None] + o_d[None, :], mask=m_rows, other=0.0)
        delta = tl.sum(b_do.to(ACC) * b_o.to(ACC), 1)
        tl.store(p_delta + (bos + o_m) * HQ + i_h, delta, mask=m_m)
        lse = tl.load(p_lse + (bos + o_m) * HQ + i_h, mask=m_m, other=0.0).to(ACC)
        # A row without keys (lse -inf) has no probabilities: exp(s - inf) = 0.
        lse = tl.where(lse == float("-inf"), float("inf"), lse)
        p_k_h = p_k + kv_bos * stride_kv + (i_h // GROUP) * D
        p_v_h = p_v + kv_bos * stride_kv + (i_h // GROUP) * D
        hi = kv_len
        if CAUSAL:
            hi = tl.minimum(hi, start_m + BLOCK_M)
        b_dq = tl.zeros((BLOCK_M, BLOCK_D), ACC)
        for n0 in range(0, hi, BLOCK_N):
            o_n = n0 + tl.arange(0, BLOCK_N).to(tl.int64)
            m_kv = (o_n < kv_len)[:, None] & m_d[None, :]
            b_k = tl.load(p_k_h + o_n[:, None] * stride_kv + o_d[None, :], mask=m_kv, other=0.0)
            b_v = tl.load(p_v_h + o_n[:, None] * stride_kv + o_d[None, :], mask=m_kv, other=0.0)
            s = _scaled(tl.dot(b_q, tl.trans(b_k), input_precision=PRECISION, out_dtype=ACC), scale_hi, scale_lo, ACC)
            keep = (o_n < kv_len)[None, :]
            if CAUSAL:
                keep = keep & (o_n[None, :] <= o_m[:, None])
            b_p = tl.where(keep, tl.exp(s - lse[:, None]), 0.0)
            b_dp = tl.dot(b_do, tl.trans(b_v), input_precision=PRECISION, out_dtype=ACC)
            # A masked score (p = 0) gets no gradient, even in a NaN row (delta NaN).
            b_ds = tl.where(b_p == 0.0, 0.0, b_p * (b_dp - delta[:, None]))
            b_dq = tl.dot(b_ds.to(b_k.dtype), b_k, b_dq, input_precision=PRECISION, out_dtype=ACC)
        b_dq = _scaled(b_dq, scale_hi, scale_lo, ACC)
        tl.store(p_dq + rows[:, None] + o_d[None, :], b_dq.to(p_dq.dtype.element_ty), mask=m_rows)


@triton.jit
def _backward_dkv_kernel(
    p_q, p_k, p_v, p_do, p_lse, p_delta, p_dk, p_dv, p_offsets, p_kv_offsets, p_kv_starts, B, L, LK, D, HQ,
    stride_q, stride_kv, scale_hi, scale_lo,
    GROUP: tl.constexpr, CAUSAL: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """dK, dV of one key tile and kv head, summed over the GROUP query heads reading it."""
    i_tile = tl.program_id(0)
    i_hk = tl.program_id(1)
    if i_tile < tl.load(p_kv_starts + B):
        i_b = _find_sequence(p_kv_starts, B, i_tile)
        bos, eos = sequence_bounds(p_offsets, i_b, L)
        kv_bos, kv_eos = sequence_bounds(p_kv_offsets, i_b, LK)
        q_len = eos - bos
        start_n = (i_tile - tl.load(p_kv_starts + i_b)) * BLOCK_N
        o_n = start_n + tl.arange(0, BLOCK_N).to(tl.int64)
        m_n = o_n < kv_eos - kv_bos
        o_d = tl.arange(0, BLOCK_D)
        m_d = o_d < D
        m_kv = m_n[:, None] & m_d[None, :]
        kv_rows = (kv_bos + o_n) * stride_kv + i_hk * D
        b_k = tl.load(p_k + kv_rows[:, None] + o_d[None, :], mask=m_kv, other=0.0)
        b_v = tl.load(p_v + kv_rows[:, None] + o_d[None, :], mask=m_kv, other=0.0)
        b_dk = tl.zeros((BLOCK_N, BLOCK_D), ACC)
        b_dv = tl.zeros((BLOCK_N, BLOCK_D), ACC)
        # Causal: queries before this tile's first key never see it.
        lo = tl.cast(0, tl.int64)
        if CAUSAL:
            lo = (start_n // BLOCK_M) * BLOCK_M
        for g in range(GROUP):
            i_h = i_hk * GROUP + g
            for m0 in range(lo, q_len, BLOCK_M):
                o_m = m0 + tl.arange(0, BLOCK_M).to(tl.int64)
                m_m = o_m < q_len
                rows = (bos + o_m) * stride_q + i_h * D
                m_rows = m_m[:, None] & m_d[None, :]
                b_q = tl.load(p_q + rows[:, None] + o_d[None, :], mask=m_rows, other=0.0)
                b_do = tl.load(p_do + rows[:, None] + o_d[None, :], mask=m_rows, other=0.0)
                lse = tl.load(p_lse + (bos + o_m) * HQ + i_h, mask=m_m, other=0.0).to(ACC)
                lse = tl.where(lse == float("-inf"), float("inf"), lse)
                delta = tl.load(p_delta + (bos + o_m) * HQ + i_h, mask=m_m, other=0.0)
                # Transposed scores [keys, queries]: dK and dV are sums over queries.
                s_t = _scaled(tl.dot(b_k, tl.trans(b_q), input_precision=PRECISION, out_dtype=ACC), scale_hi,
                              scale_lo, ACC)
                keep = m_n[:, None] & m_m[None, :]
                if CAUSAL:
                    keep = keep & (o_m[None, :] >= o_n[:, None])
                b_pt = tl.where(keep, tl.exp(s_t - lse[None, :]), 0.0)
                b_dv = tl.dot(b_pt.to(b_do.dtype), b_do, b_dv, input_precision=PRECISION, out_dtype=ACC)
                b_dpt = tl.dot(b_v, tl.trans(b_do), input_precision=PRECISION, out_dtype=ACC)
                b_dst = tl.where(b_pt == 0.0, 0.0, b_pt * (b_dpt - delta[None, :]))
                b_dk = tl.dot(b_dst.to(b_q.dtype), b_q, b_dk, input_precision=PRECISION, out_dtype=ACC)
        b_dk = _scaled(b_dk, scale_hi, scale_lo, ACC)
        tl.store(p_dk + kv_rows[:, None] + o_d[None, :], b_dk.to(p_dk.dtype.element_ty), mask=m_kv)
        tl.store(p_dv + kv_rows[:, None] + o_d[None, :], b_dv.to(p_dv.dtype.element_ty), mask=m_kv)


# kernel: (its inner tile, tiles of outer rows it keeps in shared memory, configs, tuning key)
_TUNING = {
    _forward_kernel: ("BLOCK_N", 1, FORWARD_CONFIGS, ["D", "CAUSAL", "LSE_ONLY"]),
    _backward_dq_kernel: ("BLOCK_N", 2, DQ_CONFIGS, ["D", "CAUSAL"]),
    _backward_dkv_kernel: ("BLOCK_M", 2, DKV_CONFIGS, ["D", "CAUSAL"]),
}


@functools.cache
def _autotuned(kernel, block_d: int, element_size: int):
    """``kernel`` autotuned over the configs that fit shared memory at this row size."""
    inner, outer_tiles, options, key = _TUNING[kernel]
    if element_size >= 4 and block_d >= 64 or kernel is _backward_dkv_kernel and block_d >= 128:
        # Registers: float32 and float64 dots run as FMA loops holding operand rows, and
        # in 4 warps spilled up to 13,888 B per thread (float32 dQ at D=256; the forward
        # 10,496 B at D=64), in 8 at most 2,008 B (float64 dK/dV at D=64; float32 dK/dV
        # at D >= 128 about 1 KB, the rest under 400 B). dK/dV's two float32 accumulator
        # tiles spill 168 B in 4 warps at bfloat16 D=128 too.
        options = tuple(dict.fromkeys((b, max(w, 8), s) for b, w, s in options))
    fitting = _fitting(options, outer_tiles, _tile_rows(block_d, element_size), block_d * element_size)
    return triton.autotune(configs=_configs(inner, fitting), key=key)(kernel)


def _device(q):
    """Triton launches on the current CUDA device, so make it q's. Not while torch.compile
    traces the op on fake tensors: that launches nothing (the compiled code guards its own
    devices), and switching would initialise CUDA at trace time."""
    if not q.is_cuda or is_fake(q):
        return contextlib.nullcontext()
    return torch.cuda.device(q.device)


def _check(op: str, q, k, v, offsets, kv_offsets) -> None:
    device = q.device
    for name, tensor in (("q", q), ("k", k), ("v", v)):
        guards.check_element_type(op, name, tensor)
        if tensor.dim() != 3:
            raise RuntimeError(f"{op}: {name} must be 3-D ([L, H, D]), got shape {tuple(tensor.shape)}")
    guards.check_dense(op, "q", q, device)
    heads, kv_heads, head_dim = q.shape[1], k.shape[1], q.shape[2]
    if kv_heads == 0 or heads % kv_heads != 0 or k.shape[2] != head_dim:
        raise RuntimeError(f"{op}: k must be [Lk, Hkv, D={head_dim}] with Hq={heads} a multiple of Hkv, "
                           f"got shape {tuple(k.shape)}")
    guards.check_dense(op, "k", k, device, dtype=q.dtype)
    guards.check_dense(op, "v", v, device, tuple(k.shape), q.dtype)
    guards.check_offsets(op, offsets, device)
    guards.check_dense(op, "kv_offsets", kv_offsets, device, tuple(offsets.shape), torch.int64)


def _block_d(q) -> int:
    return max(16, triton.next_power_of_2(q.shape[2]))


def _launch_shape(q, k):
    """Arguments every kernel shares: sizes, strides, the head group and tile width."""
    return dict(L=q.shape[0], LK=k.shape[0], D=q.shape[2], HQ=q.shape[1], stride_q=q.shape[1] * q.shape[2],
                stride_kv=k.shape[1] * k.shape[2], GROUP=q.shape[1] // k.shape[1], BLOCK_D=_block_d(q),
                ACC=accumulator(q.dtype), PRECISION=_precision(q.dtype))


def _kernel(kernel, q):
    """The launchable ``kernel`` for q's row size, and its outer tile height."""
    block_d, element_size = _block_d(q), q.element_size()
    return launchable(_autotuned(kernel, block_d, element_size)), _tile_rows(block_d, element_size)


def _scale_parts(scale: float, dtype: torch.dtype) -> tuple[float, float]:
    """scale as float32 hi + lo, lo holding what float32 rounds off (used for float64)."""
    hi = float(torch.tensor(scale, dtype=torch.float32))
    return hi, float(torch.tensor(scale - hi, dtype=torch.float32))


def _forward(q, k, v, offsets, kv_offsets, causal, scale, out, lse, lse_only):
    batch = offsets.shape[0] - 1
    kernel, block_q = _kernel(_forward_kernel, q)
    grid = (triton.cdiv(q.shape[0], block_q) + batch, q.shape[1])
    scale_hi, scale_lo = _scale_parts(scale, q.dtype)
    with _device(q):
        kernel[grid](q, k, v, out, lse, offsets, kv_offsets, tile_starts(offsets, block_q, None), batch,
                     **_launch_shape(q, k), scale_hi=scale_hi, scale_lo=scale_lo, CAUSAL=causal, LSE_ONLY=lse_only,
                     BLOCK_M=block_q)


@triton_kernel_op("padkern::ragged_attention_triton")
def ragged_attention_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, offsets: torch.Tensor,
                            kv_offsets: torch.Tensor, causal: bool, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """q [L, Hq, D], k, v [Lk, Hkv, D] (row-major) -> (out [L, Hq, D], lse [L, Hq] float32)."""
    _check("ragged_attention_triton", q, k, v, offsets, kv_offsets)
    out = torch.empty_like(q)
    lse = q.new_empty(q.shape[:2], dtype=torch.float32)
    if lse.numel() > 0:
        _forward(q, k, v, offsets, kv_offsets, causal, scale, out, lse, False)
    return out, lse


@triton_kernel_op("padkern::ragged_attention_backward_triton")
def ragged_attention_backward_triton(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                     out: torch.Tensor, lse: torch.Tensor, offsets: torch.Tensor,
                                     kv_offsets: torch.Tensor, causal: bool, scale: float
                                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> (grad_q [L, Hq, D], grad_k, grad_v [Lk, Hkv, D]), recomputing the scores from lse."""
    op = "ragged_attention_backward_triton"
    _check(op, q, k, v, offsets, kv_offsets)
    guards.check_dense(op, "grad_out", grad_out, q.device, tuple(q.shape), q.dtype)
    guards.check_dense(op, "out", out, q.device, tuple(q.shape), q.dtype)
    guards.check_dense(op, "lse", lse, q.device, tuple(q.shape[:2]), torch.float32)
    grad_q, grad_k, grad_v = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    if lse.numel() == 0 or k.shape[0] == 0:
        # No query, or no key anywhere: every gradient is 0.
        return grad_q.zero_(), grad_k.zero_(), grad_v.zero_()
    if q.dtype == torch.float64:
        # lse is stored in float32; float64 gradients need it exact, so recompute it.
        lse = q.new_empty(q.shape[:2])
        _forward(q, k, v, offsets, kv_offsets, causal, scale, q, lse, True)
    batch = offsets.shape[0] - 1
    shape = _launch_shape(q, k)
    scale_hi, scale_lo = _scale_parts(scale, q.dtype)
    delta = torch.empty(q.shape[:2], dtype=torch.float64 if q.dtype == torch.float64 else torch.float32,
                        device=q.device)
    dq_kernel, block_q = _kernel(_backward_dq_kernel, q)
    dkv_kernel, block_kv = _kernel(_backward_dkv_kernel, q)
    with _device(q):
        dq_kernel[(triton.cdiv(q.shape[0], block_q) + batch, q.shape[1])](
            q, k, v, out, grad_out, lse, delta, grad_q, offsets, kv_offsets, tile_starts(offsets, block_q, None),
            batch, **shape, scale_hi=scale_hi, scale_lo=scale_lo, CAUSAL=causal, BLOCK_M=block_q)
        dkv_kernel[(triton.cdiv(k.shape[0], block_kv) + batch, k.shape[1])](
            q, k, v, grad_out, lse, delta, grad_k, grad_v, offsets, kv_offsets, tile_starts(kv_offsets, block_kv, None),
            batch, **shape, scale_hi=scale_hi, scale_lo=scale_lo, CAUSAL=causal, BLOCK_N=block_kv)
    return grad_q, grad_k, grad_v
