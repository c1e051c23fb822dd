"""Triton grouped matmuls, registered as ``padkern::grouped_linear_triton`` and
``padkern::ragged_outer_bmm_triton``.

Tile scheduler: ``tile_starts[b]`` is the prefix over per-sequence row-tile counts
``cdiv(length_b, BLOCK_M)``, built on the device (no host sync). The grid has an upper
bound of row tiles; each program finds its sequence by binary search over tile_starts
and programs past the last tile exit at once, so every multiply-accumulate is spent
on real rows and no packed copy of the input is made.
"""
import os

import torch
import triton
import triton.language as tl

from .._backend import triton_interpreted
from . import guards
from .guards import padded_length, sequence_bounds
from .registration import launchable, triton_kernel_op

BLOCK_M = 64


@triton.jit
def _activate(z, ACT: tl.constexpr):
    if ACT == 1:
        z = tl.where(z < 0.0, 0.0, z)  # NaN propagates, as torch.relu
    elif ACT == 2:
        z = 0.5 * z * (1.0 + tl.erf(z * 0.7071067811865476))
    elif ACT == 3:
        z = z / (1.0 + tl.exp(-z))
    return z


@triton.jit
def _find_sequence(p_starts, B, i_tile):
    """The largest b with p_starts[b] <= i_tile (zero-tile sequences are skipped)."""
    # Both bounds int64 from the start: a loop-carried variable must keep its type. tl.cast,
    # not .to(): with one sequence B arrives as the constexpr 1 (the JIT specialises integer
    # arguments equal to 1), which has no tensor methods.
    lo = tl.cast(0, tl.int64)
    hi = tl.cast(B - 1, tl.int64)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if tl.load(p_starts + mid) <= i_tile:
            lo = mid
        else:
            hi = mid - 1
    return lo


# What a GPU autotunes the grouped matmul over.
AUTOTUNE_CONFIGS = [triton.Config({"BLOCK_N": n, "BLOCK_K": k}, num_warps=w, num_stages=s)
                    for n, k, w, s in ((64, 32, 4, 3), (128, 32, 4, 3), (128, 64, 8, 3), (64, 64, 4, 4), (256, 32, 8, 3))]


def _grouped_linear_configs():
    # One config under the interpreter, or when PADKERN_TRITON_AUTOTUNE=0 (test runs on a GPU:
    # every new shape would otherwise compile and time all the configs).
    if triton_interpreted() or os.environ.get("PADKERN_TRITON_AUTOTUNE", "1") == "0":
        return [triton.Config({"BLOCK_N": 32 if triton_interpreted() else 64, "BLOCK_K": 32}, num_warps=4)]
    return AUTOTUNE_CONFIGS


@triton.autotune(configs=_grouped_linear_configs(), key=["N", "K", "PADDED", "ACT"])
@triton.jit
def _grouped_linear_kernel(
    p_in, p_offsets, p_starts, p_w, p_bias, p_out, p_pre, B, ROWS, N, K,
    stride_in_b, stride_in_t, stride_in_k, stride_out_b, stride_out_t, stride_wb, stride_wk, stride_wn,
    PADDED: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr, SAVE: tl.constexpr,
    PRECISION: tl.constexpr, ACC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """ROWS: the padded length T when PADDED, else the number of tokens L."""
    i_tile = tl.program_id(0)
    i_n = tl.program_id(1)
    if i_tile < tl.load(p_starts + B):
        i_b = _find_sequence(p_starts, B, i_tile)
        o_m = (i_tile - tl.load(p_starts + i_b)) * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
        if PADDED:
            m_m = o_m < padded_length(p_offsets, i_b, ROWS)
            row_in = i_b * stride_in_b + o_m * stride_in_t
            row_out = i_b * stride_out_b + o_m * stride_out_t
        else:
            bos, eos = sequence_bounds(p_offsets, i_b, ROWS)
            m_m = o_m < eos - bos
            row_in = (bos + o_m) * stride_in_t
            row_out = (bos + o_m) * stride_out_t
        o_n = i_n * BLOCK_N + tl.arange(0, BLOCK_N)
        m_n = o_n < N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
        p_w_b = p_w + i_b * stride_wb
        for k0 in range(0, K, BLOCK_K):
            o_k = k0 + tl.arange(0, BLOCK_K)
            m_k = o_k < K
            b_a = tl.load(p_in + row_in[:, None] + o_k[None, :] * stride_in_k, mask=m_m[:, None] & m_k[None, :], other=0.0)
            b_w = tl.load(p_w_b + o_k[:, None] * stride_wk + o_n[None, :] * stride_wn, mask=m_k[:, None] & m_n[None, :], other=0.0)
            # out_dtype named: triton 3.6 checks an fp64 accumulator against its fp32 default.
            acc = tl.dot(b_a, b_w, acc, input_precision=PRECISION, out_dtype=ACC)
        if HAS_BIAS:
            acc += tl.load(p_bias + o_n, mask=m_n, other=0.0).to(acc.dtype)[None, :]
        m_out = m_m[:, None] & m_n[None, :]
        p_dst = row_out[:, None] + o_n[None, :]
        if SAVE:
            tl.store(p_pre + p_dst, acc.to(p_pre.dtype.element_ty), mask=m_out)
        tl.store(p_out + p_dst, _activate(acc, ACT).to(p_out.dtype.element_ty), mask=m_out)


def tile_starts(offsets: torch.Tensor, block_m: int, padded_length: int | None) -> torch.Tensor:
    """[B+1] prefix over per-sequence row-tile counts, on the offsets' device. Lengths are
    clamped as the kernel clamps them (into [0, T] for a padded input), so the tiles of
    one sequence never take the place of the next one's."""
    lengths = (offsets[1:] - offsets[:-1]).clamp(0, padded_length)
    tiles = (lengths + block_m - 1) // block_m
    starts = offsets.new_zeros(offsets.shape[0])
    torch.cumsum(tiles, 0, out=starts[1:])
    return starts


def accumulator(dtype: torch.dtype):
    """fp64 accumulation for fp64 data, fp32 for the rest."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def _precision(dtype: torch.dtype) -> str:
    # TF32 only where the user allowed it through torch's setting.
    return "tf32" if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32 else "ieee"


def _check_grouped_linear(input, offsets, weight, bias) -> None:
    op, device = "grouped_linear_triton", input.device
    if input.dim() not in (2, 3):
        raise RuntimeError(f"{op}: input must be [L, K] or [B, T, K], got shape {tuple(input.shape)}")
    guards.check_offsets(op, offsets, device, input.shape[0] if input.dim() == 3 else None)
    batch, in_features = offsets.shape[0] - 1, input.shape[-1]
    expected = "[N, K]" if weight.dim() == 2 else "[B, K, N]"
    fits = weight.shape[1] == in_features if weight.dim() == 2 else (
        weight.dim() == 3 and weight.shape[:2] == (batch, in_features))
    if weight.device != device or not fits:
        raise RuntimeError(f"{op}: weight must be {expected} with K={in_features}, B={batch} on {device}, "
                           f"got shape {tuple(weight.shape)} on {weight.device}")
    if bias is not None:
        features = weight.shape[0] if weight.dim() == 2 else weight.shape[2]
        guards.check_dense(op, "bias", bias, device, shape=(features,))


@triton_kernel_op("padkern::grouped_linear_triton")
def grouped_linear_triton(input: torch.Tensor, offsets: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                          activation: int, save_preactivation: bool, total_tokens: int
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """input [L, K] (ragged) or [B, T, K] (padded), any strides; weight [N, K] (shared, any
    strides) or [B, K, N] (one per sequence); bias [N]. Returns (out, pre-activation or [0])."""
    padded = input.dim() == 3
    batch = offsets.shape[0] - 1
    _check_grouped_linear(input, offsets, weight, bias)
    features = weight.shape[0] if weight.dim() == 2 else weight.shape[2]
    shape = input.shape[:-1] + (features,)
    out = input.new_zeros(shape) if padded else input.new_empty(shape)
    save = save_preactivation and activation != 0
    pre = input.new_zeros(shape) if save else input.new_empty((0,))
    if weight.dim() == 2:  # [N, K] used as [K, N]
        stride_wb, stride_wk, stride_wn = 0, weight.stride(1), weight.stride(0)
    else:  # [B, K, N]
        stride_wb, stride_wk, stride_wn = weight.stride(0), weight.stride(1), weight.stride(2)
    if padded:
        stride_in, stride_out = (input.stride(0), input.stride(1)), (out.stride(0), out.stride(1))
        rows = input.shape[1]
        row_tiles = batch * triton.cdiv(rows, BLOCK_M)
    else:
        stride_in, stride_out = (0, input.stride(0)), (0, out.stride(0))
        rows = input.shape[0]
        row_tiles = triton.cdiv(rows, BLOCK_M) + batch
    if batch > 0 and features > 0 and row_tiles > 0:
        starts = tile_starts(offsets, BLOCK_M, rows if padded else None)
        grid = lambda meta: (row_tiles, triton.cdiv(features, meta["BLOCK_N"]))  # noqa: E731
        launchable(_grouped_linear_kernel)[grid](
            input, offsets, starts, weight, bias if bias is not None else out, out, pre, batch, rows, features,
            input.shape[-1], *stride_in, input.stride(-1), *stride_out, stride_wb, stride_wk, stride_wn,
            PADDED=padded, HAS_BIAS=bias is not None, ACT=activation, SAVE=save,
            PRECISION=_precision(input.dtype), ACC=accumulator(input.dtype), BLOCK_M=BLOCK_M)
    return out, pre


@triton.jit
def _ragged_outer_bmm_kernel(
    p_x, p_y, p_offsets, p_out, L, M, N, stride_x, stride_y, stride_ob, stride_om,
    PRECISION: tl.constexpr, ACC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr,
):
    i_b = tl.program_id(0).to(tl.int64)
    i_m = tl.program_id(1)
    i_n = tl.program_id(2)
    bos, eos = sequence_bounds(p_offsets, i_b, L)
    o_m = i_m * BLOCK_M + tl.arange(0, BLOCK_M)
    o_n = i_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_m = o_m < M
    m_n = o_n < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for t0 in range(bos, eos, BLOCK_T):
        o_t = t0 + tl.arange(0, BLOCK_T).to(tl.int64)
        m_t = o_t < eos
        b_xt = tl.load(p_x + o_t[None, :] * stride_x + o_m[:, None], mask=m_m[:, None] & m_t[None, :], other=0.0)
        b_y = tl.load(p_y + o_t[:, None] * stride_y + o_n[None, :], mask=m_t[:, None] & m_n[None, :], other=0.0)
        acc = tl.dot(b_xt, b_y, acc, input_precision=PRECISION, out_dtype=ACC)
    p_dst = p_out + i_b * stride_ob + o_m[:, None] * stride_om + o_n[None, :]
    tl.store(p_dst, acc.to(p_out.dtype.element_ty), mask=m_m[:, None] & m_n[None, :])


@triton_kernel_op("padkern::ragged_outer_bmm_triton")
def ragged_outer_bmm_triton(x: torch.Tensor, y: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """x [L, M], y [L, N] -> [B, M, N]: per sequence x_b^T @ y_b."""
    op = "ragged_outer_bmm_triton"
    guards.check_offsets(op, offsets, x.device)
    batch, rows, cols = offsets.shape[0] - 1, x.shape[1], y.shape[1]
    out = x.new_empty((batch, rows, cols))
    x, y = x.contiguous(), y.contiguous()
    guards.check_dense(op, "y", y, x.device, (x.shape[0], cols), x.dtype)
    if out.numel() > 0:
        block = 32 if triton_interpreted() else 64
        grid = (batch, triton.cdiv(rows, block), triton.cdiv(cols, block))
        launchable(_ragged_outer_bmm_kernel)[grid](
            x, y, offsets, out, x.shape[0], rows, cols, x.stride(0), y.stride(0), out.stride(0), out.stride(1),
            PRECISION=_precision(x.dtype), ACC=accumulator(x.dtype), BLOCK_M=block, BLOCK_N=block, BLOCK_T=32)
    return out
