"""Triton pad/unpad, registered as ``padkern::pad_triton`` / ``padkern::unpad_triton``."""
import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from .registration import triton_kernel_op


@triton.jit
def _pad_kernel(
    p_values, p_offsets, p_padded, T, D,
    stride_values, stride_batch, stride_time, padding_value,
    BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    i_b = tl.program_id(0).to(tl.int64)
    i_t = tl.program_id(1)
    i_d = tl.program_id(2)
    bos = tl.load(p_offsets + i_b).to(tl.int64)
    eos = tl.load(p_offsets + i_b + 1).to(tl.int64)
    o_t = (i_t * BLOCK_T + tl.arange(0, BLOCK_T)).to(tl.int64)
    o_d = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
    m_d = o_d < D
    m_real = (o_t < eos - bos)[:, None] & m_d[None, :]
    b_rows = tl.load(p_values + (bos + o_t)[:, None] * stride_values + o_d[None, :], mask=m_real, other=padding_value)
    p_out = p_padded + i_b * stride_batch + o_t[:, None] * stride_time + o_d[None, :]
    tl.store(p_out, b_rows, mask=(o_t < T)[:, None] & m_d[None, :])


@triton.jit
def _unpad_kernel(
    p_padded, p_offsets, p_values, D,
    stride_values, stride_batch, stride_time,
    BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    i_b = tl.program_id(0).to(tl.int64)
    i_t = tl.program_id(1)
    i_d = tl.program_id(2)
    bos = tl.load(p_offsets + i_b).to(tl.int64)
    eos = tl.load(p_offsets + i_b + 1).to(tl.int64)
    o_t = (i_t * BLOCK_T + tl.arange(0, BLOCK_T)).to(tl.int64)
    o_d = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
    m_real = (o_t < eos - bos)[:, None] & (o_d < D)[None, :]
    b_rows = tl.load(p_padded + i_b * stride_batch + o_t[:, None] * stride_time + o_d[None, :], mask=m_real)
    tl.store(p_values + (bos + o_t)[:, None] * stride_values + o_d[None, :], b_rows, mask=m_real)


def _blocks(padded_length: int, features: int):
    # About 4K elements a program: enough bytes in flight per SM without spilling.
    block_d = min(triton.next_power_of_2(max(features, 1)), 256)
    block_t = max(1, min(4096 // block_d, triton.next_power_of_2(max(padded_length, 1))))
    return block_t, block_d


def _time_batch_strides(padded: torch.Tensor, batch_first: bool):
    return (padded.stride(0), padded.stride(1)) if batch_first else (padded.stride(1), padded.stride(0))


@triton_kernel_op("padkern::pad_triton")
def pad_triton(values: torch.Tensor, offsets: torch.Tensor, total_length: int, padding_value: float, batch_first: bool) -> torch.Tensor:
    batch, features = offsets.shape[0] - 1, values.shape[1]
    shape = (batch, total_length, features) if batch_first else (total_length, batch, features)
    padded = values.new_empty(shape)
    block_t, block_d = _blocks(total_length, features)
    grid = (batch, triton.cdiv(total_length, block_t), triton.cdiv(features, block_d))
    if padded.numel() > 0:
        stride_batch, stride_time = _time_batch_strides(padded, batch_first)
        wrap_triton(_pad_kernel)[grid](
            values, offsets, padded, total_length, features,
            values.stride(0), stride_batch, stride_time, padding_value,
            BLOCK_T=block_t, BLOCK_D=block_d,
        )
    return padded


@triton_kernel_op("padkern::unpad_triton")
def unpad_triton(padded: torch.Tensor, offsets: torch.Tensor, total_tokens: int, batch_first: bool) -> torch.Tensor:
    batch, features = offsets.shape[0] - 1, padded.shape[2]
    padded_length = padded.shape[1] if batch_first else padded.shape[0]
    values = padded.new_empty((total_tokens, features))
    block_t, block_d = _blocks(padded_length, features)
    grid = (batch, triton.cdiv(padded_length, block_t), triton.cdiv(features, block_d))
    if values.numel() > 0:
        stride_batch, stride_time = _time_batch_strides(padded, batch_first)
        wrap_triton(_unpad_kernel)[grid](
            padded, offsets, values, features,
            values.stride(0), stride_batch, stride_time,
            BLOCK_T=block_t, BLOCK_D=block_d,
        )
    return values
