"""torch.nested jagged tensors in and out of padkern.nn.LSTM / GRU / RNN: the same values
and gradients as the Ragged path (which test_rnn_modules.py holds against torch.nn), and the
output's ragged dimension is the input's."""
import pytest
import torch

from padkern import Ragged
from rnn_cases import padkern_module

CELLS = ["lstm", "gru", "rnn_tanh"]
LENGTHS = [3, 0, 6, 1]  # unsorted, one empty


def _module(cell, backend, device):
    torch.manual_seed(0)
    kwargs = dict(num_layers=2, bidirectional=True, batch_first=True, backend=backend)
    return padkern_module(cell, 3, 4, **kwargs).double().to(device)


def _pieces(device):
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(n, 3, generator=generator, dtype=torch.float64).to(device) for n in LENGTHS]


def _states(result):
    return list(result) if isinstance(result, tuple) else [result]


@pytest.mark.parametrize("cell", CELLS)
def test_nested_in_nested_out_equals_ragged(device_backend, cell):
    device, backend = device_backend
    module = _module(cell, backend, device)
    grads = []
    outputs = []
    for form in ("ragged", "nested"):
        pieces = [piece.clone().requires_grad_() for piece in _pieces(device)]
        if form == "ragged":
            out, states = module(Ragged.from_list(pieces))
            values = out.values
        else:
            nested = torch.nested.as_nested_tensor(pieces, layout=torch.jagged)
            out, states = module(nested)
            assert out.is_nested and out.layout == torch.jagged
            assert out.shape[0] == len(LENGTHS) and out.shape[1] == nested.shape[1]  # the same nested int
            values = out.values()
        states = _states(states)
        loss = values.square().sum() + sum(state.square().sum() for state in states)
        grads.append(torch.autograd.grad(loss, pieces + list(module.parameters()), allow_unused=True))
        outputs.append([values] + states)
    # One computation, two containers: bitwise the same.
    for ragged_result, nested_result in zip(*outputs):
        assert torch.equal(ragged_result, nested_result)
    for ragged_grad, nested_grad in zip(*grads):
        assert (ragged_grad is None and nested_grad is None) or torch.equal(ragged_grad, nested_grad)


def test_nested_with_holes_is_compacted(device_backend):
    # torch.nested.narrow makes a tensor whose sequences start at offsets with gaps between.
    device, backend = device_backend
    module = _module("lstm", backend, device)
    padded = torch.randn(4, 8, 3, dtype=torch.float64, device=device)
    starts, lengths = torch.tensor([1, 0, 2, 5], device=device), torch.tensor(LENGTHS, device=device)
    nested = torch.nested.narrow(padded, 1, starts, lengths, layout=torch.jagged)
    out, (h_n, c_n) = module(nested)
    expected, (h_e, c_e) = module(Ragged.from_list([padded[b, s:s + n] for b, (s, n) in
                                                    enumerate(zip(starts.tolist(), LENGTHS))]))
    assert out.is_nested and out.lengths() is None  # compact: no holes in the output
    assert torch.equal(out.values(), expected.values)
    assert torch.equal(out.offsets(), expected.offsets)
    assert torch.equal(h_n, h_e) and torch.equal(c_n, c_e)
    # Its padded form pads to the longest sequence, as torch.nested's own tensors do.
    assert out.to_padded_tensor(0.0).shape == (4, max(LENGTHS), 8)


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype stage")
def test_nested_input_errors():
    module = padkern_module("gru", 3, 4, batch_first=True)
    nested = torch.nested.as_nested_tensor([torch.randn(2, 3), torch.randn(5, 3)], layout=torch.jagged)
    with pytest.raises(ValueError, match=r"lengths must be None for a torch.nested input"):
        module(nested, lengths=torch.tensor([2, 5]))
    strided = torch.nested.nested_tensor([torch.randn(2, 3), torch.randn(5, 3)])
    with pytest.raises(TypeError, match=r"a torch.nested input must have layout=torch.jagged, got torch.strided"):
        module(strided)
    wrong = torch.nested.as_nested_tensor([torch.randn(2, 7), torch.randn(5, 7)], layout=torch.jagged)
    with pytest.raises(RuntimeError, match=r"input.size\(-1\) must be equal to input_size. Expected 3, got 7"):
        module(wrong)
