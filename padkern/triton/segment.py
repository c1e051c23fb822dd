"""Triton segment reductions and softmax: one program per (sequence, feature block), or
every grid_y-th feature block past the grid's 65535 along y, walking the sequence's rows in
chunks. Registered as ``padkern::segment_reduce_triton``
and ``padkern::segment_softmax_triton``."""
import torch
import triton
import triton.language as tl

from . import guards
from .guards import sequence_bounds
from .linear import accumulator
from .registration import launchable, triton_kernel_op

BLOCK_T = 32


@triton.jit
def _chunk_max(b_v, o_t, m, eos):
    """A chunk's maximum per feature and the first row holding it, as torch.amax sees it:
    a NaN is the maximum, and its first row is the one that counts."""
    is_nan = b_v != b_v
    has_nan = tl.max(is_nan.to(tl.int32), 0) > 0
    peak = tl.max(tl.where(is_nan, float("-inf"), b_v), 0)
    holds = m & tl.where(has_nan[None, :], is_nan, b_v == peak[None, :])
    # The smallest row index holding it; eos (past every real row) where none does.
    row = tl.min(tl.where(holds, o_t[:, None], eos), 0)
    return tl.where(has_nan, float("nan"), peak), row


@triton.jit
def _segment_reduce_kernel(
    p_values, p_offsets, p_out, p_argmax, L, D,
    MODE: tl.constexpr, ACC: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    i_b = tl.program_id(0).to(tl.int64)
    bos, eos = sequence_bounds(p_offsets, i_b, L)
    # Feature blocks past the grid's y (guards.grid_y) fall to the programs before them.
    for d0 in range(tl.program_id(1) * BLOCK_D, D, tl.num_programs(1) * BLOCK_D):
        o_d = d0 + tl.arange(0, BLOCK_D)
        m_d = o_d < D
        if MODE == 2:
            best = tl.full((BLOCK_D,), float("-inf"), ACC)
            best_row = tl.full((BLOCK_D,), -1, tl.int64)
        else:
            best = tl.zeros((BLOCK_D,), ACC)
        for t0 in range(bos, eos, BLOCK_T):
            o_t = t0 + tl.arange(0, BLOCK_T).to(tl.int64)
            m = (o_t < eos)[:, None] & m_d[None, :]
            if MODE == 2:
                b_v = tl.load(p_values + o_t[:, None] * D + o_d[None, :], mask=m, other=float("-inf")).to(ACC)
                chunk_best, chunk_row = _chunk_max(b_v, o_t, m, eos)
                # As csrc/cpu/segment.cpp: the first chunk, a strictly larger maximum, or the
                # first NaN (which then stays) takes the place; so the first row holding the
                # maximum, or the first NaN row, is the argmax.
                take = (best_row < 0) | (chunk_best > best) | ((chunk_best != chunk_best) & (best == best))
                best = tl.where(take, chunk_best, best)
                best_row = tl.where(take, chunk_row, best_row)
            else:
                b_v = tl.load(p_values + o_t[:, None] * D + o_d[None, :], mask=m, other=0.0).to(ACC)
                best += tl.sum(b_v, 0)
        if MODE == 1:
            best = best / tl.maximum(eos - bos, 1).to(ACC)
        if MODE == 2:
            best = tl.where(eos > bos, best, 0.0)
            tl.store(p_argmax + i_b * D + o_d, best_row, mask=m_d)
        tl.store(p_out + i_b * D + o_d, best.to(p_out.dtype.element_ty), mask=m_d)


@triton.jit
def _segment_softmax_kernel(p_values, p_offsets, p_out, L, D, ACC: tl.constexpr, BLOCK_T: tl.constexpr,
                            BLOCK_D: tl.constexpr):
    i_b = tl.program_id(0).to(tl.int64)
    bos, eos = sequence_bounds(p_offsets, i_b, L)
    # Feature blocks past the grid's y (guards.grid_y) fall to the programs before them.
    for d0 in range(tl.program_id(1) * BLOCK_D, D, tl.num_programs(1) * BLOCK_D):
        o_d = d0 + tl.arange(0, BLOCK_D)
        m_d = o_d < D
        peak = tl.full((BLOCK_D,), float("-inf"), ACC)
        total = tl.zeros((BLOCK_D,), ACC)
        # One pass for max and sum, rescaling the running sum when the max grows.
        for t0 in range(bos, eos, BLOCK_T):
            o_t = t0 + tl.arange(0, BLOCK_T).to(tl.int64)
            m = (o_t < eos)[:, None] & m_d[None, :]
            b_v = tl.load(p_values + o_t[:, None] * D + o_d[None, :], mask=m, other=float("-inf")).to(ACC)
            new_peak = tl.maximum(peak, tl.max(b_v, 0))
            safe_peak = tl.where(new_peak == float("-inf"), 0.0, new_peak)
            total = total * tl.exp(peak - safe_peak) + tl.sum(tl.exp(b_v - safe_peak[None, :]), 0)
            peak = new_peak
        for t0 in range(bos, eos, BLOCK_T):
            o_t = t0 + tl.arange(0, BLOCK_T).to(tl.int64)
            m = (o_t < eos)[:, None] & m_d[None, :]
            b_v = tl.load(p_values + o_t[:, None] * D + o_d[None, :], mask=m, other=0.0).to(ACC)
            b_y = tl.exp(b_v - peak[None, :]) / total[None, :]
            tl.store(p_out + o_t[:, None] * D + o_d[None, :], b_y.to(p_out.dtype.element_ty), mask=m)


def _block_d(features: int) -> int:
    return min(triton.next_power_of_2(max(features, 1)), 128)


def _check(op: str, values: torch.Tensor, offsets: torch.Tensor) -> None:
    if values.dim() != 2:
        raise RuntimeError(f"{op}: values must be [L, D], got shape {tuple(values.shape)}")
    guards.check_dense(op, "values", values, values.device)
    guards.check_offsets(op, offsets, values.device)


@triton_kernel_op("padkern::segment_reduce_triton")
def segment_reduce_triton(values: torch.Tensor, offsets: torch.Tensor, mode: int) -> tuple[torch.Tensor, torch.Tensor]:
    """values [L, D] (contiguous) -> ([B, D], argmax [B, D] for max (first row holding it, -1 if empty) else [0, D])."""
    _check("segment_reduce_triton", values, offsets)
    batch, features = offsets.shape[0] - 1, values.shape[1]
    out = values.new_empty((batch, features))
    argmax = values.new_empty((batch if mode == 2 else 0, features), dtype=torch.int64)
    if out.numel() > 0:
        block_d = _block_d(features)
        launchable(_segment_reduce_kernel)[(batch, guards.grid_y(triton.cdiv(features, block_d)))](
            values, offsets, out, argmax if mode == 2 else out, values.shape[0], features,
            MODE=mode, ACC=accumulator(values.dtype), BLOCK_T=BLOCK_T, BLOCK_D=block_d)
    return out, argmax


@triton_kernel_op("padkern::segment_softmax_triton")
def segment_softmax_triton(values: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """values [L, D] (contiguous) -> [L, D]: softmax over each sequence's rows."""
    _check("segment_softmax_triton", values, offsets)
    batch, features = offsets.shape[0] - 1, values.shape[1]
    out = torch.empty_like(values)
    if values.numel() > 0:
        block_d = _block_d(features)
        launchable(_segment_softmax_kernel)[(batch, guards.grid_y(triton.cdiv(features, block_d)))](
            values, offsets, out, values.shape[0], features, ACC=accumulator(values.dtype), BLOCK_T=BLOCK_T,
            BLOCK_D=block_d)
    return out
