"""Every rule at the public boundary raises a message naming the argument and the rule.
Wrong sizes use 7 so a message cannot pass by accident."""
import pytest
import torch

import padkern
from padkern import Ragged


def test_offsets_dtype():
    with pytest.raises(TypeError, match=r"offsets must be int64 or int32, got torch.float32"):
        padkern.ops.pad(torch.randn(3, 2), torch.tensor([0.0, 3.0]))


def test_offsets_rank():
    with pytest.raises(ValueError, match=r"offsets must be 1-D with B\+1 >= 1 entries, got shape \(7, 1\)"):
        padkern.ops.pad(torch.randn(3, 2), torch.zeros(7, 1, dtype=torch.int64))


def test_offsets_device():
    if not torch.cuda.is_available():
        pytest.skip("needs a second device")
    with pytest.raises(ValueError, match=r"offsets must be on the values' device"):
        padkern.ops.pad(torch.randn(3, 2, device="cuda"), torch.tensor([0, 3]))


def test_offsets_must_start_at_zero():
    with pytest.raises(ValueError, match=r"offsets\[0\] must be 0, got 7"):
        padkern.ops.pad(torch.randn(9, 2), torch.tensor([7, 9]))


def test_offsets_must_not_decrease():
    with pytest.raises(ValueError, match=r"offsets must be non-decreasing, but offsets\[2\]=1 < offsets\[1\]=7"):
        padkern.ops.pad(torch.randn(9, 2), torch.tensor([0, 7, 1, 9]))


def test_offsets_last_must_match_rows():
    with pytest.raises(ValueError, match=r"offsets\[-1\] must equal the number of value rows 9, got 7"):
        padkern.ops.pad(torch.randn(9, 2), torch.tensor([0, 7]))


def test_offsets_length_must_match_padded_batch():
    with pytest.raises(ValueError, match=r"offsets must have B\+1 = 4 entries for a padded batch of 3, got 7"):
        padkern.ops.unpad(torch.randn(3, 5, 2), torch.arange(7))


def test_total_length_shorter_than_a_sequence():
    with pytest.raises(ValueError, match=r"total_length must be at least the longest sequence 7, got 3"):
        padkern.ops.pad(torch.randn(9, 2), torch.tensor([0, 7, 9]), total_length=3)


def test_lengths_longer_than_padded():
    with pytest.raises(ValueError, match=r"lengths must not exceed the padded length 5, got 7"):
        Ragged.from_padded(torch.randn(2, 5, 3), torch.tensor([7, 1]))


def test_lengths_negative():
    with pytest.raises(ValueError, match=r"lengths must be non-negative, got -7"):
        Ragged.from_padded(torch.randn(2, 5, 3), torch.tensor([-7, 1]))


def test_lengths_count():
    with pytest.raises(ValueError, match=r"lengths must be 1-D with one entry per sequence \(2\), got shape \(7,\)"):
        Ragged.from_padded(torch.randn(2, 5, 3), torch.ones(7, dtype=torch.int64))


def test_lengths_dtype():
    with pytest.raises(TypeError, match=r"lengths must be an integer tensor, got torch.float32"):
        Ragged.from_padded(torch.randn(2, 5, 3), torch.tensor([1.0, 2.0]))


def test_unpad_lengths_beyond_padded():
    with pytest.raises(ValueError, match=r"lengths must not exceed the padded length 5, got 7"):
        padkern.ops.unpad(torch.randn(2, 5, 3), torch.tensor([0, 7, 8]))


def test_mask_shape_and_dtype():
    with pytest.raises(TypeError, match=r"mask must be bool, got torch.int64"):
        Ragged.from_mask(torch.randn(2, 5, 3), torch.ones(2, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"mask must have shape \(2, 5\) \(x's batch and time\), got \(2, 7\)"):
        Ragged.from_mask(torch.randn(2, 5, 3), torch.ones(2, 7, dtype=torch.bool))


def test_packed_cannot_hold_empty_sequences():
    ragged = Ragged(torch.randn(3, 2), torch.tensor([0, 3, 3]))
    with pytest.raises(ValueError, match=r"cannot hold zero-length sequences, but sequence 1 has length 0"):
        ragged.to_packed()


def test_with_values_row_count():
    ragged = Ragged(torch.randn(3, 2), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"values must have 3 rows \(one per token\), got 7"):
        ragged.with_values(torch.randn(7, 2))


def test_unknown_backend():
    with pytest.raises(ValueError, match=r"backend must be one of .*got 'fast'"):
        padkern.ops.pad(torch.randn(3, 2), torch.tensor([0, 3]), backend="fast")
    with pytest.raises(ValueError, match=r"backend must be one of"):
        with padkern.use_backend("fast"):
            pass


def test_forced_backend_unavailable_is_an_error():
    values, offsets = torch.randn(3, 2), torch.tensor([0, 3])
    with pytest.raises(padkern.BackendUnavailableError, match=r"backend 'cuda' was requested but is unavailable: the cuda backend runs on CUDA tensors"):
        padkern.ops.pad(values, offsets, backend="cuda")
    with padkern.use_backend("cuda"):
        with pytest.raises(padkern.BackendUnavailableError, match=r"backend 'cuda'"):
            padkern.ops.pad(values, offsets)


def test_debug_mode_checks_gpu_offsets():
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    padkern.set_debug(True)
    try:
        with pytest.raises(ValueError, match=r"offsets\[0\] must be 0, got 7"):
            padkern.ops.pad(torch.randn(9, 2, device="cuda"), torch.tensor([7, 9], device="cuda"))
    finally:
        padkern.set_debug(False)


def _layer(cell="lstm", batch=2, input_size=3, hidden=4):
    gates = (4 if cell == "lstm" else 3) * hidden
    values, offsets = torch.randn(5, input_size), torch.tensor([0, 2, 5][: batch + 1])
    return values, offsets, torch.randn(gates, input_size), torch.randn(gates, hidden), torch.randn(gates), torch.randn(gates)


def test_rnn_w_ih_shape():
    values, offsets, _, w_hh, b_ih, b_hh = _layer()
    with pytest.raises(ValueError, match=r"w_ih must have shape \(16, 3\), got \(16, 7\)"):
        padkern.ops.lstm(values, offsets, torch.randn(16, 7), w_hh, b_ih, b_hh)


def test_rnn_w_hh_shape():
    values, offsets, w_ih, _, b_ih, b_hh = _layer("gru")
    with pytest.raises(ValueError, match=r"w_hh must be \[3\*hidden_size, hidden_size\], got shape \(7, 4\)"):
        padkern.ops.gru(values, offsets, w_ih, torch.randn(7, 4), b_ih, b_hh)


def test_rnn_bias_shape_and_pairing():
    values, offsets, w_ih, w_hh, b_ih, _ = _layer()
    with pytest.raises(ValueError, match=r"b_hh must have shape \(16,\), got \(7,\)"):
        padkern.ops.lstm(values, offsets, w_ih, w_hh, b_ih, torch.randn(7))
    with pytest.raises(ValueError, match=r"b_ih and b_hh must both be given or both be None"):
        padkern.ops.lstm(values, offsets, w_ih, w_hh, b_ih, None)


def test_rnn_state_shape():
    values, offsets, w_ih, w_hh, b_ih, b_hh = _layer()
    with pytest.raises(ValueError, match=r"c0 must have shape \(2, 4\), got \(7, 4\)"):
        padkern.ops.lstm(values, offsets, w_ih, w_hh, b_ih, b_hh, torch.zeros(2, 4), torch.zeros(7, 4))


def test_rnn_dtype_mismatch():
    values, offsets, w_ih, w_hh, b_ih, b_hh = _layer()
    with pytest.raises(TypeError, match=r"w_hh must have values's dtype torch.float32, got torch.float64"):
        padkern.ops.lstm(values, offsets, w_ih, w_hh.double(), b_ih, b_hh)


def test_rnn_values_rank_and_dtype():
    _, offsets, w_ih, w_hh, b_ih, b_hh = _layer()
    with pytest.raises(ValueError, match=r"values must be \[L, input_size\], got shape \(5, 3, 7\)"):
        padkern.ops.lstm(torch.randn(5, 3, 7), offsets, w_ih, w_hh, b_ih, b_hh)
    with pytest.raises(TypeError, match=r"values must be floating point, got torch.int64"):
        padkern.ops.lstm(torch.ones(5, 3, dtype=torch.int64), offsets, w_ih, w_hh, b_ih, b_hh)


def test_rnn_offsets_must_match_values():
    values, _, w_ih, w_hh, b_ih, b_hh = _layer()
    with pytest.raises(ValueError, match=r"offsets\[-1\] must equal the number of value rows 5, got 7"):
        padkern.ops.lstm(values, torch.tensor([0, 7]), w_ih, w_hh, b_ih, b_hh)


def test_rnn_device_mismatch():
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    values, offsets, w_ih, w_hh, b_ih, b_hh = _layer()
    with pytest.raises(ValueError, match=r"w_ih must be on values's device"):
        padkern.ops.lstm(values, offsets, w_ih.cuda(), w_hh, b_ih, b_hh)


def test_masked_linear_weight_shape():
    with pytest.raises(ValueError, match=r"weight must be \[out_features, 3\], got shape \(4, 7\)"):
        padkern.ops.masked_linear(torch.randn(2, 5, 3), torch.tensor([5, 1]), torch.randn(4, 7))


def test_masked_linear_bias_shape_and_dtype():
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\), got \(7,\)"):
        padkern.ops.masked_linear(torch.randn(2, 5, 3), torch.tensor([5, 1]), torch.randn(4, 3), torch.randn(7))
    with pytest.raises(TypeError, match=r"weight must have x's dtype torch.float32, got torch.float64"):
        padkern.ops.masked_linear(torch.randn(2, 5, 3), torch.tensor([5, 1]), torch.randn(4, 3, dtype=torch.float64))


def test_masked_linear_lengths_must_fit():
    with pytest.raises(ValueError, match=r"lengths_or_offsets must not exceed the padded length 5, got 7"):
        padkern.ops.masked_linear(torch.randn(2, 5, 3), torch.tensor([7, 1]), torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"lengths_or_offsets must be 1-D with one entry per sequence \(2\), got shape \(7,\)"):
        padkern.ops.masked_linear(torch.randn(2, 5, 3), torch.ones(7, dtype=torch.int64), torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"lengths_or_offsets\[0\] must be 0 when offsets are given, got 7"):
        padkern.ops.masked_linear(torch.randn(2, 5, 3), torch.tensor([7, 8, 9]), torch.randn(4, 3))


def test_masked_linear_activation_and_rank():
    with pytest.raises(ValueError, match=r"activation must be one of \[None, 'relu', 'gelu', 'silu'\], got 'tanh'"):
        padkern.ops.masked_linear(torch.randn(2, 5, 3), torch.tensor([5, 1]), torch.randn(4, 3), activation="tanh")
    with pytest.raises(ValueError, match=r"x must be \[B, T, K\] \(or \[T, B, K\]\), got shape \(7, 3\)"):
        padkern.ops.masked_linear(torch.randn(7, 3), torch.tensor([5, 1]), torch.randn(4, 3))


def test_ragged_bmm_weights_shape():
    with pytest.raises(ValueError, match=r"weights must be \[B=2, K=3, N\], got shape \(7, 3, 4\)"):
        padkern.ops.ragged_bmm(torch.randn(5, 3), torch.tensor([0, 2, 5]), torch.randn(7, 3, 4))


def test_ragged_outer_bmm_rows_must_match():
    with pytest.raises(ValueError, match=r"must be \[L, M\] and \[L, N\] with the same L, got \(5, 3\) and \(7, 4\)"):
        padkern.ops.ragged_outer_bmm(torch.randn(5, 3), torch.randn(7, 4), torch.tensor([0, 5]))


def test_segment_offsets_and_dtype():
    with pytest.raises(ValueError, match=r"offsets\[-1\] must equal the number of value rows 5, got 7"):
        padkern.ops.segment_sum(torch.randn(5, 3), torch.tensor([0, 7]))
    with pytest.raises(TypeError, match=r"values must be floating point, got torch.int64"):
        padkern.ops.segment_max(torch.ones(5, 3, dtype=torch.int64), torch.tensor([0, 5]))
