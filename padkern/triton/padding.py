"""Triton pad/unpad, registered as ``padkern::pad_triton`` / ``padkern::unpad_triton``.

Each program copies [BLOCK_T, BLOCK_D] tiles of one sequence (one, unless the time blocks
pass the grid's 65535 along y: then every grid_y-th). Steps past the
padded length T do not exist: pad never reads or writes them, and unpad writes 0 for
tokens of a sequence longer than T (possible only with lengths that break the
contract, unchecked on a GPU outside debug mode).
"""
import torch
import triton
import triton.language as tl

from . import guards
from .guards import sequence_bounds
from .registration import launchable, triton_kernel_op


@triton.jit
def _pad_kernel(
    p_values, p_offsets, p_fill, p_padded, L, T, D,
    stride_values, stride_batch, stride_time,
    BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    i_b = tl.program_id(0).to(tl.int64)
    i_t = tl.program_id(1)
    i_d = tl.program_id(2)
    bos, eos = sequence_bounds(p_offsets, i_b, L)
    length = tl.minimum(eos - bos, T)
    o_d = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
    m_d = o_d < D
    # The fill is read in the values' own dtype: as a float32 argument it would round
    # (float64 0.1, int64 -123456789).
    fill = tl.load(p_fill)
    # Time blocks past the grid's y (guards.grid_y) fall to the programs before them.
    for t0 in range((i_t * BLOCK_T).to(tl.int64), T, tl.num_programs(1) * BLOCK_T):
        o_t = t0 + tl.arange(0, BLOCK_T).to(tl.int64)
        m_real = (o_t < length)[:, None] & m_d[None, :]
        b_rows = tl.load(p_values + (bos + o_t)[:, None] * stride_values + o_d[None, :], mask=m_real, other=fill)
        p_out = p_padded + i_b * stride_batch + o_t[:, None] * stride_time + o_d[None, :]
        tl.store(p_out, b_rows, mask=(o_t < T)[:, None] & m_d[None, :])


@triton.jit
def _unpad_kernel(
    p_padded, p_offsets, p_values, L, T, D,
    stride_values, stride_batch, stride_time,
    BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    i_b = tl.program_id(0).to(tl.int64)
    i_t = tl.program_id(1)
    i_d = tl.program_id(2)
    bos, eos = sequence_bounds(p_offsets, i_b, L)
    o_d = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
    m_d = o_d < D
    # A grid-stride loop over the sequence's tokens: the grid covers T steps (up to the grid's
    # y, guards.grid_y), so with lengths <= T each program runs about once; the tokens of a
    # longer sequence past T are written as 0.
    for t0 in range((i_t * BLOCK_T).to(tl.int64), eos - bos, tl.num_programs(1) * BLOCK_T):
        o_t = t0 + tl.arange(0, BLOCK_T).to(tl.int64)
        m_token = o_t < eos - bos
        m_read = (m_token & (o_t < T))[:, None] & m_d[None, :]
        b_rows = tl.load(p_padded + i_b * stride_batch + o_t[:, None] * stride_time + o_d[None, :], mask=m_read, other=0)
        tl.store(p_values + (bos + o_t)[:, None] * stride_values + o_d[None, :], b_rows, mask=m_token[:, None] & m_d[None, :])


def _blocks(padded_length: int, features: int):
    # About 4K elements a program: enough bytes in flight per SM without spilling.
    block_d = min(triton.next_power_of_2(max(features, 1)), 256)
    block_t = max(1, min(4096 // block_d, triton.next_power_of_2(max(padded_length, 1))))
    return block_t, block_d


def _time_batch_strides(padded: torch.Tensor, batch_first: bool):
    return (padded.stride(0), padded.stride(1)) if batch_first else (padded.stride(1), padded.stride(0))


@triton_kernel_op("padkern::pad_triton")
def pad_triton(values: torch.Tensor, offsets: torch.Tensor, total_length: int, padding_value: float, batch_first: bool) -> torch.Tensor:
    """values [L, D] (unit feature stride) -> padded [B, T, D] (or [T, B, D]), T = total_length."""
    guards.check_unit_feature_stride("pad_triton", "values", values, values.device, dim=2)
    guards.check_element_type("pad_triton", "values", values)
    guards.check_offsets("pad_triton", offsets, values.device)
    batch, features = offsets.shape[0] - 1, values.shape[1]
    shape = (batch, total_length, features) if batch_first else (total_length, batch, features)
    padded = values.new_empty(shape)
    if padded.numel() > 0:
        block_t, block_d = _blocks(total_length, features)
        grid = (batch, guards.grid_y(triton.cdiv(total_length, block_t)), triton.cdiv(features, block_d))
        stride_batch, stride_time = _time_batch_strides(padded, batch_first)
        launchable(_pad_kernel)[grid](
            values, offsets, values.new_full((1,), padding_value), padded, values.shape[0], total_length, features,
            values.stride(0), stride_batch, stride_time,
            BLOCK_T=block_t, BLOCK_D=block_d,
        )
    return padded


@triton_kernel_op("padkern::unpad_triton")
def unpad_triton(padded: torch.Tensor, offsets: torch.Tensor, total_tokens: int, batch_first: bool) -> torch.Tensor:
    """padded [B, T, D] (or [T, B, D]; unit feature stride) -> values [L, D], L = total_tokens."""
    guards.check_unit_feature_stride("unpad_triton", "padded", padded, padded.device, dim=3)
    guards.check_element_type("unpad_triton", "padded", padded)
    batch, features = offsets.shape[0] - 1, padded.shape[2]
    guards.check_offsets("unpad_triton", offsets, padded.device, padded.shape[0] if batch_first else padded.shape[1])
    padded_length = padded.shape[1] if batch_first else padded.shape[0]
    values = padded.new_empty((total_tokens, features))
    if values.numel() > 0:
        block_t, block_d = _blocks(padded_length, features)
        # At least one program along time even when T == 0: tokens past T are still written.
        grid = (batch, guards.grid_y(triton.cdiv(padded_length, block_t)), triton.cdiv(features, block_d))
        stride_batch, stride_time = _time_batch_strides(padded, batch_first)
        launchable(_unpad_kernel)[grid](
            padded, offsets, values, total_tokens, padded_length, features,
            values.stride(0), stride_batch, stride_time,
            BLOCK_T=block_t, BLOCK_D=block_d,
        )
    return values
