"""PyTorch's own test cases for nn.LSTM / nn.GRU / nn.RNN (test_nn.py: variable-length
sequences, initial hidden state, retained graphs, its CPU-vs-cuDNN comparison over bias,
direction, layout, contiguity and variable length, and argument checks), run against
padkern's modules with the same weights, at PyTorch's tolerances. torch.nn is the reference
each time; the cases that need proj_size are not here (padkern does not have it yet).
"""
import copy
import functools
import itertools

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import padkern
from conftest import DEVICE_BACKENDS, pair_id

MODULES = {"lstm": (nn.LSTM, padkern.nn.LSTM), "gru": (nn.GRU, padkern.nn.GRU),
           **{f"rnn_{act}": (functools.partial(nn.RNN, nonlinearity=act),
                             functools.partial(padkern.nn.RNN, nonlinearity=act)) for act in ("tanh", "relu")}}
CELLS = list(MODULES)


def twin(cell, *args, device="cpu", backend=None, **kwargs):
    """A torch.nn module and padkern's, with the same parameters."""
    torch_cls, ours_cls = MODULES[cell]
    reference = torch_cls(*args, **kwargs).to(device)
    ours = ours_cls(*args, backend=backend, **kwargs).to(device)
    ours.load_state_dict(reference.state_dict())
    return reference, ours


def states_of(hidden):
    return list(hidden) if isinstance(hidden, tuple) else [hidden]


@pytest.mark.parametrize("cell", CELLS)
def test_variable_sequence(device_backend, cell):
    # test_nn's _test_variable_sequence: packed sequences against each sequence run alone.
    device, backend = device_backend
    lengths = [10, 10, 6, 2, 2, 1, 1]
    torch.manual_seed(0)
    x_leaf = torch.randn(10, len(lengths), 3, dtype=torch.float64, device=device, requires_grad=True)
    reference, ours = twin(cell, 3, 4, bidirectional=True, num_layers=2, device=device, backend=backend)
    reference, ours = reference.double(), ours.double()
    alone = copy.deepcopy(reference)
    outs, hiddens = [], []
    for i, length in enumerate(lengths):
        out, hidden = alone(x_leaf[:length, i:i + 1])
        outs.append(torch.cat([out, out.new_zeros(10 - length, 1, out.shape[2])]))
        hiddens.append(states_of(hidden))
    seq_out = torch.cat(outs, 1)
    seq_hidden = [torch.cat(parts, 1) for parts in zip(*hiddens)]
    packed_out, packed_hidden = ours(pack_padded_sequence(x_leaf, lengths))
    unpacked, unpacked_lengths = pad_packed_sequence(packed_out)
    torch.testing.assert_close(states_of(packed_hidden), seq_hidden)
    torch.testing.assert_close(unpacked, seq_out)
    assert unpacked_lengths.tolist() == lengths
    grad_alone = torch.autograd.grad(seq_out.sum(), [x_leaf, *alone.parameters()])
    grad_ours = torch.autograd.grad(unpacked.sum(), [x_leaf, *ours.parameters()])
    torch.testing.assert_close(grad_ours, grad_alone)


@pytest.mark.parametrize("cell", CELLS)
def test_rnn_initial_hidden_state(device_backend, cell):
    # test_nn's test_rnn_initial_hidden_state: zeros given explicitly == no hidden state.
    device, backend = device_backend
    _, rnn = twin(cell, 30, 20, 2, device=device, backend=backend)
    x = torch.randn(10, 32, 30, device=device)
    hidden = torch.zeros(2, 32, 20, device=device)
    output1, hidden1 = rnn(x, (hidden, hidden) if cell == "lstm" else hidden)
    output2, hidden2 = rnn(x)
    torch.testing.assert_close(output1, output2, rtol=0, atol=0)
    torch.testing.assert_close(hidden1, hidden2, rtol=0, atol=0)


@pytest.mark.parametrize("cell", CELLS)
def test_rnn_retain_variables(device_backend, cell):
    # test_nn's _test_rnn_retain_variables: backward through a retained graph gives the
    # same gradients every time.
    device, backend = device_backend
    _, rnn = twin(cell, 10, 20, num_layers=2, device=device, backend=backend)
    rnn = rnn.double()
    x = torch.randn(5, 6, 10, dtype=torch.float64, device=device, requires_grad=True)
    output = rnn(x)
    first = torch.autograd.grad(output[0].sum(), [x, *rnn.parameters()], retain_graph=True)
    for _ in range(4):
        again = torch.autograd.grad(output[0].sum(), [x, *rnn.parameters()], retain_graph=True)
        torch.testing.assert_close(again, first, rtol=0, atol=0)


def make_noncontig(tensor):
    """test_nn's helper: the same values, every other element of a wider buffer."""
    ndim = tensor.dim()
    return torch.stack([tensor.clone().zero_(), tensor], ndim).select(ndim, 1)


# test_nn's _test_RNN_cpu_vs_cudnn: every combination of bias, bidirectional, batch_first,
# contiguity and variable length, for every cell (test_nn: LSTM, GRU, RNN_TANH, RNN_RELU). Under the Triton interpreter (CI) a
# contiguous, biased subset runs; on a GPU every combination runs for every backend.
FLAGS = list(itertools.product((True, False), repeat=5))  # bias, bidirectional, batch_first, contig, variable_len
CASES = [pytest.param(pair, cell, flags, id=f"{pair_id(pair)}-{cell}-" + "".join("TF"[not f] for f in flags))
         for pair in DEVICE_BACKENDS for cell in CELLS for flags in FLAGS
         if not (pair == ("cpu", "triton") and not (flags[0] and flags[3]))]


@pytest.mark.parametrize("pair,cell,flags", CASES)
def test_rnn_against_torch_nn_all_flags(pair, cell, flags):
    device, backend = pair
    bias, bidirectional, batch_first, contig, variable_len = flags
    input_size, hidden_size, num_layers, seq_length, batch = 10, 6, 2, 7, 6
    directions = 2 if bidirectional else 1
    torch.manual_seed(1)
    shape = (batch, seq_length) if batch_first else (seq_length, batch)
    input_val = torch.randn(*shape, input_size, device=device)
    grad_output = torch.randn(*shape, hidden_size * directions, device=device)
    hx_val = torch.randn(num_layers * directions, batch, hidden_size, device=device)
    grad_hy = torch.randn(num_layers * directions, batch, hidden_size, device=device)
    if not contig:
        input_val, grad_output = make_noncontig(input_val), make_noncontig(grad_output)
        hx_val, grad_hy = make_noncontig(hx_val), make_noncontig(grad_hy)
    if variable_len:
        lengths = [7, 5, 5, 2, 1, 1]
        input_val = pack_padded_sequence(input_val, lengths, batch_first=batch_first)
        grad_output = pack_padded_sequence(grad_output, lengths, batch_first=batch_first).data
    reference, ours = twin(cell, input_size, hidden_size, num_layers, bias=bias, bidirectional=bidirectional,
                           batch_first=batch_first, device=device, backend=backend)

    def forward_backward(rnn):
        if isinstance(input_val, PackedSequence):
            data = input_val.data.clone().requires_grad_()
            given, input_leaf = PackedSequence(data, input_val.batch_sizes), data
        else:
            given = input_leaf = input_val.clone().requires_grad_()
        hx = [hx_val.clone().requires_grad_()] + ([hx_val.add(1).requires_grad_()] if cell == "lstm" else [])
        output, hy = rnn(given, tuple(hx) if cell == "lstm" else hx[0])
        output = output.data if isinstance(output, PackedSequence) else output
        hy = states_of(hy)
        grads = [grad_output, grad_hy] + ([grad_hy + 1] if cell == "lstm" else [])
        torch.autograd.backward([output, *hy], grads)
        return [output, *hy, input_leaf.grad, *[h.grad for h in hx], *[p.grad for p in rnn.parameters()]]

    for actual, expected in zip(forward_backward(ours), forward_backward(reference)):
        torch.testing.assert_close(actual, expected, rtol=5e-5, atol=5e-5)  # test_nn's prec=5e-5


@pytest.mark.parametrize("cell", CELLS)
def test_rnn_args_check(cell):
    # test_nn's test_rnn_args_check: wrong input size, hidden size or batch in hx raise a
    # RuntimeError in both, for batched and packed input.
    input_size, hidden_size, num_layers, seq_length, batch = 3, 5, 2, 4, 6
    reference, ours = twin(cell, input_size, hidden_size, num_layers)

    def bad_calls(rnn):
        good_hx = torch.zeros(num_layers, batch, hidden_size)
        calls = {
            "input size": (torch.randn(seq_length, batch, input_size + 1), None),
            "hidden size": (torch.randn(seq_length, batch, input_size), torch.zeros(num_layers, batch, hidden_size + 1)),
            "hidden batch": (torch.randn(seq_length, batch, input_size), torch.zeros(num_layers, batch + 1, hidden_size)),
            "hidden layers": (torch.randn(seq_length, batch, input_size), torch.zeros(num_layers + 1, batch, hidden_size)),
        }
        for name, (x, hx) in calls.items():
            hx = hx if hx is None or cell != "lstm" else (hx, good_hx if hx.shape != good_hx.shape else hx)
            with pytest.raises(RuntimeError):
                rnn(x, hx)
            yield name

    assert list(bad_calls(reference)) == list(bad_calls(ours))
