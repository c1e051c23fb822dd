"""Builders shared by the recurrence tests."""
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import padkern
from ragged_cases import random_ragged


# Test cells: "rnn_tanh" and "rnn_relu" are padkern.ops.rnn / torch.nn.RNN with that nonlinearity.
GATE_COUNT = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


def nonlinearity_of(cell):
    return cell.split("_")[1]


def torch_module(cell, *args, **kwargs):
    """torch.nn's module for a test cell."""
    if cell.startswith("rnn"):
        return torch.nn.RNN(*args, nonlinearity=nonlinearity_of(cell), **kwargs)
    return (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(*args, **kwargs)


def padkern_module(cell, *args, **kwargs):
    """padkern.nn's module for a test cell."""
    if cell.startswith("rnn"):
        return padkern.nn.RNN(*args, nonlinearity=nonlinearity_of(cell), **kwargs)
    return (padkern.nn.LSTM if cell == "lstm" else padkern.nn.GRU)(*args, **kwargs)


def layer_weights(cell, input_size, hidden, dtype=torch.float64, device="cpu", bias=True, seed=0):
    gates = GATE_COUNT[cell] * hidden
    generator = torch.Generator().manual_seed(seed)

    bound = hidden ** -0.5  # torch.nn.LSTM/GRU/RNN's initialisation range

    def make(*shape):
        return ((torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound).to(dtype).to(device)

    weights = [make(gates, input_size), make(gates, hidden)]
    return weights + ([make(gates), make(gates)] if bias else [None, None])


def run_layer(cell, values, offsets, weights, states, reverse, backend):
    if cell.startswith("rnn"):
        return padkern.ops.rnn(values, offsets, *weights, *states, nonlinearity=nonlinearity_of(cell),
                               reverse=reverse, backend=backend)
    op = padkern.ops.lstm if cell == "lstm" else padkern.ops.gru
    return op(values, offsets, *weights, *states, reverse=reverse, backend=backend)


def initial_states(cell, batch, hidden, dtype=torch.float64, device="cpu", seed=1):
    generator = torch.Generator().manual_seed(seed)
    count = 2 if cell == "lstm" else 1
    return [torch.randn(batch, hidden, generator=generator, dtype=torch.float64).to(dtype).to(device) for _ in range(count)]


def per_sequence_reference(cell, values, offsets, weights, states, reverse):
    """Each sequence alone through torch.nn.LSTM/GRU/RNN, outputs concatenated: the only
    reference that needs no packing (so it covers zero-length sequences)."""
    input_size, hidden = weights[0].shape[1], weights[1].shape[1]
    module = torch_module(cell, input_size, hidden, bias=weights[2] is not None)
    module = module.to(values.dtype).to(values.device)
    with torch.no_grad():
        for name, weight in zip(("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"), weights):
            if weight is not None:
                getattr(module, name).copy_(weight)
    outputs, finals = [], [[] for _ in states]
    bounds = offsets.tolist()
    for b in range(len(bounds) - 1):
        piece = values[bounds[b]:bounds[b + 1]]
        if piece.shape[0] == 0:
            for slot, state in zip(finals, states):
                slot.append(state[b])
            continue
        if reverse:
            piece = piece.flip(0)
        hx = tuple(state[b][None] for state in states)
        out, final = module(piece, hx if cell == "lstm" else hx[0])
        outputs.append(out.flip(0) if reverse else out)
        final = final if cell == "lstm" else (final,)
        for slot, state in zip(finals, final):
            slot.append(state[0])
    hidden_out = torch.cat(outputs) if outputs else values.new_zeros((0, hidden))
    return (hidden_out, *[torch.stack(slot) for slot in finals])


def packed_pipeline(module, x, lengths, hx=None):
    """What users write today: pack, run torch.nn, keep the PackedSequence."""
    packed = pack_padded_sequence(x, lengths, batch_first=module.batch_first, enforce_sorted=False)
    return module(packed, hx)


def make_values(lengths, input_size, dtype=torch.float64, device="cpu", seed=2):
    return random_ragged(lengths, (input_size,), dtype=dtype, device=device, seed=seed)
