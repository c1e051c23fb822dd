"""Schemas of padkern's native ops, defined once; the C++ and CUDA extensions only
register implementations against them (see csrc/cpu/*.cpp, csrc/cuda/bindings.cpp).

Shape letters used throughout padkern: B sequences, T padded length, L total tokens,
D flattened feature size, K in-features, N out-features, H hidden size, G gates x H.
"""
import torch

_lib = torch.library.Library("padkern", "DEF")

# values [L, D] -> padded [B, T, D] (or [T, B, D] when batch_first is false).
_lib.define("pad(Tensor values, Tensor offsets, SymInt total_length, float padding_value, bool batch_first) -> Tensor")
# padded [B, T, D] (or [T, B, D]) -> values [L, D]; L = total_tokens = offsets[-1].
_lib.define("unpad(Tensor padded, Tensor offsets, SymInt total_tokens, bool batch_first) -> Tensor")

# One layer, one direction of an LSTM over a ragged batch. gates_x [L, 4H] holds the
# input projection plus both biases; h0, c0 [B, H]. Returns output [L, H], h_n, c_n
# [B, H], and what backward needs (activated gates [L, 4H] and cell states [L, H];
# empty [0, ...] when save_for_backward is false).
_lib.define(
    "lstm_recurrence(Tensor gates_x, Tensor offsets, Tensor w_hh, Tensor h0, Tensor c0, bool reverse, "
    "bool save_for_backward) -> (Tensor, Tensor, Tensor, Tensor, Tensor)"
)
# -> grad_gates [L, 4H], grad_h0 [B, H], grad_c0 [B, H]
_lib.define(
    "lstm_recurrence_backward(Tensor grad_output, Tensor grad_h_n, Tensor grad_c_n, Tensor gates, Tensor cell, "
    "Tensor offsets, Tensor w_hh, Tensor c0, bool reverse) -> (Tensor, Tensor, Tensor)"
)
# An LSTM with projections (torch.nn.LSTM's proj_size P): w_hh [4H, P], w_hr [P, H], h0 [B, P],
# c0 [B, H]; h = (o * tanh c) w_hr^T. Returns output [L, P], h_n [B, P], c_n [B, H], and for
# backward the activated gates [L, 4H], cell states [L, H] and unprojected states o * tanh c
# [L, H] (empty [0, ...] when save_for_backward is false). CPU only: the GPU backends run the
# plain LSTM recurrence on the unprojected state (padkern/ops/_projection.py).
_lib.define(
    "lstm_projected_recurrence(Tensor gates_x, Tensor offsets, Tensor w_hh, Tensor w_hr, Tensor h0, Tensor c0, "
    "bool reverse, bool save_for_backward) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"
)
# -> grad_gates [L, 4H], grad_hidden [L, P] (the whole gradient reaching each token's h),
# grad_h0 [B, P], grad_c0 [B, H]
_lib.define(
    "lstm_projected_recurrence_backward(Tensor grad_output, Tensor grad_h_n, Tensor grad_c_n, Tensor gates, "
    "Tensor cell, Tensor offsets, Tensor w_hh, Tensor w_hr, Tensor c0, bool reverse) "
    "-> (Tensor, Tensor, Tensor, Tensor)"
)
# GRU: gates_x [L, 3H] = input projection + b_ih; b_hh [3H] stays inside the reset
# product. Returns output [L, H], h_n [B, H], activated gates [L, 3H] and
# hh_n = h W_hn^T + b_hn [L, H] for backward.
_lib.define(
    "gru_recurrence(Tensor gates_x, Tensor offsets, Tensor w_hh, Tensor b_hh, Tensor h0, bool reverse, "
    "bool save_for_backward) -> (Tensor, Tensor, Tensor, Tensor)"
)
# -> grad_gates_x [L, 3H], grad_gates_hh [L, 3H] (of h W_hh^T + b_hh), grad_h0 [B, H]
_lib.define(
    "gru_recurrence_backward(Tensor grad_output, Tensor grad_h_n, Tensor gates, Tensor hh_n, Tensor output, "
    "Tensor offsets, Tensor w_hh, Tensor h0, bool reverse) -> (Tensor, Tensor, Tensor)"
)

# Elman RNN (torch.nn.RNN): gates_x [L, H] = input projection + b_ih + b_hh; nonlinearity
# 0 tanh, 1 relu. Returns output [L, H] and h_n [B, H]; backward reads the output itself.
_lib.define(
    "rnn_recurrence(Tensor gates_x, Tensor offsets, Tensor w_hh, Tensor h0, int nonlinearity, bool reverse) "
    "-> (Tensor, Tensor)"
)
# -> grad_pre [L, H] (of gates_x, and of h W_hh^T), grad_h0 [B, H]
_lib.define(
    "rnn_recurrence_backward(Tensor grad_output, Tensor grad_h_n, Tensor output, Tensor offsets, Tensor w_hh, "
    "Tensor h0, int nonlinearity, bool reverse) -> (Tensor, Tensor)"
)
# The CPU recurrences' per-step GEMM on its own (CPU only): rows [M, K] @ weight [N, K]^T,
# plus accumulate [M, N] when given. For its tests and the performance guard's floors.
_lib.define("step_gemm(Tensor rows, Tensor weight, Tensor? accumulate) -> Tensor")

# A GEMM per sequence over its real rows only. input [L, K] (ragged) or [B, T, K]
# (padded; any strides); weight [N, K] shared (F.linear's convention) or [B, K, N] one per
# sequence; bias [N] or None. activation: 0 none, 1 relu, 2 gelu (erf), 3 silu, applied in
# the epilogue. Returns the output in the input's layout (padded rows exactly zero) and,
# when save_preactivation and an activation is set, the pre-activation (else empty [0]).
# total_tokens (L = offsets[-1]) lets backward gather a padded input's real rows without
# reading the offsets on the host; -1 when L is known only on the device (backward then
# masks the padded rows instead, so no call synchronises).
_lib.define(
    "grouped_linear(Tensor input, Tensor offsets, Tensor weight, Tensor? bias, int activation, "
    "bool save_preactivation, SymInt total_tokens) -> (Tensor, Tensor)"
)
# x [L, M], y [L, N] -> [B, M, N]: per sequence x_b^T @ y_b (zeros for an empty sequence).
_lib.define("ragged_outer_bmm(Tensor x, Tensor y, Tensor offsets) -> Tensor")
# values [L, D] -> ([B, D], argmax [B, D] int64, -1 where empty; only filled for max).
# mode: 0 sum, 1 mean, 2 max. Empty sequences give 0.
_lib.define("segment_reduce(Tensor values, Tensor offsets, int mode) -> (Tensor, Tensor)")
# values [L, D] -> [L, D]: softmax over each sequence's rows, per feature.
_lib.define("segment_softmax(Tensor values, Tensor offsets) -> Tensor")

# Attention within each sequence (FlashAttention-2's varlen scheme). q [L, Hq, D]; k, v
# [Lk, Hkv, D] with Hq a multiple of Hkv (grouped-query heads share k, v); offsets [B+1]
# index q, kv_offsets [B+1] index k and v (the same tensor for self-attention). causal:
# query i of a sequence sees keys 0..i of it (self-attention only). Returns out [L, Hq, D]
# and the float32 log-sum-exp of each row's scaled scores, lse [L, Hq] (-inf, with out 0,
# for a query with no key); no score matrix is kept.
_lib.define(
    "ragged_attention(Tensor q, Tensor k, Tensor v, Tensor offsets, Tensor kv_offsets, bool causal, float scale) "
    "-> (Tensor, Tensor)"
)
# Recomputes the scores from lse. -> grad_q [L, Hq, D], grad_k, grad_v [Lk, Hkv, D]
_lib.define(
    "ragged_attention_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, "
    "Tensor offsets, Tensor kv_offsets, bool causal, float scale) -> (Tensor, Tensor, Tensor)"
)

# 1-D convolution of each sequence on its own, zero-padded at its own edges. values
# [L, C_in]; weight [C_out, C_in / groups, k] (torch.nn.Conv1d's); bias [C_out] or None.
# Output token t of a sequence reads that sequence's tokens t - left_pad + j * dilation,
# j < k, and zeros where those fall outside it (right padding dilation * (k - 1) - left_pad).
# Returns [L, C_out] under the same offsets.
_lib.define(
    "ragged_conv1d(Tensor values, Tensor offsets, Tensor weight, Tensor? bias, int left_pad, int dilation, "
    "int groups) -> Tensor"
)
# -> grad_values [L, C_in], grad_weight [C_out, C_in / groups, k], grad_bias [C_out]; an
# output whose output_mask entry is false is not computed and comes back as an empty [0].
_lib.define(
    "ragged_conv1d_backward(Tensor grad_output, Tensor values, Tensor offsets, Tensor weight, int left_pad, "
    "int dilation, int groups, bool[3] output_mask) -> (Tensor, Tensor, Tensor)"
)
