"""Reference LSTM/GRU/RNN over a ragged batch: a plain loop over steps, all in PyTorch.

Every step updates every sequence and then keeps the old state where a sequence
has ended (``torch.where``): slow, obviously right, and differentiable to any order.
"""
import torch

from .padding import token_coordinates


def _step_tokens(offsets, steps, reverse):
    """[steps, B] token index of step t of each sequence (L where it has ended: a zero row
    appended to the inputs), and [steps, B] activity."""
    lengths = offsets[1:] - offsets[:-1]
    t = torch.arange(steps, device=offsets.device)[:, None]
    tokens = offsets[1:][None, :] - 1 - t if reverse else offsets[:-1][None, :] + t
    active = t < lengths[None, :]
    return torch.where(active, tokens, offsets[-1]), active


def zero_of(*tensors):
    """An exact 0 that depends on every tensor given (None skipped), each of which then gets
    an exact zero gradient: an empty slice sums to 0 whatever the tensor holds, NaN included."""
    return sum(t[:0].sum() for t in tensors if t is not None)


def _recur(gates_x, offsets, h0, step, reverse, parameters):
    """Run `step(gates_x rows, state) -> (new_state, h)` over the batch; collect h rows per token.

    A sequence that has ended computes its step on a zero input row and a zero state, and
    keeps its old state: nothing of another sequence's tokens (NaN included) can reach its
    values or its gradients, as in the kernels, which never touch them.
    """
    total = gates_x.shape[0]
    lengths = offsets[1:] - offsets[:-1]
    steps = int(lengths.max()) if lengths.numel() > 0 else 0
    tokens, active = _step_tokens(offsets, steps, reverse)
    inputs = torch.cat([gates_x, gates_x.new_zeros((1, gates_x.shape[1]))])
    state, rows, outputs = h0, [], []
    for t in range(steps):
        keep = active[t][:, None]
        running = tuple(torch.where(keep, s, torch.zeros_like(s)) for s in state)
        new_state, h = step(inputs[tokens[t]], running)
        state = tuple(torch.where(keep, new, old) for new, old in zip(new_state, state))
        rows.append(tokens[t][active[t]])
        outputs.append(h[active[t]])
    hidden = h0[0].shape[1]
    if outputs:
        out = gates_x.new_zeros((total, hidden)).index_copy(0, torch.cat(rows), torch.cat(outputs))
        return out, state
    # No step ran (L = 0): the outputs are still functions of the inputs and parameters,
    # with zero derivative, and stay in the autograd graph as the kernels' outputs do.
    anchor = zero_of(gates_x, *parameters)
    return gates_x[:, :hidden] + anchor, tuple(s + anchor for s in state)


def lstm(values, offsets, w_ih, w_hh, b_ih, b_hh, h0, c0, reverse=False, w_hr=None):
    """One LSTM layer-direction: values [L, K] -> (output [L, H], h_n [B, H], c_n [B, H]).
    With projections (w_hr [P, H]): h = (o * tanh(c)) w_hr^T, and output, h_n have P columns."""
    gates_x = values @ w_ih.t()
    if b_ih is not None:
        gates_x = gates_x + b_ih + b_hh

    def step(x, state):
        h, c = state
        i, f, g, o = (x + h @ w_hh.t()).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        if w_hr is not None:
            h = h @ w_hr.t()
        return (h, c), h

    out, (h_n, c_n) = _recur(gates_x, offsets, (h0, c0), step, reverse, (w_hh, w_hr))
    return out, h_n, c_n


def gru(values, offsets, w_ih, w_hh, b_ih, b_hh, h0, reverse=False):
    """One GRU layer-direction: values [L, K] -> (output [L, H], h_n [B, H])."""
    gates_x = values @ w_ih.t()
    if b_ih is not None:
        gates_x = gates_x + b_ih

    def step(x, state):
        (h,) = state
        hh = h @ w_hh.t()
        if b_hh is not None:
            hh = hh + b_hh
        x_r, x_z, x_n = x.chunk(3, 1)
        hh_r, hh_z, hh_n = hh.chunk(3, 1)
        r, z = torch.sigmoid(x_r + hh_r), torch.sigmoid(x_z + hh_z)
        n = torch.tanh(x_n + r * hh_n)
        h = (1 - z) * n + z * h
        return (h,), h

    out, (h_n,) = _recur(gates_x, offsets, (h0,), step, reverse, (w_hh, b_hh))
    return out, h_n


def rnn(values, offsets, w_ih, w_hh, b_ih, b_hh, h0, nonlinearity="tanh", reverse=False):
    """One Elman RNN layer-direction (tanh or relu): values [L, K] -> (output [L, H], h_n [B, H])."""
    gates_x = values @ w_ih.t()
    if b_ih is not None:
        gates_x = gates_x + b_ih + b_hh
    activations = {"tanh": torch.tanh, "relu": torch.relu}
    if nonlinearity not in activations:
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    activation = activations[nonlinearity]

    def step(x, state):
        (h,) = state
        h = activation(x + h @ w_hh.t())
        return (h,), h

    out, (h_n,) = _recur(gates_x, offsets, (h0,), step, reverse, (w_hh,))
    return out, h_n


def previous_rows(offsets, total_tokens, reverse):
    """For each token, the row of its previous hidden state in cat([output [L, H], h0 [B, H]])."""
    seq, pos = token_coordinates(offsets, total_tokens)
    lengths = offsets[1:] - offsets[:-1]
    token = torch.arange(total_tokens, device=offsets.device)
    first = pos == (lengths[seq] - 1) if reverse else pos == 0
    return torch.where(first, total_tokens + seq, token + 1 if reverse else token - 1)
