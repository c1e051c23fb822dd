"""The Triton kernels stay inside their tensors whatever the registered ops are given
(padkern/triton/guards.py), and their launchers refuse a layout the kernel does not assume.

The ops are called as torch.ops.padkern.*_triton, past the public checks: on a GPU
outside debug mode the offsets' contents are never checked, so these are inputs a
kernel really meets. Rows past the end of an input are made to exist (the input is a
view into a larger buffer) and hold NaN, so a kernel that reads one shows it in its
result instead of reading memory it does not own. Each body runs in a child process
(tests/isolated.py): a kernel that writes where it must not fails one test, not the run; the
grid-cap test alone runs in this one, since its monkeypatch does not cross processes.
"""
import pytest
import torch

from isolated import isolated
from padkern._backend import why_unavailable
from ragged_cases import offsets_of

DEVICE = next((d for d in ("cuda", "cpu") if (d == "cpu" or torch.cuda.is_available())
               and why_unavailable("triton", torch.device(d)) is None), None)
pytestmark = pytest.mark.skipif(DEVICE is None, reason="no device runs Triton here")
ops = torch.ops.padkern


def with_nan_after(tensor: torch.Tensor, dim: int, extra: int = 3) -> torch.Tensor:
    """``tensor`` as a view whose dimension ``dim`` is followed in memory by ``extra`` NaN rows."""
    shape = list(tensor.shape)
    shape[dim] += extra
    buffer = torch.full(shape, float("nan"), dtype=tensor.dtype, device=tensor.device)
    view = buffer.narrow(dim, 0, tensor.shape[dim])
    return view.copy_(tensor)


def randn(*shape):
    generator = torch.Generator().manual_seed(sum(shape))
    return torch.randn(*shape, dtype=torch.float64, generator=generator).to(DEVICE or "cpu")


# ----- lengths past the padded length T ---------------------------------------------------------
@pytest.mark.parametrize("batch_first", [True, False])
@isolated
def test_unpad_writes_zero_for_tokens_past_the_padded_length(batch_first):
    lengths, T = [6, 0, 2], 4  # the first sequence is two tokens longer than T
    padded = with_nan_after(randn(3, T, 5), dim=1)
    given = padded if batch_first else padded.transpose(0, 1)
    values = ops.unpad_triton(given, offsets_of(lengths, DEVICE), 8, batch_first)
    zeros = padded.new_zeros(2, 5)
    assert torch.equal(values, torch.cat([padded[0, :T], zeros, padded[2, :2]]))


@isolated
def test_unpad_with_no_time_steps_writes_zeros():
    values = ops.unpad_triton(randn(2, 0, 3), offsets_of([2, 1], DEVICE), 3, True)
    assert torch.equal(values, torch.zeros(3, 3, dtype=torch.float64, device=DEVICE))


@isolated
def test_pad_keeps_the_first_steps_of_a_longer_sequence():
    values, offsets = randn(9, 4), offsets_of([6, 0, 3], DEVICE)
    padded = ops.pad_triton(values, offsets, 2, -1.0, True)
    assert torch.equal(padded, torch.stack([values[0:2], torch.full_like(values[:2], -1.0), values[6:8]]))


@pytest.mark.parametrize("batch_first", [True, False])
@isolated
def test_masked_linear_computes_only_steps_within_the_padded_length(batch_first):
    lengths, T = [6, 0, 2], 4
    x = with_nan_after(randn(3, T, 5), dim=1)
    given = x if batch_first else with_nan_after(randn(T, 3, 5), dim=0).transpose(0, 1)
    weight, bias = randn(7, 5), randn(7)
    out, _ = ops.grouped_linear_triton(given, offsets_of(lengths, DEVICE), weight, bias, 0, False, 8)
    expected = torch.zeros(3, T, 7, dtype=torch.float64, device=DEVICE)
    for b, length in enumerate(min(n, T) for n in lengths):
        expected[b, :length] = given[b, :length] @ weight.t() + bias
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


# ----- offsets past the end of the values ---------------------------------------------------------
L = 7
BAD_OFFSETS = {"past_the_end": [0, 2, L + 40], "huge": [0, 2, 2**62]}  # both clamp to [0, 2, L]


def ragged_results(offsets):
    """What each ragged op returns for values [L, 4] with NaN rows after them in memory."""
    values = with_nan_after(randn(L, 4), dim=0)
    gates4, gates3 = with_nan_after(randn(L, 8), dim=0), with_nan_after(randn(L, 6), dim=0)
    h0 = randn(2, 2)
    return {
        "pad": ops.pad_triton(values, offsets, 9, 0.0, True),
        "segment_sum": ops.segment_reduce_triton(values, offsets, 0)[0],
        "segment_max": ops.segment_reduce_triton(values, offsets, 2),
        "segment_softmax": ops.segment_softmax_triton(values, offsets),
        "ragged_linear": ops.grouped_linear_triton(values, offsets, randn(3, 4), None, 1, True, L),
        "ragged_bmm": ops.grouped_linear_triton(values, offsets, randn(2, 4, 3), None, 0, False, L)[0],
        "ragged_outer_bmm": ops.ragged_outer_bmm_triton(values, with_nan_after(randn(L, 3), dim=0), offsets),
        "lstm": ops.lstm_recurrence_triton(gates4, offsets, randn(8, 2), h0, h0 + 1, False, True),
        "gru": ops.gru_recurrence_triton(gates3, offsets, randn(6, 2), randn(6), h0, False, True),
        "rnn": ops.rnn_recurrence_triton(with_nan_after(randn(L, 2), dim=0), offsets, randn(2, 2), h0, 1, False),
    }


@pytest.mark.parametrize("bad", list(BAD_OFFSETS))
@isolated
def test_sequences_are_clamped_into_the_values(bad):
    got = ragged_results(torch.tensor(BAD_OFFSETS[bad], device=DEVICE))
    want = ragged_results(offsets_of([2, L - 2], DEVICE))
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=0, msg=lambda m: f"{name}: {m}")


# ----- launchers refuse layouts their kernels do not assume --------------------------------------
def _strided(t):
    """The same numbers, every other element of a larger buffer along the last dimension."""
    buffer = t.new_zeros(t.shape[:-1] + (2 * t.shape[-1],))
    return buffer[..., ::2].copy_(t)


def _layout_cases():
    v, o, h = randn(5, 3), offsets_of([2, 3], DEVICE), randn(2, 2)
    g4, g3 = randn(5, 8), randn(5, 6)
    w4, w3 = randn(8, 2), randn(6, 2)
    return {
        "pad int32 offsets": (lambda: ops.pad_triton(v, o.int(), 3, 0.0, True), r"pad_triton: offsets must be a torch.int64"),
        "pad strided offsets": (lambda: ops.pad_triton(v, _strided(o), 3, 0.0, True), r"pad_triton: offsets must be contiguous"),
        "pad feature stride": (lambda: ops.pad_triton(_strided(v), o, 3, 0.0, True), r"pad_triton: values must be of unit stride"),
        "unpad feature stride": (lambda: ops.unpad_triton(_strided(randn(2, 3, 4)), o, 5, True),
                                 r"unpad_triton: padded must be of unit stride"),
        "unpad batch": (lambda: ops.unpad_triton(randn(7, 3, 4), o, 5, True), r"unpad_triton: offsets must be of shape \(8,\)"),
        "segment values": (lambda: ops.segment_reduce_triton(randn(3, 5).t(), o, 0), r"segment_reduce_triton: values must be contiguous"),
        "softmax values": (lambda: ops.segment_softmax_triton(_strided(v), o), r"segment_softmax_triton: values must be contiguous"),
        "linear bias": (lambda: ops.grouped_linear_triton(v, o, randn(4, 3), _strided(randn(4)), 0, False, 5),
                        r"grouped_linear_triton: bias must be contiguous"),
        "linear weight batch": (lambda: ops.grouped_linear_triton(v, o, randn(7, 3, 4), None, 0, False, 5),
                                r"grouped_linear_triton: weight must be \[B, K, N\]"),
        "outer offsets": (lambda: ops.ragged_outer_bmm_triton(v, randn(5, 2), o.int()), r"ragged_outer_bmm_triton: offsets"),
        "lstm gates_x": (lambda: ops.lstm_recurrence_triton(_strided(g4), o, w4, h, h, False, True),
                         r"lstm_recurrence_triton: gates_x must be contiguous"),
        "lstm c0": (lambda: ops.lstm_recurrence_triton(g4, o, w4, h, randn(7, 2), False, True),
                    r"lstm_recurrence_triton: c0 must be of shape \(2, 2\)"),
        "lstm backward w_hh": (lambda: ops.lstm_recurrence_backward_triton(
            randn(5, 2), h, h, g4, randn(5, 2), o, randn(2, 8).t(), h, False),
            r"lstm_recurrence_backward_triton: w_hh must be contiguous"),
        "gru b_hh": (lambda: ops.gru_recurrence_triton(g3, o, w3, _strided(randn(6)), h, False, True),
                     r"gru_recurrence_triton: b_hh must be contiguous"),
        "gru backward h0": (lambda: ops.gru_recurrence_backward_triton(
            randn(5, 2), h, g3, randn(5, 2), randn(5, 2), o, w3, randn(2, 2).t(), False),
            r"gru_recurrence_backward_triton: h0 must be contiguous"),
        "rnn gates_x": (lambda: ops.rnn_recurrence_triton(_strided(randn(5, 2)), o, randn(2, 2), h, 0, False),
                        r"rnn_recurrence_triton: gates_x must be contiguous"),
        "rnn backward output": (lambda: ops.rnn_recurrence_backward_triton(
            randn(5, 2), h, randn(2, 5).t(), o, randn(2, 2), h, 0, False),
            r"rnn_recurrence_backward_triton: output must be contiguous"),
        "rnn nonlinearity": (lambda: ops.rnn_recurrence_triton(randn(5, 2), o, randn(2, 2), h, 3, False),
                             r"rnn_recurrence_triton: nonlinearity must be 0 \(tanh\) or 1 \(relu\), got 3"),
    }


@pytest.mark.parametrize("case", list(_layout_cases()))
@isolated
def test_launcher_names_the_argument_with_the_wrong_layout(case):
    call, message = _layout_cases()[case]
    with pytest.raises(RuntimeError, match=message):
        call()


# ----- axes past the grid's y ------------------------------------------------------------------
@pytest.mark.parametrize("op", ["pad", "unpad", "segment_sum", "segment_max", "segment_softmax"])
def test_blocks_past_the_grid_row_fall_to_earlier_programs(monkeypatch, op):
    """A CUDA grid stops at 65535 programs along y: the launchers cap the axis that grows with
    the input (guards.grid_y) and the kernels loop over the blocks past it. With the cap at 2,
    each program takes several blocks: time blocks of 16 steps (256 features) for pad and
    unpad, feature blocks of 128 for the segment ops."""
    import padkern
    from padkern.triton import guards

    monkeypatch.setattr(guards, "MAX_GRID_Y", 2)
    lengths = [70, 0, 33]
    offsets = offsets_of(lengths, DEVICE)
    if op in ("pad", "unpad"):
        values = randn(sum(lengths), 256)
        padded = padkern.ops.pad(values, offsets, 75, backend="reference")
        got = (padkern.ops.pad(values, offsets, 75, backend="triton") if op == "pad" else
               padkern.ops.unpad(padded, offsets, backend="triton"))
        want = padded if op == "pad" else values
    else:
        values = randn(sum(lengths), 300)
        got = getattr(padkern.ops, op)(values, offsets, backend="triton")
        want = getattr(padkern.ops, op)(values, offsets, backend="reference")
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
