"""torch.nn.LSTM's projections (``proj_size``) on padkern's plain LSTM kernels: the route of
the GPU backends (cuda, triton). The cpu backend runs its own kernel for them
(``padkern::lstm_projected_recurrence``, csrc/cpu/lstm_projected.cpp), which multiplies by
[4H, P] and [P, H] each step.

With projections h_t = W_hr (o_t * tanh(c_t)) [P], and the next step's gates read
W_hh h_t = (W_hh W_hr) (o_t * tanh(c_t)). So an LSTM with projections is the plain LSTM
on the unprojected state u_t = o_t * tanh(c_t) with recurrent weight W_hh W_hr [4H, H],
except at each sequence's first step, where the gates read W_hh h0 instead: that term is
added to the sequence's first input row and the kernel starts from u = 0. The outputs are
then one GEMM over all tokens, u W_hr^T. Every backend's LSTM kernel (forward and
backward) runs it unchanged and autograd differentiates the composition.

The cost: each step multiplies by a [4H, H] matrix where a fused kernel would multiply
by [4H, P] and then [P, H]: up to H / P times the recurrent FLOPs when P is small.
"""
import torch


def projected_lstm(gates_x, offsets, w_hh, w_hr, h0, c0, reverse, recurrence):
    """gates_x [L, 4H] (input projection and biases), w_hh [4H, P], w_hr [P, H], h0 [B, P],
    c0 [B, H]; ``recurrence(gates_x, w_hh, h0, c0)`` runs the plain LSTM kernel and returns
    (output, h_n, c_n). Returns (output [L, P], h_n [B, P], c_n [B, H])."""
    lengths = offsets[1:] - offsets[:-1]
    started = (lengths > 0)[:, None]  # zero-length sequences take no step and return h0, c0
    # Masked before the product (torch.where, not a multiplication), so an empty
    # sequence's h0, NaN included, reaches no other row and no gradient of w_hh.
    entry = torch.where(started, h0, 0.0) @ w_hh.t()
    # Each sequence's first row, through one spare zero row: an empty sequence's index
    # (offsets[b] = L forward, offsets[b+1] - 1 = -1 in reverse) lands on the spare or on
    # another row with an exact zero, and no branch depends on L (which may be a
    # data-dependent size under torch.compile).
    spare = gates_x.new_zeros((1, gates_x.shape[1]))
    if reverse:  # row offsets[b+1] - 1 of gates_x is row offsets[b+1] of [spare; gates_x]
        gates_x = torch.cat([spare, gates_x]).index_add(0, offsets[1:], entry)[1:]
    else:
        gates_x = torch.cat([gates_x, spare]).index_add(0, offsets[:-1], entry)[:-1]
    unprojected, unprojected_n, c_n = recurrence(gates_x, w_hh @ w_hr, torch.zeros_like(c0), c0)
    projected_n = unprojected_n @ w_hr.t()
    # h_n in the projection's dtype, which autocast may have lowered (as torch.nn's h_n).
    h_n = torch.where(started, projected_n, h0.to(projected_n.dtype))
    return unprojected @ w_hr.t(), h_n, c_n
