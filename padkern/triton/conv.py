"""Triton ragged 1-D convolution, forward and backward: ``padkern::ragged_conv1d_triton``
and ``padkern::ragged_conv1d_backward_triton``.

Programs own tiles of BLOCK_T consecutive tokens of the ragged buffer (not of one
sequence), so a grid covers the L real tokens and nothing else. Each token finds its
sequence by a binary search over the offsets and reads tap j's row t + shift_j only
inside that sequence (masked loads: a neighbour's row is never touched). Any groups: per
tap, a [BLOCK_T, C_in/G] x [C_in/G, BLOCK_O] ``tl.dot`` per group (im2col-free).
Depthwise: an elementwise pass over channels. The input gradient is the same kernel with
the taps mirrored and the weight transposed per group; weight gradients sum over fixed
token chunks into partials (no atomics: deterministic), added up afterwards.
"""
from typing import Optional

import torch
import triton
import triton.language as tl

from .._backend import triton_interpreted
from . import guards
from .linear import _precision, accumulator
from .registration import launchable, triton_kernel_op

BLOCK_T = 32
# Tokens per weight-gradient partial: enough programs to fill a GPU for L in the
# thousands, few enough partials that summing them is noise.
CHUNK_T = 256 if triton_interpreted() else 512


@triton.jit
def _token_spans(p_offsets, o_t, B, L, SEARCH_STEPS: tl.constexpr):
    """[bos, eos) of each token's sequence (the largest b with offsets[b] <= t), clamped
    into [0, L]; every probe stays in offsets[0..B]."""
    lo = tl.zeros_like(o_t)
    hi = tl.zeros_like(o_t) + (B - 1)
    for _ in tl.static_range(SEARCH_STEPS):
        mid = (lo + hi + 1) // 2
        go = tl.load(p_offsets + mid).to(tl.int64) <= o_t
        lo = tl.where(go, mid, lo)
        hi = tl.where(go, hi, mid - 1)
    bos = tl.minimum(tl.maximum(tl.load(p_offsets + lo).to(tl.int64), 0), L)
    eos = tl.minimum(tl.maximum(tl.load(p_offsets + lo + 1).to(tl.int64), bos), L)
    return bos, eos


@triton.jit
def _conv_kernel(
    p_x, p_w, p_bias, p_out, p_offsets, B, L, CI, CO, SHIFT0, STEP,
    K: tl.constexpr, HAS_BIAS: tl.constexpr, SEARCH_STEPS: tl.constexpr, PRECISION: tl.constexpr,
    ACC: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_O: tl.constexpr,
):
    """out [L, G*CO] = bias + sum_j x[t + SHIFT0 + j*STEP, group] @ w[j, g] ([CI, CO] each,
    w laid out [K, G, CI, CO]); x is [L, G*CI]."""
    i_t = tl.program_id(0)
    i_go = tl.program_id(1)
    blocks_o = tl.cdiv(CO, BLOCK_O)
    i_g = (i_go // blocks_o).to(tl.int64)
    o_t = i_t * BLOCK_T + tl.arange(0, BLOCK_T).to(tl.int64)
    m_t = o_t < L
    o_o = (i_go % blocks_o) * BLOCK_O + tl.arange(0, BLOCK_O)
    m_o = o_o < CO
    G = tl.num_programs(1) // blocks_o
    bos, eos = _token_spans(p_offsets, o_t, B, L, SEARCH_STEPS)
    acc = tl.zeros((BLOCK_T, BLOCK_O), dtype=ACC)
    for j in tl.static_range(K):
        src = o_t + SHIFT0 + j * STEP
        m_src = m_t & (src >= bos) & (src < eos)
        p_w_j = p_w + (j * G + i_g) * CI * CO
        for c0 in range(0, CI, BLOCK_C):
            o_c = c0 + tl.arange(0, BLOCK_C)
            m_c = o_c < CI
            b_x = tl.load(p_x + src[:, None] * (G * CI) + i_g * CI + o_c[None, :], mask=m_src[:, None] & m_c[None, :],
                          other=0.0)
            b_w = tl.load(p_w_j + o_c[:, None] * CO + o_o[None, :], mask=m_c[:, None] & m_o[None, :], other=0.0)
            acc = tl.dot(b_x, b_w, acc, input_precision=PRECISION, out_dtype=ACC)
    if HAS_BIAS:
        acc += tl.load(p_bias + i_g * CO + o_o, mask=m_o, other=0.0).to(ACC)[None, :]
    tl.store(p_out + o_t[:, None] * (G * CO) + i_g * CO + o_o[None, :], acc.to(p_out.dtype.element_ty),
             mask=m_t[:, None] & m_o[None, :])


@triton.jit
def _depthwise_kernel(
    p_x, p_w, p_bias, p_out, p_offsets, B, L, C, SHIFT0, STEP,
    K: tl.constexpr, HAS_BIAS: tl.constexpr, SEARCH_STEPS: tl.constexpr, ACC: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """out [L, C] = bias + sum_j w[j, c] * x[t + SHIFT0 + j*STEP, c]; w [K, C] in ACC."""
    o_t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T).to(tl.int64)
    o_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    m_t = o_t < L
    m_c = o_c < C
    bos, eos = _token_spans(p_offsets, o_t, B, L, SEARCH_STEPS)
    acc = tl.zeros((BLOCK_T, BLOCK_C), dtype=ACC)
    for j in tl.static_range(K):
        src = o_t + SHIFT0 + j * STEP
        m_src = m_t & (src >= bos) & (src < eos)
        b_x = tl.load(p_x + src[:, None] * C + o_c[None, :], mask=m_src[:, None] & m_c[None, :], other=0.0).to(ACC)
        b_w = tl.load(p_w + j * C + o_c, mask=m_c, other=0.0)
        acc += b_w[None, :] * b_x
    if HAS_BIAS:
        acc += tl.load(p_bias + o_c, mask=m_c, other=0.0).to(ACC)[None, :]
    tl.store(p_out + o_t[:, None] * C + o_c[None, :], acc.to(p_out.dtype.element_ty), mask=m_t[:, None] & m_c[None, :])


@triton.jit
def _depthwise_weight_grad_kernel(
    p_grad, p_x, p_partial, p_offsets, B, L, C, SHIFT0, STEP,
    K: tl.constexpr, SEARCH_STEPS: tl.constexpr, ACC: tl.constexpr, CHUNK_T: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """partial[chunk, j, c] = sum over the chunk's tokens t of grad[t, c] * x[t + shift_j, c]."""
    i_chunk = tl.program_id(0).to(tl.int64)
    o_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    m_c = o_c < C
    for j in tl.static_range(K):
        acc = tl.zeros((BLOCK_C,), dtype=ACC)
        for t0 in range(0, CHUNK_T, BLOCK_T):
            o_t = i_chunk * CHUNK_T + t0 + tl.arange(0, BLOCK_T).to(tl.int64)
            m_t = o_t < L
            bos, eos = _token_spans(p_offsets, o_t, B, L, SEARCH_STEPS)
            src = o_t + SHIFT0 + j * STEP
            m_src = m_t & (src >= bos) & (src < eos)
            m = m_src[:, None] & m_c[None, :]
            b_g = tl.load(p_grad + o_t[:, None] * C + o_c[None, :], mask=m, other=0.0).to(ACC)
            b_x = tl.load(p_x + src[:, None] * C + o_c[None, :], mask=m, other=0.0).to(ACC)
            acc += tl.sum(b_g * b_x, 0)
        tl.store(p_partial + (i_chunk * K + j) * C + o_c, acc, mask=m_c)


@triton.jit
def _conv_weight_grad_kernel(
    p_grad, p_x, p_partial, p_offsets, B, L, CI, CO, SHIFT0, STEP,
    SEARCH_STEPS: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr, CHUNK_T: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_O: tl.constexpr,
):
    """partial[chunk, j, g, o, c] = sum over the chunk's tokens t of grad[t, g*CO + o] *
    x[t + shift_j, g*CI + c]; grid (chunks, K, G * blocks_o * blocks_c)."""
    i_chunk = tl.program_id(0).to(tl.int64)
    j = tl.program_id(1)
    K = tl.num_programs(1)
    blocks_o = tl.cdiv(CO, BLOCK_O)
    blocks_c = tl.cdiv(CI, BLOCK_C)
    i_goc = tl.program_id(2)
    G = tl.num_programs(2) // (blocks_o * blocks_c)
    i_g = (i_goc // (blocks_o * blocks_c)).to(tl.int64)
    o_o = (i_goc // blocks_c % blocks_o) * BLOCK_O + tl.arange(0, BLOCK_O)
    o_c = (i_goc % blocks_c) * BLOCK_C + tl.arange(0, BLOCK_C)
    m_o = o_o < CO
    m_c = o_c < CI
    acc = tl.zeros((BLOCK_O, BLOCK_C), dtype=ACC)
    for t0 in range(0, CHUNK_T, BLOCK_T):
        o_t = i_chunk * CHUNK_T + t0 + tl.arange(0, BLOCK_T).to(tl.int64)
        m_t = o_t < L
        bos, eos = _token_spans(p_offsets, o_t, B, L, SEARCH_STEPS)
        src = o_t + SHIFT0 + j * STEP
        m_src = m_t & (src >= bos) & (src < eos)
        b_gt = tl.load(p_grad + o_t[None, :] * (G * CO) + i_g * CO + o_o[:, None], mask=m_src[None, :] & m_o[:, None],
                       other=0.0)
        b_x = tl.load(p_x + src[:, None] * (G * CI) + i_g * CI + o_c[None, :], mask=m_src[:, None] & m_c[None, :],
                      other=0.0)
        acc = tl.dot(b_gt, b_x, acc, input_precision=PRECISION, out_dtype=ACC)
    p_dst = p_partial + (((i_chunk * K + j) * G + i_g) * CO + o_o[:, None]) * CI + o_c[None, :]
    tl.store(p_dst, acc, mask=m_o[:, None] & m_c[None, :])


def _block(size: int, low: int = 16, high: int = 64) -> int:
    return max(low, min(high, triton.next_power_of_2(max(size, 1))))


def _search_steps(batch: int) -> int:
    return max(1, (batch - 1).bit_length())


def _check(op, values, offsets, weight, bias, left_pad, dilation, groups):
    guards.check_element_type(op, "values", values)
    if values.dim() != 2 or weight.dim() != 3:
        raise RuntimeError(f"{op}: values must be [L, C_in] and weight [C_out, C_in / groups, k], got shapes "
                           f"{tuple(values.shape)} and {tuple(weight.shape)}")
    guards.check_dense(op, "values", values, values.device)
    guards.check_offsets(op, offsets, values.device)
    guards.check_tensor(op, "weight", weight, values.device, dtype=values.dtype)
    channels_in, channels_out, k = values.shape[1], weight.shape[0], weight.shape[2]
    if (groups < 1 or channels_in % groups or channels_out % groups or weight.shape[1] * groups != channels_in
            or k < 1 or dilation < 1 or not 0 <= left_pad <= dilation * (k - 1)):
        raise RuntimeError(f"{op}: weight {tuple(weight.shape)}, groups={groups}, dilation={dilation}, "
                           f"left_pad={left_pad} do not fit values {tuple(values.shape)}")
    if bias is not None:
        guards.check_dense(op, "bias", bias, values.device, (channels_out,), values.dtype)


def _depthwise(x, offsets, taps_weight, bias, out, shift0, step):
    rows, channels = x.shape
    block_c = _block(channels, 16, 128)
    launchable(_depthwise_kernel)[(triton.cdiv(rows, BLOCK_T), triton.cdiv(channels, block_c))](
        x, taps_weight, bias if bias is not None else x, out, offsets, offsets.shape[0] - 1, rows, channels, shift0,
        step, K=taps_weight.shape[0], HAS_BIAS=bias is not None, SEARCH_STEPS=_search_steps(offsets.shape[0] - 1),
        ACC=accumulator(x.dtype), BLOCK_T=BLOCK_T, BLOCK_C=block_c)


def _grouped(x, offsets, taps_weight, bias, out, shift0, step):
    """taps_weight [K, G, CI, CO]; x [L, G*CI] -> out [L, G*CO]."""
    k, groups, per_in, per_out = taps_weight.shape
    block_o = _block(per_out)
    launchable(_conv_kernel)[(triton.cdiv(x.shape[0], BLOCK_T), groups * triton.cdiv(per_out, block_o))](
        x, taps_weight, bias if bias is not None else x, out, offsets, offsets.shape[0] - 1, x.shape[0], per_in,
        per_out, shift0, step, K=k, HAS_BIAS=bias is not None, SEARCH_STEPS=_search_steps(offsets.shape[0] - 1),
        PRECISION=_precision(x.dtype), ACC=accumulator(x.dtype), BLOCK_T=BLOCK_T, BLOCK_C=_block(per_in, 16, 32),
        BLOCK_O=block_o)


def _depthwise_case(values, weight, groups) -> bool:
    return groups == values.shape[1] and weight.shape[0] == values.shape[1]


def _by_tap(weight, groups, input_grad: bool):
    """[C_out, CI, K] -> [K, G, CI, CO] (forward) or [K, G, CO, CI] (input gradient)."""
    k = weight.shape[2]
    grouped = weight.view(groups, weight.shape[0] // groups, weight.shape[1], k)
    return grouped.permute(3, 0, 1, 2).contiguous() if input_grad else grouped.permute(3, 0, 2, 1).contiguous()


@triton_kernel_op("padkern::ragged_conv1d_triton")
def ragged_conv1d_triton(values: torch.Tensor, offsets: torch.Tensor, weight: torch.Tensor,
                         bias: Optional[torch.Tensor], left_pad: int, dilation: int, groups: int) -> torch.Tensor:
    """values [L, C_in] (contiguous) -> [L, C_out]; see padkern/_schemas.py."""
    _check("ragged_conv1d_triton", values, offsets, weight, bias, left_pad, dilation, groups)
    out = values.new_empty((values.shape[0], weight.shape[0]))
    if out.numel() == 0 or offsets.shape[0] == 1:
        return out.zero_()
    if _depthwise_case(values, weight, groups):
        taps_weight = weight[:, 0, :].t().to(torch.float64 if values.dtype == torch.float64 else torch.float32)
        _depthwise(values, offsets, taps_weight.contiguous(), bias, out, -left_pad, dilation)
    else:
        _grouped(values, offsets, _by_tap(weight, groups, False), bias, out, -left_pad, dilation)
    return out


@triton_kernel_op("padkern::ragged_conv1d_backward_triton")
def ragged_conv1d_backward_triton(grad_output: torch.Tensor, values: torch.Tensor, offsets: torch.Tensor,
                                  weight: torch.Tensor, left_pad: int, dilation: int, groups: int,
                                  output_mask: list[bool]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> grad_values [L, C_in], grad_weight [C_out, C_in / groups, k], grad_bias [C_out]
    (an empty [0] where output_mask is false)."""
    op = "ragged_conv1d_backward_triton"
    _check(op, values, offsets, weight, None, left_pad, dilation, groups)
    rows, channels_out, k = values.shape[0], weight.shape[0], weight.shape[2]
    guards.check_dense(op, "grad_output", grad_output, values.device, (rows, channels_out), values.dtype)
    empty = rows == 0 or offsets.shape[0] == 1
    acc_dtype = torch.float64 if values.dtype == torch.float64 else torch.float32
    grad_values, grad_weight, grad_bias = values.new_empty((0,)), weight.new_empty((0,)), weight.new_empty((0,))
    if output_mask[2]:
        grad_bias = grad_output.sum(0, dtype=acc_dtype).to(values.dtype)
    depthwise = _depthwise_case(values, weight, groups)
    if output_mask[0]:
        grad_values = torch.empty_like(values)
        if empty or grad_values.numel() == 0:
            grad_values.zero_()
        elif depthwise:
            _depthwise(grad_output, offsets, weight[:, 0, :].t().to(acc_dtype).contiguous(), None, grad_values,
                       left_pad, -dilation)
        else:
            _grouped(grad_output, offsets, _by_tap(weight, groups, True), None, grad_values, left_pad, -dilation)
    if output_mask[1]:
        if empty or weight.numel() == 0:
            grad_weight = torch.zeros_like(weight, memory_format=torch.contiguous_format)
        else:
            chunks = triton.cdiv(rows, CHUNK_T)
            steps = _search_steps(offsets.shape[0] - 1)
            if depthwise:
                channels = values.shape[1]
                block_c = _block(channels, 16, 128)
                partial = values.new_empty((chunks, k, channels), dtype=acc_dtype)
                launchable(_depthwise_weight_grad_kernel)[(chunks, triton.cdiv(channels, block_c))](
                    grad_output, values, partial, offsets, offsets.shape[0] - 1, rows, channels, -left_pad, dilation,
                    K=k, SEARCH_STEPS=steps, ACC=accumulator(values.dtype), CHUNK_T=CHUNK_T, BLOCK_T=BLOCK_T,
                    BLOCK_C=block_c)
                grad_weight = partial.sum(0).t().unsqueeze(1).to(values.dtype).contiguous()
            else:
                per_in, per_out = values.shape[1] // groups, channels_out // groups
                block_o, block_c = _block(per_out), _block(per_in)
                partial = values.new_empty((chunks, k, groups, per_out, per_in), dtype=acc_dtype)
                grid = (chunks, k, groups * triton.cdiv(per_out, block_o) * triton.cdiv(per_in, block_c))
                launchable(_conv_weight_grad_kernel)[grid](
                    grad_output, values, partial, offsets, offsets.shape[0] - 1, rows, per_in, per_out, -left_pad,
                    dilation, SEARCH_STEPS=steps, PRECISION=_precision(values.dtype), ACC=accumulator(values.dtype),
                    CHUNK_T=CHUNK_T, BLOCK_T=BLOCK_T, BLOCK_C=block_c, BLOCK_O=block_o)
                # [K, G, CO, CI] -> [G*CO, CI, K]
                grad_weight = partial.sum(0).permute(1, 2, 3, 0).reshape(channels_out, per_in, k)
                grad_weight = grad_weight.to(values.dtype).contiguous()
    return grad_values, grad_weight, grad_bias
