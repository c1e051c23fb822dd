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
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[cell] * hidden
    values, offsets = torch.randn(5, input_size), torch.tensor([0, 2, 5][: batch + 1])
    return values, offsets, torch.randn(gates, input_size), torch.randn(gates, hidden), torch.randn(gates), torch.randn(gates)


def test_rnn_w_ih_shape():
    values, offsets, _, w_hh, b_ih, b_hh = _layer()
    with pytest.raises(ValueError, match=r"w_ih must have shape \(16, 3\), got \(7, 3\)"):
        padkern.ops.lstm(values, offsets, torch.randn(7, 3), w_hh, b_ih, b_hh)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("missing", ["w_ih", "w_hh"])
def test_rnn_weights_must_be_tensors(cell, missing):
    values, offsets, w_ih, w_hh, b_ih, b_hh = _layer(cell)
    weights = {"w_ih": w_ih, "w_hh": w_hh, missing: None}
    with pytest.raises(TypeError, match=f"{missing} must be a torch.Tensor, got NoneType"):
        getattr(padkern.ops, cell)(values, offsets, weights["w_ih"], weights["w_hh"], b_ih, b_hh)


def test_rnn_w_hh_shape():
    values, offsets, w_ih, _, b_ih, b_hh = _layer("gru")
    with pytest.raises(ValueError, match=r"w_hh must be \[3\*hidden_size, hidden_size\], got shape \(7, 4\)"):
        padkern.ops.gru(values, offsets, w_ih, torch.randn(7, 4), b_ih, b_hh)


def test_elman_rnn_shapes_and_nonlinearity():
    values, offsets, w_ih, w_hh, b_ih, b_hh = _layer("rnn")
    with pytest.raises(ValueError, match=r"w_hh must be \[1\*hidden_size, hidden_size\], got shape \(8, 4\)"):
        padkern.ops.rnn(values, offsets, w_ih, torch.randn(8, 4), b_ih, b_hh)
    with pytest.raises(ValueError, match=r"h0 must have shape \(2, 4\), got \(3, 4\)"):
        padkern.ops.rnn(values, offsets, w_ih, w_hh, b_ih, b_hh, torch.randn(3, 4))
    with pytest.raises(ValueError, match=r"nonlinearity must be 'tanh' or 'relu', got 'sigmoid'"):
        padkern.ops.rnn(values, offsets, w_ih, w_hh, b_ih, b_hh, nonlinearity="sigmoid")
    gates_x = torch.randn(5, 4)
    with pytest.raises(RuntimeError, match=r"nonlinearity must be 0 \(tanh\) or 1 \(relu\), got 2"):
        torch.ops.padkern.rnn_recurrence(gates_x, offsets, w_hh, torch.zeros(2, 4), 2, False)


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
    with pytest.raises(ValueError, match=r"lengths must not exceed the padded length 5, got 7"):
        padkern.ops.masked_linear(torch.randn(2, 5, 3), torch.tensor([7, 1]), torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"lengths must be 1-D with one entry per sequence \(2\), got shape \(7,\)"):
        padkern.ops.masked_linear(torch.randn(2, 5, 3), torch.ones(7, dtype=torch.int64), torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"offsets\[0\] must be 0, got 7"):
        padkern.ops.masked_linear(torch.randn(2, 5, 3), None, torch.randn(4, 3), offsets=torch.tensor([7, 8, 9]))
    with pytest.raises(ValueError, match=r"offsets must have B\+1 = 3 entries, got 7"):
        padkern.ops.masked_linear(torch.randn(2, 5, 3), None, torch.randn(4, 3), offsets=torch.arange(7))


def test_masked_linear_lengths_and_offsets_are_never_confused():
    # B+1 lengths are not read as offsets: a wrong-size lengths tensor is an error.
    with pytest.raises(ValueError, match=r"lengths must be 1-D with one entry per sequence \(2\), got shape \(3,\)"):
        padkern.ops.masked_linear(torch.randn(2, 5, 3), torch.tensor([0, 2, 5]), torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"exactly one of lengths \[B\] \(positional\) or offsets"):
        padkern.ops.masked_linear(torch.randn(2, 5, 3), torch.tensor([2, 5]), torch.randn(4, 3),
                                  offsets=torch.tensor([0, 2, 7]))
    with pytest.raises(ValueError, match=r"exactly one of lengths"):
        padkern.ops.masked_linear(torch.randn(2, 5, 3), None, torch.randn(4, 3))


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


# ----- Ragged construction and conversion (issue 7 §3) -----------------------------------
def test_from_list_needs_a_list_of_tensors():
    with pytest.raises(TypeError, match=r"sequences must be a list, tuple or iterable of tensors \[length_i, \*F\], "
                                        r"or a tensor \[B, T, \*F\], got int"):
        Ragged.from_list(5)
    with pytest.raises(ValueError, match=r"sequences, given as one tensor, must be \[B, T, \*F\].*got a 1-D tensor"):
        Ragged.from_list(torch.randn(7))
    with pytest.raises(TypeError, match=r"sequences\[1\] must be a torch.Tensor, got int"):
        Ragged.from_list([torch.randn(2, 3), 7])
    with pytest.raises(ValueError, match=r"sequences\[1\] must be \[length, \*F\], got a 0-D tensor"):
        Ragged.from_list([torch.randn(2, 3), torch.tensor(7.0)])


def test_from_list_pieces_must_agree():
    with pytest.raises(ValueError, match=r"sequences\[2\] must have sequences\[0\]'s feature shape \(3,\) "
                                         r"\(all dimensions after the first\), got \(7,\)"):
        Ragged.from_list([torch.randn(2, 3), torch.randn(0, 3), torch.randn(4, 7)])
    with pytest.raises(TypeError, match=r"sequences\[1\] must have sequences\[0\]'s dtype torch.float32, got torch.float64"):
        Ragged.from_list([torch.randn(2, 3), torch.randn(7, 3, dtype=torch.float64)])


def test_from_list_devices_must_agree():
    if not torch.cuda.is_available():
        pytest.skip("needs a second device")
    with pytest.raises(ValueError, match=r"sequences\[1\] must be on sequences\[0\]'s device cpu, got cuda:0"):
        Ragged.from_list([torch.randn(2, 3), torch.randn(7, 3, device="cuda")])


def test_bool_offsets_are_refused_everywhere():
    ragged = Ragged(torch.randn(3, 2), torch.tensor([False, True]))
    message = r"offsets must be int64 or int32.*got torch.bool"
    for read in (ragged.validate, ragged.lengths, ragged.mask, ragged.to_padded, ragged.to_packed, ragged.to_nested,
                 lambda: ragged.max_length, lambda: Ragged.cat([ragged])):
        with pytest.raises(TypeError, match=message):
            read()
    with pytest.raises(TypeError, match=message):
        padkern.ops.pad(ragged.values, ragged.offsets)
    with pytest.raises(TypeError, match=r"lengths must be an integer tensor, got torch.bool"):
        Ragged.from_padded(torch.randn(2, 5, 3), torch.tensor([True, False]))


def test_validate_names_the_rule():
    with pytest.raises(TypeError, match=r"offsets must be int64 or int32.*got torch.float32"):
        Ragged(torch.randn(3, 2), torch.tensor([0.0, 3.0])).validate()
    with pytest.raises(ValueError, match=r"offsets must be 1-D with B\+1 >= 1 entries, got shape \(7, 1\)"):
        Ragged(torch.randn(3, 2), torch.zeros(7, 1, dtype=torch.int64)).validate()
    with pytest.raises(ValueError, match=r"offsets must be 1-D with B\+1 >= 1 entries, got shape \(0,\)"):
        Ragged(torch.randn(0, 2), torch.zeros(0, dtype=torch.int64)).validate()
    with pytest.raises(ValueError, match=r"values must be \[L, \*F\] with a token dimension, got a 0-D tensor"):
        Ragged(torch.tensor(7.0), torch.tensor([0])).validate()
    with pytest.raises(TypeError, match=r"values must be a torch.Tensor, got list"):
        Ragged([7], torch.tensor([0, 1])).validate()


def test_validate_device():
    if not torch.cuda.is_available():
        pytest.skip("needs a second device")
    with pytest.raises(ValueError, match=r"offsets must be on the values' device cuda:0, got cpu"):
        Ragged(torch.randn(3, 2, device="cuda"), torch.tensor([0, 3])).validate()


def test_total_length_must_be_an_int():
    ragged = Ragged(torch.randn(9, 2), torch.tensor([0, 7, 9]))
    with pytest.raises(TypeError, match=r"total_length must be an int, got float"):
        ragged.to_padded(total_length=4.5)
    with pytest.raises(TypeError, match=r"total_length must be an int, got float"):
        ragged.mask(total_length=7.0)
    with pytest.raises(ValueError, match=r"total_length must be non-negative, got -7"):
        ragged.mask(total_length=-7)
    with pytest.raises(ValueError, match=r"total_length must be at least the longest sequence 7, got 3"):
        ragged.mask(total_length=3)


def test_cat_names_the_piece():
    good = Ragged(torch.randn(3, 2), torch.tensor([0, 3]))
    with pytest.raises(TypeError, match=r"raggeds must be a list or tuple of padkern.Ragged, got Ragged"):
        Ragged.cat(good)
    with pytest.raises(ValueError, match=r"raggeds must hold at least one Ragged"):
        Ragged.cat([])
    with pytest.raises(TypeError, match=r"raggeds\[1\] must be a padkern.Ragged, got Tensor"):
        Ragged.cat([good, torch.randn(7, 2)])
    with pytest.raises(ValueError, match=r"raggeds\[1\].offsets\[-1\] must equal the number of value rows 3, got 7"):
        Ragged.cat([good, Ragged(torch.randn(3, 2), torch.tensor([0, 7]))])
    with pytest.raises(ValueError, match=r"raggeds\[1\].values must have raggeds\[0\].values's feature shape \(2,\)"
                                         r" \(all dimensions after the first\), got \(7,\)"):
        Ragged.cat([good, Ragged(torch.randn(3, 7), torch.tensor([0, 3]))])
    with pytest.raises(TypeError, match=r"raggeds\[1\].values must have raggeds\[0\].values's dtype torch.float32, "
                                        r"got torch.float64"):
        Ragged.cat([good, Ragged(torch.randn(7, 2, dtype=torch.float64), torch.tensor([0, 7]))])


def test_from_nested_refuses_what_it_cannot_convert():
    transposed = torch.nested.nested_tensor([torch.randn(7, 2), torch.randn(3, 2)], layout=torch.jagged).transpose(1, 2)
    with pytest.raises(ValueError, match=r"nested must be ragged in dimension 1 \(components \[length_i, \*F\]\), "
                                         r"got ragged dimension 2"):
        Ragged.from_nested(transposed)
    with pytest.raises(TypeError, match=r"nested must be a torch.nested tensor with layout=torch.jagged"):
        Ragged.from_nested(torch.randn(7, 2))


def test_collate_needs_a_list_of_samples():
    with pytest.raises(TypeError, match=r"batch must be a list of samples, got Tensor"):
        padkern.collate(torch.randn(7, 2))
    with pytest.raises(ValueError, match=r"batch must hold at least one sample"):
        padkern.collate([])


# ----- padkern.nn modules: torch.nn's messages --------------------------------------------
@pytest.mark.parametrize("module", [padkern.nn.LSTM, padkern.nn.GRU, padkern.nn.RNN])
def test_module_sizes_must_be_positive_ints(module):
    with pytest.raises(TypeError, match=r"^hidden_size should be of type int, got: float$"):
        module(4, 3.0)
    with pytest.raises(TypeError, match=r"^input_size should be of type int, got: float$"):
        module(7.0, 3)
    with pytest.raises(TypeError, match=r"^num_layers should be of type int, got: str$"):
        module(4, 3, num_layers="7")
    with pytest.raises(ValueError, match=r"hidden_size must be greater than zero, got -7"):
        module(4, -7)
    with pytest.raises(ValueError, match=r"num_layers must be greater than zero, got 0"):
        module(4, 3, num_layers=0)
    with pytest.raises(ValueError, match=r"dropout should be a number in range \[0, 1\], got 7"):
        module(4, 3, dropout=7)


@pytest.mark.parametrize("module", [padkern.nn.LSTM, padkern.nn.GRU, padkern.nn.RNN])
def test_module_input_size_message_is_torchs(module):
    ours, theirs = module(4, 3, batch_first=True), getattr(torch.nn, module.__name__)(4, 3, batch_first=True)
    x = torch.randn(2, 5, 7)
    with pytest.raises(RuntimeError) as expected:
        theirs(x)
    message = r"^input.size\(-1\) must be equal to input_size. Expected 4, got 7$"
    assert str(expected.value) == "input.size(-1) must be equal to input_size. Expected 4, got 7"
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, [5, 2], batch_first=True)
    for form in (x, packed, Ragged.from_padded(x, torch.tensor([5, 0]))):
        with pytest.raises(RuntimeError, match=message):
            ours(form)


def test_rnn_op_values_must_match_w_ih():
    _, offsets, w_ih, w_hh, b_ih, b_hh = _layer()
    with pytest.raises(ValueError, match=r"values.shape\[1\] must equal w_ih.shape\[1\] \(input_size\): expected 3, got 7"):
        padkern.ops.lstm(torch.randn(5, 7), offsets, w_ih, w_hh, b_ih, b_hh)
    _, offsets, w_ih, w_hh, b_ih, b_hh = _layer("gru")
    with pytest.raises(ValueError, match=r"values.shape\[1\] must equal w_ih.shape\[1\] \(input_size\): expected 3, got 7"):
        padkern.ops.gru(torch.randn(5, 7), offsets, w_ih, w_hh, b_ih, b_hh)
