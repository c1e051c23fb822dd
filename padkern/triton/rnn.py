"""Triton LSTM/GRU/RNN recurrences: one program per sequence runs all its steps in one
launch, fusing the recurrent matvec ``h @ w_hh^T`` with the gate maths, reading the
precomputed input gates at the sequence's own tokens and writing output rows in
place. The hidden state lives in an fp32 (fp64 for double) buffer ``[B, H]`` so
that chunks of it can be re-read across the matvec; it ends as h_n.
Equations mirror csrc/include/padkern/rnn_cells.h.
"""
import torch
import triton
import triton.language as tl

from . import guards
from .guards import sequence_bounds
from .registration import launchable, triton_kernel_op


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    return 2.0 * _sigmoid(2.0 * x) - 1.0


@triton.jit
def _step_token(bos, eos, t, REVERSE: tl.constexpr):
    if REVERSE:
        return eos - 1 - t
    else:
        return bos + t


@triton.jit
def _lstm_forward_kernel(
    p_gates_x, p_offsets, p_w_t, p_h, p_c, p_out, p_saved_gates, p_saved_cell, L, H,
    REVERSE: tl.constexpr, SAVE: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):
    i_b = tl.program_id(0).to(tl.int64)
    bos, eos = sequence_bounds(p_offsets, i_b, L)
    G = 4 * H
    o_h = tl.arange(0, BLOCK_H)
    m_h = o_h < H
    p_h_b = p_h + i_b * H
    b_c = tl.load(p_c + i_b * H + o_h, mask=m_h, other=0.0)
    for t in range(0, eos - bos):
        i_tok = _step_token(bos, eos, t, REVERSE)
        p_x = p_gates_x + i_tok * G + o_h
        acc_i = tl.load(p_x, mask=m_h, other=0.0).to(b_c.dtype)
        acc_f = tl.load(p_x + H, mask=m_h, other=0.0).to(b_c.dtype)
        acc_g = tl.load(p_x + 2 * H, mask=m_h, other=0.0).to(b_c.dtype)
        acc_o = tl.load(p_x + 3 * H, mask=m_h, other=0.0).to(b_c.dtype)
        for k0 in range(0, H, BLOCK_K):
            o_k = k0 + tl.arange(0, BLOCK_K)
            m_k = o_k < H
            b_h = tl.load(p_h_b + o_k, mask=m_k, other=0.0)[:, None]
            p_w = p_w_t + o_k[:, None].to(tl.int64) * G + o_h[None, :]
            m_w = m_k[:, None] & m_h[None, :]
            acc_i += tl.sum(b_h * tl.load(p_w, mask=m_w, other=0.0).to(b_c.dtype), 0)
            acc_f += tl.sum(b_h * tl.load(p_w + H, mask=m_w, other=0.0).to(b_c.dtype), 0)
            acc_g += tl.sum(b_h * tl.load(p_w + 2 * H, mask=m_w, other=0.0).to(b_c.dtype), 0)
            acc_o += tl.sum(b_h * tl.load(p_w + 3 * H, mask=m_w, other=0.0).to(b_c.dtype), 0)
        b_i, b_f, b_g, b_o = _sigmoid(acc_i), _sigmoid(acc_f), _tanh(acc_g), _sigmoid(acc_o)
        b_c = b_f * b_c + b_i * b_g
        b_h_new = b_o * _tanh(b_c)
        tl.debug_barrier()  # every read of the old state is done
        tl.store(p_h_b + o_h, b_h_new, mask=m_h)
        tl.store(p_out + i_tok * H + o_h, b_h_new.to(p_out.dtype.element_ty), mask=m_h)
        if SAVE:
            p_s = p_saved_gates + i_tok * G + o_h
            tl.store(p_s, b_i.to(p_s.dtype.element_ty), mask=m_h)
            tl.store(p_s + H, b_f.to(p_s.dtype.element_ty), mask=m_h)
            tl.store(p_s + 2 * H, b_g.to(p_s.dtype.element_ty), mask=m_h)
            tl.store(p_s + 3 * H, b_o.to(p_s.dtype.element_ty), mask=m_h)
            tl.store(p_saved_cell + i_tok * H + o_h, b_c.to(p_saved_cell.dtype.element_ty), mask=m_h)
        tl.debug_barrier()  # the new state is visible to the whole program
    tl.store(p_c + i_b * H + o_h, b_c, mask=m_h)


@triton.jit
def _lstm_backward_kernel(
    p_grad_out, p_saved_gates, p_saved_cell, p_c0, p_offsets, p_w, p_dh, p_dc, p_grad_gates, L, H,
    REVERSE: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):
    i_b = tl.program_id(0).to(tl.int64)
    bos, eos = sequence_bounds(p_offsets, i_b, L)
    G = 4 * H
    o_h = tl.arange(0, BLOCK_H)
    m_h = o_h < H
    p_dh_b = p_dh + i_b * H
    b_dc = tl.load(p_dc + i_b * H + o_h, mask=m_h, other=0.0)
    n_steps = eos - bos
    for s in range(0, n_steps):
        t = n_steps - 1 - s
        i_tok = _step_token(bos, eos, t, REVERSE)
        b_dh = tl.load(p_dh_b + o_h, mask=m_h, other=0.0)
        b_dh += tl.load(p_grad_out + i_tok * H + o_h, mask=m_h, other=0.0).to(b_dc.dtype)
        p_s = p_saved_gates + i_tok * G + o_h
        b_i = tl.load(p_s, mask=m_h, other=0.0).to(b_dc.dtype)
        b_f = tl.load(p_s + H, mask=m_h, other=0.0).to(b_dc.dtype)
        b_g = tl.load(p_s + 2 * H, mask=m_h, other=0.0).to(b_dc.dtype)
        b_o = tl.load(p_s + 3 * H, mask=m_h, other=0.0).to(b_dc.dtype)
        b_cell = tl.load(p_saved_cell + i_tok * H + o_h, mask=m_h, other=0.0).to(b_dc.dtype)
        # The cell state before step t: saved at the previous token, or c0 at the first step.
        # A branch, not a mask mixing the scalar t > 0 with m_h: the interpreter makes that
        # mask int32, which triton >= 3.9 refuses.
        if t > 0:
            i_prev = _step_token(bos, eos, t - 1, REVERSE)
            b_c_prev = tl.load(p_saved_cell + i_prev * H + o_h, mask=m_h, other=0.0).to(b_dc.dtype)
        else:
            b_c_prev = tl.load(p_c0 + i_b * H + o_h, mask=m_h, other=0.0).to(b_dc.dtype)
        tanh_c = _tanh(b_cell)
        b_dc += b_dh * b_o * (1.0 - tanh_c * tanh_c)
        d_o = b_dh * tanh_c * b_o * (1.0 - b_o)
        d_i = b_dc * b_g * b_i * (1.0 - b_i)
        d_g = b_dc * b_i * (1.0 - b_g * b_g)
        d_f = b_dc * b_c_prev * b_f * (1.0 - b_f)
        b_dc = b_dc * b_f
        p_gg = p_grad_gates + i_tok * G + o_h
        tl.store(p_gg, d_i.to(p_gg.dtype.element_ty), mask=m_h)
        tl.store(p_gg + H, d_f.to(p_gg.dtype.element_ty), mask=m_h)
        tl.store(p_gg + 2 * H, d_g.to(p_gg.dtype.element_ty), mask=m_h)
        tl.store(p_gg + 3 * H, d_o.to(p_gg.dtype.element_ty), mask=m_h)
        tl.debug_barrier()  # every read of dh is done
        # dh_prev[k] = sum over gate rows r of d_gates[r] * w_hh[r, k], chunk by chunk of k.
        for k0 in range(0, H, BLOCK_K):
            o_k = k0 + tl.arange(0, BLOCK_K)
            m_w = m_h[:, None] & (o_k < H)[None, :]
            p_w_k = p_w + o_h[:, None].to(tl.int64) * H + o_k[None, :]
            acc = tl.sum(d_i[:, None] * tl.load(p_w_k, mask=m_w, other=0.0).to(b_dc.dtype), 0)
            acc += tl.sum(d_f[:, None] * tl.load(p_w_k + H * H, mask=m_w, other=0.0).to(b_dc.dtype), 0)
            acc += tl.sum(d_g[:, None] * tl.load(p_w_k + 2 * H * H, mask=m_w, other=0.0).to(b_dc.dtype), 0)
            acc += tl.sum(d_o[:, None] * tl.load(p_w_k + 3 * H * H, mask=m_w, other=0.0).to(b_dc.dtype), 0)
            tl.store(p_dh_b + o_k, acc, mask=o_k < H)
        tl.debug_barrier()  # dh_prev is visible to the whole program
    tl.store(p_dc + i_b * H + o_h, b_dc, mask=m_h)


@triton.jit
def _gru_forward_kernel(
    p_gates_x, p_offsets, p_w_t, p_b_hh, p_h, p_out, p_saved_gates, p_saved_hh_n, L, H,
    REVERSE: tl.constexpr, SAVE: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):
    i_b = tl.program_id(0).to(tl.int64)
    bos, eos = sequence_bounds(p_offsets, i_b, L)
    G = 3 * H
    o_h = tl.arange(0, BLOCK_H)
    m_h = o_h < H
    p_h_b = p_h + i_b * H
    b_bias_r = tl.load(p_b_hh + o_h, mask=m_h, other=0.0)
    b_bias_z = tl.load(p_b_hh + H + o_h, mask=m_h, other=0.0)
    b_bias_n = tl.load(p_b_hh + 2 * H + o_h, mask=m_h, other=0.0)
    for t in range(0, eos - bos):
        i_tok = _step_token(bos, eos, t, REVERSE)
        b_h_prev = tl.load(p_h_b + o_h, mask=m_h, other=0.0)
        acc_r = b_bias_r.to(b_h_prev.dtype)
        acc_z = b_bias_z.to(b_h_prev.dtype)
        acc_n = b_bias_n.to(b_h_prev.dtype)
        for k0 in range(0, H, BLOCK_K):
            o_k = k0 + tl.arange(0, BLOCK_K)
            m_k = o_k < H
            b_h = tl.load(p_h_b + o_k, mask=m_k, other=0.0)[:, None]
            p_w = p_w_t + o_k[:, None].to(tl.int64) * G + o_h[None, :]
            m_w = m_k[:, None] & m_h[None, :]
            acc_r += tl.sum(b_h * tl.load(p_w, mask=m_w, other=0.0).to(b_h_prev.dtype), 0)
            acc_z += tl.sum(b_h * tl.load(p_w + H, mask=m_w, other=0.0).to(b_h_prev.dtype), 0)
            acc_n += tl.sum(b_h * tl.load(p_w + 2 * H, mask=m_w, other=0.0).to(b_h_prev.dtype), 0)
        p_x = p_gates_x + i_tok * G + o_h
        b_r = _sigmoid(tl.load(p_x, mask=m_h, other=0.0).to(b_h_prev.dtype) + acc_r)
        b_z = _sigmoid(tl.load(p_x + H, mask=m_h, other=0.0).to(b_h_prev.dtype) + acc_z)
        b_n = _tanh(tl.load(p_x + 2 * H, mask=m_h, other=0.0).to(b_h_prev.dtype) + b_r * acc_n)
        b_h_new = (1.0 - b_z) * b_n + b_z * b_h_prev
        tl.debug_barrier()  # every read of the old state is done
        tl.store(p_h_b + o_h, b_h_new, mask=m_h)
        tl.store(p_out + i_tok * H + o_h, b_h_new.to(p_out.dtype.element_ty), mask=m_h)
        if SAVE:
            p_s = p_saved_gates + i_tok * G + o_h
            tl.store(p_s, b_r.to(p_s.dtype.element_ty), mask=m_h)
            tl.store(p_s + H, b_z.to(p_s.dtype.element_ty), mask=m_h)
            tl.store(p_s + 2 * H, b_n.to(p_s.dtype.element_ty), mask=m_h)
            tl.store(p_saved_hh_n + i_tok * H + o_h, acc_n.to(p_saved_hh_n.dtype.element_ty), mask=m_h)
        tl.debug_barrier()  # the new state is visible to the whole program


@triton.jit
def _gru_backward_kernel(
    p_grad_out, p_saved_gates, p_saved_hh_n, p_out, p_h0, p_offsets, p_w, p_dh, p_grad_x, p_grad_hh, L, H,
    REVERSE: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):
    i_b = tl.program_id(0).to(tl.int64)
    bos, eos = sequence_bounds(p_offsets, i_b, L)
    G = 3 * H
    o_h = tl.arange(0, BLOCK_H)
    m_h = o_h < H
    p_dh_b = p_dh + i_b * H
    n_steps = eos - bos
    for s in range(0, n_steps):
        t = n_steps - 1 - s
        i_tok = _step_token(bos, eos, t, REVERSE)
        b_dh = tl.load(p_dh_b + o_h, mask=m_h, other=0.0)
        b_dh += tl.load(p_grad_out + i_tok * H + o_h, mask=m_h, other=0.0).to(b_dh.dtype)
        p_s = p_saved_gates + i_tok * G + o_h
        b_r = tl.load(p_s, mask=m_h, other=0.0).to(b_dh.dtype)
        b_z = tl.load(p_s + H, mask=m_h, other=0.0).to(b_dh.dtype)
        b_n = tl.load(p_s + 2 * H, mask=m_h, other=0.0).to(b_dh.dtype)
        b_hh_n = tl.load(p_saved_hh_n + i_tok * H + o_h, mask=m_h, other=0.0).to(b_dh.dtype)
        # The hidden state before step t: the output at the previous token, or h0 at the first
        # step (a branch, not a scalar-and-vector mask: see the LSTM backward).
        if t > 0:
            i_prev = _step_token(bos, eos, t - 1, REVERSE)
            b_h_prev = tl.load(p_out + i_prev * H + o_h, mask=m_h, other=0.0).to(b_dh.dtype)
        else:
            b_h_prev = tl.load(p_h0 + i_b * H + o_h, mask=m_h, other=0.0).to(b_dh.dtype)
        d_n = b_dh * (1.0 - b_z) * (1.0 - b_n * b_n)
        d_hh_n = d_n * b_r
        d_r = d_n * b_hh_n * b_r * (1.0 - b_r)
        d_z = b_dh * (b_h_prev - b_n) * b_z * (1.0 - b_z)
        p_gx = p_grad_x + i_tok * G + o_h
        p_gh = p_grad_hh + i_tok * G + o_h
        tl.store(p_gx, d_r.to(p_gx.dtype.element_ty), mask=m_h)
        tl.store(p_gx + H, d_z.to(p_gx.dtype.element_ty), mask=m_h)
        tl.store(p_gx + 2 * H, d_n.to(p_gx.dtype.element_ty), mask=m_h)
        tl.store(p_gh, d_r.to(p_gh.dtype.element_ty), mask=m_h)
        tl.store(p_gh + H, d_z.to(p_gh.dtype.element_ty), mask=m_h)
        tl.store(p_gh + 2 * H, d_hh_n.to(p_gh.dtype.element_ty), mask=m_h)
        tl.debug_barrier()  # every read of dh is done
        tl.store(p_dh_b + o_h, b_dh * b_z, mask=m_h)  # the direct z * h_prev path
        tl.debug_barrier()
        for k0 in range(0, H, BLOCK_K):
            o_k = k0 + tl.arange(0, BLOCK_K)
            m_k = o_k < H
            m_w = m_h[:, None] & m_k[None, :]
            p_w_k = p_w + o_h[:, None].to(tl.int64) * H + o_k[None, :]
            acc = tl.load(p_dh_b + o_k, mask=m_k, other=0.0)
            acc += tl.sum(d_r[:, None] * tl.load(p_w_k, mask=m_w, other=0.0).to(b_dh.dtype), 0)
            acc += tl.sum(d_z[:, None] * tl.load(p_w_k + H * H, mask=m_w, other=0.0).to(b_dh.dtype), 0)
            acc += tl.sum(d_hh_n[:, None] * tl.load(p_w_k + 2 * H * H, mask=m_w, other=0.0).to(b_dh.dtype), 0)
            tl.store(p_dh_b + o_k, acc, mask=m_k)
        tl.debug_barrier()  # dh_prev is visible to the whole program


@triton.jit
def _rnn_activation(pre, RELU: tl.constexpr):
    if RELU:
        return tl.where(pre < 0.0, 0.0, pre)  # NaN propagates, as torch.relu
    else:
        return _tanh(pre)


@triton.jit
def _rnn_derivative(h, dh, RELU: tl.constexpr):
    """The pre-activation's gradient from the step's output h (relu: torch's threshold_backward,
    which blocks h <= 0 and passes NaN)."""
    if RELU:
        return tl.where(h <= 0.0, 0.0, dh)
    else:
        return dh * (1.0 - h * h)


@triton.jit
def _rnn_forward_kernel(
    p_gates_x, p_offsets, p_w_t, p_h, p_out, L, H,
    REVERSE: tl.constexpr, RELU: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):
    i_b = tl.program_id(0).to(tl.int64)
    bos, eos = sequence_bounds(p_offsets, i_b, L)
    o_h = tl.arange(0, BLOCK_H)
    m_h = o_h < H
    p_h_b = p_h + i_b * H
    for t in range(0, eos - bos):
        i_tok = _step_token(bos, eos, t, REVERSE)
        acc = tl.load(p_gates_x + i_tok * H + o_h, mask=m_h, other=0.0).to(p_h.dtype.element_ty)
        for k0 in range(0, H, BLOCK_K):
            o_k = k0 + tl.arange(0, BLOCK_K)
            m_k = o_k < H
            b_h = tl.load(p_h_b + o_k, mask=m_k, other=0.0)[:, None]
            p_w = p_w_t + o_k[:, None].to(tl.int64) * H + o_h[None, :]
            acc += tl.sum(b_h * tl.load(p_w, mask=m_k[:, None] & m_h[None, :], other=0.0).to(acc.dtype), 0)
        b_h_new = _rnn_activation(acc, RELU)
        tl.debug_barrier()  # every read of the old state is done
        tl.store(p_h_b + o_h, b_h_new, mask=m_h)
        tl.store(p_out + i_tok * H + o_h, b_h_new.to(p_out.dtype.element_ty), mask=m_h)
        tl.debug_barrier()  # the new state is visible to the whole program


@triton.jit
def _rnn_backward_kernel(
    p_grad_out, p_out, p_offsets, p_w, p_dh, p_grad_pre, L, H,
    REVERSE: tl.constexpr, RELU: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):
    i_b = tl.program_id(0).to(tl.int64)
    bos, eos = sequence_bounds(p_offsets, i_b, L)
    o_h = tl.arange(0, BLOCK_H)
    m_h = o_h < H
    p_dh_b = p_dh + i_b * H
    n_steps = eos - bos
    for s in range(0, n_steps):
        t = n_steps - 1 - s
        i_tok = _step_token(bos, eos, t, REVERSE)
        b_dh = tl.load(p_dh_b + o_h, mask=m_h, other=0.0)
        b_dh += tl.load(p_grad_out + i_tok * H + o_h, mask=m_h, other=0.0).to(b_dh.dtype)
        b_h = tl.load(p_out + i_tok * H + o_h, mask=m_h, other=0.0).to(b_dh.dtype)
        d_pre = _rnn_derivative(b_h, b_dh, RELU)
        tl.store(p_grad_pre + i_tok * H + o_h, d_pre.to(p_grad_pre.dtype.element_ty), mask=m_h)
        tl.debug_barrier()  # every read of dh is done
        # dh_prev[k] = sum over rows r of d_pre[r] * w_hh[r, k], chunk by chunk of k.
        for k0 in range(0, H, BLOCK_K):
            o_k = k0 + tl.arange(0, BLOCK_K)
            m_k = o_k < H
            p_w_k = p_w + o_h[:, None].to(tl.int64) * H + o_k[None, :]
            w_k = tl.load(p_w_k, mask=m_h[:, None] & m_k[None, :], other=0.0).to(b_dh.dtype)
            tl.store(p_dh_b + o_k, tl.sum(d_pre[:, None] * w_k, 0), mask=m_k)
        tl.debug_barrier()  # dh_prev is visible to the whole program


# ----- launchers, registered as torch ops ----------------------------------------------
# Shapes: L tokens, B sequences, H hidden, G = 4H (LSTM), 3H (GRU) or H (RNN) gate rows.
def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _state(initial: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A row-major [B, H] working copy of a state (``.to(copy=True)`` would keep a view's strides)."""
    return initial.to(dtype, memory_format=torch.contiguous_format, copy=True)


def _check(op: str, offsets: torch.Tensor, batch: int, device: torch.device, dense: dict, copied: dict) -> None:
    """offsets [B+1]; each of ``dense`` (name: (tensor, shape)), which the kernel reads as it is,
    row-major of that shape; each of ``copied``, which the launcher copies first, of that shape."""
    guards.check_offsets(op, offsets, device, batch)
    for name, (tensor, shape) in dense.items():
        guards.check_dense(op, name, tensor, device, shape)
    for name, (tensor, shape) in copied.items():
        guards.check_tensor(op, name, tensor, device, shape)


def _blocks(hidden: int):
    block_h = triton.next_power_of_2(max(hidden, 1))
    # A [BLOCK_K, BLOCK_H] weight tile of about 4K elements per gate keeps registers in check.
    block_k = max(1, min(block_h, 4096 // block_h))
    return dict(BLOCK_H=block_h, BLOCK_K=block_k, num_warps=4 if block_h <= 256 else 8)


def _saved(tokens: int, width: int, like: torch.Tensor, save: bool) -> torch.Tensor:
    return like.new_empty((tokens if save else 0, width))


@triton_kernel_op("padkern::lstm_recurrence_triton")
def lstm_recurrence_triton(gates_x: torch.Tensor, offsets: torch.Tensor, w_hh: torch.Tensor, h0: torch.Tensor,
                           c0: torch.Tensor, reverse: bool, save_for_backward: bool
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """gates_x [L, G], w_hh [G, H], h0/c0 [B, H] -> (output [L, H], h_n, c_n, saved gates [L, G], saved cell [L, H])."""
    tokens, (batch, hidden) = gates_x.shape[0], h0.shape
    _check("lstm_recurrence_triton", offsets, batch, gates_x.device, dense=dict(gates_x=(gates_x, (tokens, 4 * hidden))),
           copied=dict(w_hh=(w_hh, (4 * hidden, hidden)), c0=(c0, (batch, hidden))))
    w_t = w_hh.t().contiguous()  # [H, G]: step k of the matvec reads one row of G gate weights
    accumulation = _accumulation_dtype(gates_x.dtype)
    h, c = _state(h0, accumulation), _state(c0, accumulation)
    output = gates_x.new_empty((tokens, hidden))
    saved_gates = _saved(tokens, 4 * hidden, gates_x, save_for_backward)
    saved_cell = _saved(tokens, hidden, gates_x, save_for_backward)
    if batch > 0 and hidden > 0:
        launchable(_lstm_forward_kernel)[(batch,)](
            gates_x, offsets, w_t, h, c, output, saved_gates, saved_cell, tokens, hidden,
            REVERSE=reverse, SAVE=save_for_backward, **_blocks(hidden))
    return output, h.to(h0.dtype), c.to(c0.dtype), saved_gates, saved_cell


@triton_kernel_op("padkern::lstm_recurrence_backward_triton")
def lstm_recurrence_backward_triton(grad_output: torch.Tensor, grad_h_n: torch.Tensor, grad_c_n: torch.Tensor,
                                    gates: torch.Tensor, cell: torch.Tensor, offsets: torch.Tensor,
                                    w_hh: torch.Tensor, c0: torch.Tensor, reverse: bool
                                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """grad_output [L, H], grad_h_n/grad_c_n [B, H], the forward's saved gates [L, G] and cell
    [L, H], w_hh [G, H], c0 [B, H] -> (grad of gates_x [L, G], grad h0, grad c0)."""
    tokens, (batch, hidden) = grad_output.shape[0], c0.shape
    _check("lstm_recurrence_backward_triton", offsets, batch, grad_output.device,
           dense=dict(grad_output=(grad_output, (tokens, hidden)), gates=(gates, (tokens, 4 * hidden)),
                      cell=(cell, (tokens, hidden)), w_hh=(w_hh, (4 * hidden, hidden)), c0=(c0, (batch, hidden))),
           copied=dict(grad_h_n=(grad_h_n, (batch, hidden)), grad_c_n=(grad_c_n, (batch, hidden))))
    accumulation = _accumulation_dtype(grad_output.dtype)
    dh, dc = _state(grad_h_n, accumulation), _state(grad_c_n, accumulation)
    grad_gates = grad_output.new_empty((tokens, 4 * hidden))
    if batch > 0 and hidden > 0:
        launchable(_lstm_backward_kernel)[(batch,)](
            grad_output, gates, cell, c0, offsets, w_hh, dh, dc, grad_gates, tokens, hidden,
            REVERSE=reverse, **_blocks(hidden))
    return grad_gates, dh.to(c0.dtype), dc.to(c0.dtype)


@triton_kernel_op("padkern::gru_recurrence_triton")
def gru_recurrence_triton(gates_x: torch.Tensor, offsets: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor,
                          h0: torch.Tensor, reverse: bool, save_for_backward: bool
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """gates_x [L, G], w_hh [G, H], b_hh [G], h0 [B, H] -> (output [L, H], h_n, saved gates [L, G],
    saved w_hn h + b_hn [L, H])."""
    tokens, (batch, hidden) = gates_x.shape[0], h0.shape
    _check("gru_recurrence_triton", offsets, batch, gates_x.device,
           dense=dict(gates_x=(gates_x, (tokens, 3 * hidden)), b_hh=(b_hh, (3 * hidden,))),
           copied=dict(w_hh=(w_hh, (3 * hidden, hidden)), h0=(h0, (batch, hidden))))
    w_t = w_hh.t().contiguous()  # [H, G]: step k of the matvec reads one row of G gate weights
    h = _state(h0, _accumulation_dtype(gates_x.dtype))
    output = gates_x.new_empty((tokens, hidden))
    saved_gates = _saved(tokens, 3 * hidden, gates_x, save_for_backward)
    saved_hh_n = _saved(tokens, hidden, gates_x, save_for_backward)
    if batch > 0 and hidden > 0:
        launchable(_gru_forward_kernel)[(batch,)](
            gates_x, offsets, w_t, b_hh, h, output, saved_gates, saved_hh_n, tokens, hidden,
            REVERSE=reverse, SAVE=save_for_backward, **_blocks(hidden))
    return output, h.to(h0.dtype), saved_gates, saved_hh_n


@triton_kernel_op("padkern::gru_recurrence_backward_triton")
def gru_recurrence_backward_triton(grad_output: torch.Tensor, grad_h_n: torch.Tensor, gates: torch.Tensor,
                                   hh_n: torch.Tensor, output: torch.Tensor, offsets: torch.Tensor,
                                   w_hh: torch.Tensor, h0: torch.Tensor, reverse: bool
                                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """grad_output [L, H], grad_h_n [B, H], the forward's saved gates [L, G], hh_n [L, H] and
    output [L, H], w_hh [G, H], h0 [B, H] -> (grad of gates_x [L, G], of w_hh h + b_hh [L, G], grad h0)."""
    tokens, (batch, hidden) = grad_output.shape[0], h0.shape
    _check("gru_recurrence_backward_triton", offsets, batch, grad_output.device,
           dense=dict(grad_output=(grad_output, (tokens, hidden)), gates=(gates, (tokens, 3 * hidden)),
                      hh_n=(hh_n, (tokens, hidden)), output=(output, (tokens, hidden)),
                      w_hh=(w_hh, (3 * hidden, hidden)), h0=(h0, (batch, hidden))),
           copied=dict(grad_h_n=(grad_h_n, (batch, hidden))))
    dh = _state(grad_h_n, _accumulation_dtype(grad_output.dtype))
    grad_gates_x = grad_output.new_empty((tokens, 3 * hidden))
    grad_gates_hh = grad_output.new_empty((tokens, 3 * hidden))
    if batch > 0 and hidden > 0:
        launchable(_gru_backward_kernel)[(batch,)](
            grad_output, gates, hh_n, output, h0, offsets, w_hh, dh, grad_gates_x, grad_gates_hh, tokens, hidden,
            REVERSE=reverse, **_blocks(hidden))
    return grad_gates_x, grad_gates_hh, dh.to(h0.dtype)


def _check_nonlinearity(op: str, nonlinearity: int) -> None:
    if nonlinearity not in (0, 1):  # a RuntimeError, as the native op's check
        raise RuntimeError(f"{op}: nonlinearity must be 0 (tanh) or 1 (relu), got {nonlinearity}")


@triton_kernel_op("padkern::rnn_recurrence_triton")
def rnn_recurrence_triton(gates_x: torch.Tensor, offsets: torch.Tensor, w_hh: torch.Tensor, h0: torch.Tensor,
                          nonlinearity: int, reverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """gates_x [L, H], w_hh [H, H], h0 [B, H] -> (output [L, H], h_n [B, H]); nonlinearity 0 tanh, 1 relu."""
    tokens, (batch, hidden) = gates_x.shape[0], h0.shape
    _check_nonlinearity("rnn_recurrence_triton", nonlinearity)
    _check("rnn_recurrence_triton", offsets, batch, gates_x.device, dense=dict(gates_x=(gates_x, (tokens, hidden))),
           copied=dict(w_hh=(w_hh, (hidden, hidden)), h0=(h0, (batch, hidden))))
    w_t = w_hh.t().contiguous()  # [H, H]: step k of the matvec reads one row
    h = _state(h0, _accumulation_dtype(gates_x.dtype))
    output = gates_x.new_empty((tokens, hidden))
    if batch > 0 and hidden > 0:
        launchable(_rnn_forward_kernel)[(batch,)](
            gates_x, offsets, w_t, h, output, tokens, hidden,
            REVERSE=reverse, RELU=nonlinearity == 1, **_blocks(hidden))
    return output, h.to(h0.dtype)


@triton_kernel_op("padkern::rnn_recurrence_backward_triton")
def rnn_recurrence_backward_triton(grad_output: torch.Tensor, grad_h_n: torch.Tensor, output: torch.Tensor,
                                   offsets: torch.Tensor, w_hh: torch.Tensor, h0: torch.Tensor, nonlinearity: int,
                                   reverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """grad_output [L, H], grad_h_n [B, H], the forward's output [L, H], w_hh [H, H], h0 [B, H]
    -> (grad of the pre-activation [L, H], grad h0 [B, H])."""
    tokens, (batch, hidden) = grad_output.shape[0], h0.shape
    _check_nonlinearity("rnn_recurrence_backward_triton", nonlinearity)
    _check("rnn_recurrence_backward_triton", offsets, batch, grad_output.device,
           dense=dict(grad_output=(grad_output, (tokens, hidden)), output=(output, (tokens, hidden)),
                      w_hh=(w_hh, (hidden, hidden))),
           copied=dict(grad_h_n=(grad_h_n, (batch, hidden)), h0=(h0, (batch, hidden))))
    dh = _state(grad_h_n, _accumulation_dtype(grad_output.dtype))
    grad_pre = grad_output.new_empty((tokens, hidden))
    if batch > 0 and hidden > 0:
        launchable(_rnn_backward_kernel)[(batch,)](
            grad_output, output, offsets, w_hh, dh, grad_pre, tokens, hidden,
            REVERSE=reverse, RELU=nonlinearity == 1, **_blocks(hidden))
    return grad_pre, dh.to(h0.dtype)
