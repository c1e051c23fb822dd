"""Variable-length LSTM, GRU and plain (Elman) RNN layers over ragged batches.

One layer, one direction per call. The input projection is one GEMM over all L
real tokens (``values @ w_ih^T + b``); only the recurrence is sequential, and it
runs in a registered op (``padkern::{lstm,gru,rnn}_recurrence``:
C++ on CPU, CUDA on GPU; ``*_triton`` twins) that touches real tokens only; an LSTM
with projections runs ``padkern::lstm_projected_recurrence`` on the CPU and the plain
LSTM op on the unprojected state elsewhere (_projection.py). Its backward carries
dh/dc through time; the weight gradients are then one GEMM each
over all tokens. This file holds the fake functions, the autograd formulas and the
public functions; kernels know nothing about autograd.
"""
from typing import NamedTuple, Optional

import torch

from .. import _backend, _validate
from .._extension import TRITON_MISSING
from ..reference import rnn as reference
from ..reference.rnn import previous_rows
from ._projection import projected_lstm
from ._registration import needs_grad, register_family
from ._weight_gradient import weight_gradient
from . import linear  # noqa: F401  (registers grouped_linear's autograd, used for the input projection)


class LSTMOutput(NamedTuple):
    output: torch.Tensor  # [L, H] ([L, P] with projections)
    h_n: torch.Tensor  # [B, H] ([B, P] with projections)
    c_n: torch.Tensor  # [B, H]


class GRUOutput(NamedTuple):
    output: torch.Tensor  # [L, H]
    h_n: torch.Tensor  # [B, H]


class RNNOutput(NamedTuple):
    output: torch.Tensor  # [L, H]
    h_n: torch.Tensor  # [B, H]


# Gate rows per hidden unit in w_ih / w_hh.
GATE_COUNT = {"lstm": 4, "gru": 3, "rnn": 1}
# torch.nn.RNN's nonlinearity names, numbered as in the rnn_recurrence schema.
NONLINEARITIES = {"tanh": 0, "relu": 1}


_NATIVE = {
    "lstm": (torch.ops.padkern.lstm_recurrence.default, torch.ops.padkern.lstm_recurrence_backward.default),
    "gru": (torch.ops.padkern.gru_recurrence.default, torch.ops.padkern.gru_recurrence_backward.default),
    "rnn": (torch.ops.padkern.rnn_recurrence.default, torch.ops.padkern.rnn_recurrence_backward.default),
}
# An LSTM with projections on the CPU (the other backends: _projection.py's composition).
_PROJECTED = (torch.ops.padkern.lstm_projected_recurrence.default,
              torch.ops.padkern.lstm_projected_recurrence_backward.default)
if TRITON_MISSING is None:
    from ..triton import rnn as triton_rnn

    _TRITON = {
        "lstm": (triton_rnn.lstm_recurrence_triton, triton_rnn.lstm_recurrence_backward_triton),
        "gru": (triton_rnn.gru_recurrence_triton, triton_rnn.gru_recurrence_backward_triton),
        "rnn": (triton_rnn.rnn_recurrence_triton, triton_rnn.rnn_recurrence_backward_triton),
    }
else:
    _TRITON = None


# ----- fake functions (shapes only) ---------------------------------------------------
def _rows_like(state):
    """Row-major, as the kernels return their states whatever layout they were given."""
    return torch.empty_like(state, memory_format=torch.contiguous_format)


def _lstm_fake(gates_x, offsets, w_hh, h0, c0, reverse, save_for_backward):
    tokens, hidden = gates_x.shape[0], h0.shape[1]
    saved = tokens if save_for_backward else 0
    return (gates_x.new_empty((tokens, hidden)), _rows_like(h0), _rows_like(c0),
            gates_x.new_empty((saved, 4 * hidden)), gates_x.new_empty((saved, hidden)))


def _lstm_backward_fake(grad_output, grad_h_n, grad_c_n, gates, cell, offsets, w_hh, c0, reverse):
    return grad_output.new_empty((grad_output.shape[0], 4 * c0.shape[1])), _rows_like(c0), _rows_like(c0)


def _lstm_projected_fake(gates_x, offsets, w_hh, w_hr, h0, c0, reverse, save_for_backward):
    tokens, projection, hidden = gates_x.shape[0], w_hr.shape[0], w_hr.shape[1]
    saved = tokens if save_for_backward else 0
    return (gates_x.new_empty((tokens, projection)), _rows_like(h0), _rows_like(c0),
            gates_x.new_empty((saved, 4 * hidden)), gates_x.new_empty((saved, hidden)),
            gates_x.new_empty((saved, hidden)))


def _lstm_projected_backward_fake(grad_output, grad_h_n, grad_c_n, gates, cell, offsets, w_hh, w_hr, c0, reverse):
    tokens, batch = grad_output.shape[0], c0.shape[0]
    return (grad_output.new_empty((tokens, 4 * w_hr.shape[1])), grad_output.new_empty((tokens, w_hr.shape[0])),
            grad_output.new_empty((batch, w_hr.shape[0])), _rows_like(c0))


def _gru_fake(gates_x, offsets, w_hh, b_hh, h0, reverse, save_for_backward):
    tokens, hidden = gates_x.shape[0], h0.shape[1]
    saved = tokens if save_for_backward else 0
    return (gates_x.new_empty((tokens, hidden)), _rows_like(h0),
            gates_x.new_empty((saved, 3 * hidden)), gates_x.new_empty((saved, hidden)))


def _gru_backward_fake(grad_output, grad_h_n, gates, hh_n, output, offsets, w_hh, h0, reverse):
    grad_gates = grad_output.new_empty((grad_output.shape[0], 3 * h0.shape[1]))
    return grad_gates, torch.empty_like(grad_gates), _rows_like(h0)


def _rnn_fake(gates_x, offsets, w_hh, h0, nonlinearity, reverse):
    return gates_x.new_empty((gates_x.shape[0], h0.shape[1])), _rows_like(h0)


def _rnn_backward_fake(grad_output, grad_h_n, output, offsets, w_hh, h0, nonlinearity, reverse):
    return _rows_like(output), _rows_like(h0)


_FAKES = {"lstm": (_lstm_fake, _lstm_backward_fake), "gru": (_gru_fake, _gru_backward_fake),
          "rnn": (_rnn_fake, _rnn_backward_fake)}


# ----- autograd -------------------------------------------------------------------------
def _or_zeros(grad, like):
    return torch.zeros_like(like) if grad is None else _validate.dense(grad)


def _weight_grad(grad_gates, output, initial, offsets, reverse):
    """dW_hh = sum over tokens of grad_gates^T h_prev: one GEMM over all L tokens."""
    rows = previous_rows(offsets, output.shape[0], reverse)
    return weight_gradient(grad_gates, torch.cat([output, initial]).index_select(0, rows))


def _no_double_backward(ctx, *grads):
    raise RuntimeError(
        "padkern's recurrence kernels do not support double backward; use backend='reference' "
        "(pure PyTorch) for higher-order gradients"
    )


def _register_lstm_autograd(forward_op, backward_op):
    def setup(ctx, inputs, output):
        gates_x, offsets, w_hh, h0, c0, reverse, _ = inputs
        output, _, _, gates, cell = output
        ctx.save_for_backward(offsets, w_hh, h0, c0, output, gates, cell)
        ctx.reverse = reverse

    def backward(ctx, grad_output, grad_h_n, grad_c_n, _grad_gates, _grad_cell):
        offsets, w_hh, h0, c0, output, gates, cell = ctx.saved_tensors
        if gates.shape[0] != output.shape[0]:
            raise RuntimeError("lstm_recurrence was called with save_for_backward=False; it cannot be differentiated")
        grad_gates, grad_h0, grad_c0 = backward_op(
            _or_zeros(grad_output, output), _or_zeros(grad_h_n, h0), _or_zeros(grad_c_n, c0),
            gates, cell, offsets, w_hh, c0, ctx.reverse)
        grad_w_hh = _weight_grad(grad_gates, output, h0, offsets, ctx.reverse)
        return grad_gates, None, grad_w_hh, grad_h0, grad_c0, None, None

    torch.library.register_autograd(forward_op, backward, setup_context=setup)
    torch.library.register_autograd(backward_op, _no_double_backward, setup_context=lambda ctx, inputs, output: None)


def _register_lstm_projected_autograd(forward_op, backward_op):
    def setup(ctx, inputs, output):
        gates_x, offsets, w_hh, w_hr, h0, c0, reverse, _ = inputs
        output, _, _, gates, cell, unprojected = output
        ctx.save_for_backward(offsets, w_hh, w_hr, h0, c0, output, gates, cell, unprojected)
        ctx.reverse = reverse

    def backward(ctx, grad_output, grad_h_n, grad_c_n, _grad_gates, _grad_cell, _grad_unprojected):
        offsets, w_hh, w_hr, h0, c0, output, gates, cell, unprojected = ctx.saved_tensors
        if gates.shape[0] != output.shape[0]:
            raise RuntimeError("lstm_projected_recurrence was called with save_for_backward=False; it cannot be "
                               "differentiated")
        grad_gates, grad_hidden, grad_h0, grad_c0 = backward_op(
            _or_zeros(grad_output, output), _or_zeros(grad_h_n, h0), _or_zeros(grad_c_n, c0),
            gates, cell, offsets, w_hh, w_hr, c0, ctx.reverse)
        grad_w_hh = _weight_grad(grad_gates, output, h0, offsets, ctx.reverse)
        grad_w_hr = weight_gradient(grad_hidden, unprojected)  # dh^T (o * tanh c), over all tokens
        return grad_gates, None, grad_w_hh, grad_w_hr, grad_h0, grad_c0, None, None

    torch.library.register_autograd(forward_op, backward, setup_context=setup)
    torch.library.register_autograd(backward_op, _no_double_backward, setup_context=lambda ctx, inputs, output: None)


def _register_gru_autograd(forward_op, backward_op):
    def setup(ctx, inputs, output):
        gates_x, offsets, w_hh, b_hh, h0, reverse, _ = inputs
        output, _, gates, hh_n = output
        ctx.save_for_backward(offsets, w_hh, h0, output, gates, hh_n)
        ctx.reverse = reverse

    def backward(ctx, grad_output, grad_h_n, _grad_gates, _grad_hh_n):
        offsets, w_hh, h0, output, gates, hh_n = ctx.saved_tensors
        if gates.shape[0] != output.shape[0]:
            raise RuntimeError("gru_recurrence was called with save_for_backward=False; it cannot be differentiated")
        grad_gates_x, grad_gates_hh, grad_h0 = backward_op(
            _or_zeros(grad_output, output), _or_zeros(grad_h_n, h0), gates, hh_n, output, offsets, w_hh, h0,
            ctx.reverse)
        grad_w_hh = _weight_grad(grad_gates_hh, output, h0, offsets, ctx.reverse)
        return grad_gates_x, None, grad_w_hh, grad_gates_hh.sum(0), grad_h0, None, None

    torch.library.register_autograd(forward_op, backward, setup_context=setup)
    torch.library.register_autograd(backward_op, _no_double_backward, setup_context=lambda ctx, inputs, output: None)


def _register_rnn_autograd(forward_op, backward_op):
    def setup(ctx, inputs, output):
        gates_x, offsets, w_hh, h0, nonlinearity, reverse = inputs
        ctx.save_for_backward(offsets, w_hh, h0, output[0])
        ctx.nonlinearity, ctx.reverse = nonlinearity, reverse

    def backward(ctx, grad_output, grad_h_n):
        offsets, w_hh, h0, output = ctx.saved_tensors
        grad_pre, grad_h0 = backward_op(_or_zeros(grad_output, output), _or_zeros(grad_h_n, h0), output, offsets,
                                        w_hh, h0, ctx.nonlinearity, ctx.reverse)
        grad_w_hh = _weight_grad(grad_pre, output, h0, offsets, ctx.reverse)
        return grad_pre, None, grad_w_hh, grad_h0, None, None

    torch.library.register_autograd(forward_op, backward, setup_context=setup)
    torch.library.register_autograd(backward_op, _no_double_backward, setup_context=lambda ctx, inputs, output: None)


_REGISTER_AUTOGRAD = {"lstm": _register_lstm_autograd, "gru": _register_gru_autograd, "rnn": _register_rnn_autograd}
for _cell in ("lstm", "gru", "rnn"):
    register_family(_NATIVE[_cell], None if _TRITON is None else _TRITON[_cell], _FAKES[_cell], _REGISTER_AUTOGRAD[_cell])
register_family(_PROJECTED, None, (_lstm_projected_fake, _lstm_projected_backward_fake),
                _register_lstm_projected_autograd)


@torch.library.register_fake("padkern::step_gemm")
def _step_gemm_fake(rows, weight, accumulate):
    """The CPU steps' GEMM on its own (tests, the performance guard): no autograd."""
    return rows.new_empty((rows.shape[0], weight.shape[0]))


# ----- public functions -----------------------------------------------------------------
def _check_layer(cell, values, offsets, w_ih, w_hh, b_ih, b_hh, states, w_hr=None):
    """Validate one layer's arguments; returns (int64 offsets, H, B). With ``w_hr`` [P, H] (an
    LSTM with projections), w_hh is [4H, P] and h0 [B, P]."""
    gate_count = GATE_COUNT[cell]
    _validate.check_token_rows(values, "values", "[L, input_size]")
    offsets = _validate.check_offsets(offsets, values.shape[0], values.device)
    batch = offsets.shape[0] - 1
    _validate.check_tensor(w_ih, "w_ih")
    _validate.check_tensor(w_hh, "w_hh")
    _validate.check_same_device_dtype(values, "values", w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh, w_hr=w_hr,
                                      **states)
    if w_hr is None:
        if w_hh.dim() != 2 or w_hh.shape[0] != gate_count * w_hh.shape[1]:
            raise ValueError(f"w_hh must be [{gate_count}*hidden_size, hidden_size], got shape {tuple(w_hh.shape)}")
        hidden = recurrent = w_hh.shape[1]
    else:
        if w_hr.dim() != 2 or w_hr.shape[0] == 0:
            raise ValueError(f"w_hr must be [proj_size, hidden_size] with proj_size >= 1, got shape {tuple(w_hr.shape)}")
        recurrent, hidden = w_hr.shape
        _validate.check_shape(w_hh, (gate_count * hidden, recurrent), "w_hh")
    if w_ih.dim() == 2 and w_ih.shape[0] == gate_count * hidden and w_ih.shape[1] != values.shape[1]:
        raise ValueError(f"values.shape[1] must equal w_ih.shape[1] (input_size): expected {w_ih.shape[1]}, "
                         f"got {values.shape[1]}")
    _validate.check_shape(w_ih, (gate_count * hidden, values.shape[1]), "w_ih")
    if (b_ih is None) != (b_hh is None):
        raise ValueError("b_ih and b_hh must both be given or both be None")
    for name, bias in (("b_ih", b_ih), ("b_hh", b_hh)):
        if bias is not None:
            _validate.check_shape(bias, (gate_count * hidden,), name)
    for name, state in states.items():
        if state is not None:
            _validate.check_shape(state, (batch, recurrent if name == "h0" else hidden), name)
    return offsets, hidden, batch


def _input_projection(values, w_ih, bias, backend: str):
    """values @ w_ih^T + bias over all L tokens: one GEMM. The C++ backend's grouped_linear
    reaches oneDNN, which beat at::addmm's BLAS on the CPU; elsewhere addmm (cuBLAS)."""
    if backend == "cpu":
        whole = torch.tensor([0, values.shape[0]], device=values.device)
        return torch.ops.padkern.grouped_linear(values, whole, w_ih, bias, 0, False, values.shape[0])[0]
    return values @ w_ih.t() if bias is None else torch.addmm(bias, values, w_ih.t())



def lstm(values, offsets, w_ih, w_hh, b_ih=None, b_hh=None, h0=None, c0=None, *, w_hr=None, reverse=False,
         backend: Optional[str] = None) -> LSTMOutput:
    """One LSTM layer over a ragged batch, PyTorch's equations and gate order (i, f, g, o).

    values [L, K], offsets [B+1] (the offsets contract, padkern/_validate.py), w_ih [4H, K],
    w_hh [4H, H], b_ih/b_hh [4H] or None, h0/c0 [B, H] or None (zeros).
    ``w_hr`` [P, H] makes it torch.nn.LSTM's LSTM with projections (``proj_size=P``):
    h = (o * tanh(c)) w_hr^T, so w_hh is [4H, P], h0 [B, P] and output/h_n have P columns.
    ``reverse=True`` runs each sequence from its own last token to its first.
    Returns ``(output [L, H], h_n [B, H], c_n [B, H])``; h_n/c_n are each sequence's
    state after its own last token, in the caller's batch order; a zero-length
    sequence contributes no rows and returns h0/c0.
    """
    states = {"h0": h0, "c0": c0}
    offsets, hidden, batch = _check_layer("lstm", values, offsets, w_ih, w_hh, b_ih, b_hh, states, w_hr)
    h0 = values.new_zeros((batch, hidden if w_hr is None else w_hr.shape[0])) if h0 is None else h0
    c0 = values.new_zeros((batch, hidden)) if c0 is None else c0
    name = _backend.resolve(backend, values.device, "lstm", values.dtype)
    if name == "reference":
        return LSTMOutput(*reference.lstm(values, offsets, w_ih, w_hh, b_ih, b_hh, h0, c0, reverse, w_hr))
    gates_x = _input_projection(values, w_ih, None if b_ih is None else b_ih + b_hh, name)
    forward_op = (_TRITON if name == "triton" else _NATIVE)["lstm"][0]
    save = needs_grad(values, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr)
    dense = _validate.dense

    def recurrence(gates_x, w_hh, h0, c0):
        return forward_op(dense(gates_x), offsets, dense(w_hh), dense(h0), dense(c0), reverse, save)[:3]

    if w_hr is not None and name == "cpu":
        output, h_n, c_n = _PROJECTED[0](dense(gates_x), offsets, dense(w_hh), dense(w_hr), dense(h0), dense(c0),
                                         reverse, save)[:3]
        if torch.is_autocast_enabled("cpu") and output.dtype != torch.float64:
            # The recurrence ran in float32 (as torch.nn's on the CPU); torch.nn.LSTM's projection
            # is an autocast matmul, so its output and h_n come in the autocast dtype.
            dtype = torch.get_autocast_dtype("cpu")
            output, h_n = output.to(dtype), h_n.to(dtype)
        return LSTMOutput(output, h_n, c_n)
    if w_hr is not None:
        return LSTMOutput(*projected_lstm(gates_x, offsets, w_hh, w_hr, h0, c0, reverse, recurrence))
    return LSTMOutput(*recurrence(gates_x, w_hh, h0, c0))


def gru(values, offsets, w_ih, w_hh, b_ih=None, b_hh=None, h0=None, *, reverse=False,
        backend: Optional[str] = None) -> GRUOutput:
    """One GRU layer over a ragged batch, PyTorch's equations (r, z, n; b_hn inside the reset product).

    Shapes as :func:`lstm` with 3H gate rows. Returns ``(output [L, H], h_n [B, H])``.
    """
    offsets, hidden, batch = _check_layer("gru", values, offsets, w_ih, w_hh, b_ih, b_hh, {"h0": h0})
    h0 = values.new_zeros((batch, hidden)) if h0 is None else h0
    name = _backend.resolve(backend, values.device, "gru", values.dtype)
    if name == "reference":
        return GRUOutput(*reference.gru(values, offsets, w_ih, w_hh, b_ih, b_hh, h0, reverse))
    gates_x = _input_projection(values, w_ih, b_ih, name)
    b_hh = w_hh.new_zeros(3 * hidden) if b_hh is None else b_hh
    forward_op = (_TRITON if name == "triton" else _NATIVE)["gru"][0]
    save = needs_grad(values, w_ih, w_hh, b_ih, b_hh, h0)
    dense = _validate.dense
    output, h_n, _, _ = forward_op(dense(gates_x), offsets, dense(w_hh), dense(b_hh), dense(h0), reverse, save)
    return GRUOutput(output, h_n)


def rnn(values, offsets, w_ih, w_hh, b_ih=None, b_hh=None, h0=None, *, nonlinearity: str = "tanh", reverse=False,
        backend: Optional[str] = None) -> RNNOutput:
    """One plain (Elman) RNN layer over a ragged batch, torch.nn.RNN's equation:
    ``h_t = act(x_t w_ih^T + b_ih + h_{t-1} w_hh^T + b_hh)`` with act ``tanh`` or ``relu``.

    Shapes as :func:`lstm` with H gate rows (w_ih [H, K], w_hh [H, H], biases [H]).
    Returns ``(output [L, H], h_n [B, H])``.
    """
    if not isinstance(nonlinearity, str) or nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    offsets, hidden, batch = _check_layer("rnn", values, offsets, w_ih, w_hh, b_ih, b_hh, {"h0": h0})
    h0 = values.new_zeros((batch, hidden)) if h0 is None else h0
    name = _backend.resolve(backend, values.device, "rnn", values.dtype)
    if name == "reference":
        return RNNOutput(*reference.rnn(values, offsets, w_ih, w_hh, b_ih, b_hh, h0, nonlinearity, reverse))
    gates_x = _input_projection(values, w_ih, None if b_ih is None else b_ih + b_hh, name)
    forward_op = (_TRITON if name == "triton" else _NATIVE)["rnn"][0]
    dense = _validate.dense
    output, h_n = forward_op(dense(gates_x), offsets, dense(w_hh), dense(h0), NONLINEARITIES[nonlinearity], reverse)
    return RNNOutput(output, h_n)
