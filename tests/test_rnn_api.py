"""padkern.nn.LSTM/GRU/RNN as drop-ins for torch.nn's: the parts of RNNBase's API that code
written for torch.nn reads, unbatched input, and torch.nn's warnings and messages."""
import re

import pytest
import torch

import padkern

CELLS = ["LSTM", "GRU", "RNN"]


def pair(cell, **kwargs):
    torch.manual_seed(0)
    ours = getattr(padkern.nn, cell)(4, 3, **kwargs)
    theirs = getattr(torch.nn, cell)(4, 3, **kwargs).double()
    ours = ours.double()
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bias", [True, False])
def test_parameter_views_match_torch(cell, bias):
    ours, theirs = pair(cell, num_layers=2, bidirectional=True, bias=bias)
    assert ours._flat_weights_names == theirs._flat_weights_names
    assert all(a is getattr(ours, n) for a, n in zip(ours._flat_weights, ours._flat_weights_names))
    assert [[w.shape for w in cell_weights] for cell_weights in ours.all_weights] == \
        [[w.shape for w in cell_weights] for cell_weights in theirs.all_weights]
    before = [w.data_ptr() for w in ours.parameters()]
    ours.flatten_parameters()
    assert [w.data_ptr() for w in ours.parameters()] == before


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_unbatched_input_matches_torch(cell, batch_first, with_state):
    ours, theirs = pair(cell, num_layers=2, bidirectional=True, batch_first=batch_first)
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    hx = None
    if with_state:
        h0 = torch.randn(4, 3, dtype=torch.float64)
        hx = (h0, torch.randn(4, 3, dtype=torch.float64)) if cell == "LSTM" else h0
    out, state = ours(x, hx)
    expected, expected_state = theirs(x, hx)
    torch.testing.assert_close(out, expected)
    for a, e in zip(state if cell == "LSTM" else (state,), expected_state if cell == "LSTM" else (expected_state,)):
        torch.testing.assert_close(a, e)
    (grad,) = torch.autograd.grad(out.sum(), x)
    (expected_grad,) = torch.autograd.grad(expected.sum(), x)
    torch.testing.assert_close(grad, expected_grad)


@pytest.mark.parametrize("cell", CELLS)
def test_unbatched_input_rejects_batched_state(cell):
    ours, theirs = pair(cell)
    h0 = torch.zeros(1, 1, 3, dtype=torch.float64)
    hx = (h0, h0) if cell == "LSTM" else h0
    with pytest.raises(RuntimeError, match="For unbatched 2-D input") as torch_error:
        theirs(torch.zeros(5, 4, dtype=torch.float64), hx)
    with pytest.raises(RuntimeError, match=re.escape(str(torch_error.value))):
        ours(torch.zeros(5, 4, dtype=torch.float64), hx)


@pytest.mark.parametrize("cell", CELLS)
def test_dropout_warning_matches_torch(cell):
    message = "dropout option adds dropout after all but last recurrent layer"
    with pytest.warns(UserWarning, match=message):
        getattr(torch.nn, cell)(4, 3, dropout=0.5)
    with pytest.warns(UserWarning, match=message):
        getattr(padkern.nn, cell)(4, 3, dropout=0.5)


@pytest.mark.parametrize("cell", CELLS)
def test_shape_messages_match_torch(cell):
    ours, theirs = pair(cell)
    x = torch.zeros(7, 5, 4, dtype=torch.float64)
    h0 = torch.zeros(1, 3, 3, dtype=torch.float64)
    hx = (h0, h0) if cell == "LSTM" else h0
    with pytest.raises(RuntimeError) as torch_error:
        theirs(x, hx)
    expected = re.escape(str(torch_error.value).splitlines()[0])
    with pytest.raises(RuntimeError, match=expected):
        ours(x, hx)
    with pytest.raises(ValueError, match=re.escape(f"{cell}: Expected input to be 2D or 3D, got 4D instead")):
        ours(torch.zeros(1, 7, 5, 4, dtype=torch.float64))
