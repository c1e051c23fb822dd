"""opcheck on every registered op (step_gemm's in test_step_gemm.py) and torch.compile(fullgraph=True)
through Ragged."""
import pytest
import torch

import padkern
from padkern import Ragged
from conftest import DEVICES
from ragged_cases import random_ragged


def padding_samples(device, requires_grad):
    values, offsets = random_ragged([3, 0, 4], (5,), device=device)
    padded = torch.randn(3, 6, 5, device=device)
    values.requires_grad_(requires_grad)
    padded.requires_grad_(requires_grad)
    return [
        ("pad", (values, offsets, 6, 0.5, True)),
        ("pad", (values, offsets, 4, 0.0, False)),
        ("unpad", (padded, offsets, 7, True)),
        ("unpad", (padded.transpose(0, 1).contiguous(), offsets, 7, False)),
    ]


def native_ops_available(device):
    from padkern._backend import why_unavailable

    return why_unavailable("cpu" if device == "cpu" else "cuda", torch.device(device)) is None


@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph(device):
    torch._dynamo.reset()

    def layer(ragged: Ragged, weight):
        hidden = ragged.with_values(torch.tanh(ragged.values @ weight))
        return hidden.to_padded(total_length=8)

    values, offsets = random_ragged([3, 0, 5, 1], (4,), device=device)
    weight = torch.randn(4, 6, device=device)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(Ragged(values, offsets), weight), layer(Ragged(values, offsets), weight))


def recurrence_samples(device, requires_grad):
    from rnn_cases import initial_states, layer_weights, make_values

    values, offsets = make_values([3, 0, 2], 4, device=device)
    samples = []
    for cell in ("lstm", "gru"):
        w_ih, w_hh, b_ih, b_hh = layer_weights(cell, 4, 5, device=device)
        gates_x = (values @ w_ih.t()).requires_grad_(requires_grad)
        w_hh.requires_grad_(requires_grad)
        states = [s.requires_grad_(requires_grad) for s in initial_states(cell, 3, 5, device=device)]
        for reverse in (False, True):
            if cell == "lstm":
                samples.append(("lstm_recurrence", (gates_x, offsets, w_hh, *states, reverse, requires_grad)))
            else:
                samples.append(("gru_recurrence", (gates_x, offsets, w_hh, b_hh, *states, reverse, requires_grad)))
    # The backward ops, on the saved tensors a forward produced.
    for name, args in list(samples):
        detached = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
        outputs = getattr(torch.ops.padkern, name)(*detached[:-1], True)
        if name == "lstm_recurrence":
            gates_x, offsets, w_hh, h0, c0, reverse = detached[:6]
            grads = [torch.randn_like(t) for t in outputs[:3]]
            samples.append(("lstm_recurrence_backward", (*grads, outputs[3], outputs[4], offsets, w_hh, c0, reverse)))
        else:
            gates_x, offsets, w_hh, b_hh, h0, reverse = detached[:6]
            grads = [torch.randn_like(t) for t in outputs[:2]]
            samples.append(("gru_recurrence_backward", (*grads, outputs[2], outputs[3], outputs[0], offsets, w_hh, h0,
                                                        reverse)))
    # The Elman RNN has no save flag: its backward reads the forward's output.
    w_ih, w_hh, b_ih, b_hh = layer_weights("rnn_relu", 4, 5, device=device)
    (h0,) = initial_states("rnn_relu", 3, 5, device=device)
    gates_x = values @ w_ih.t()
    for nonlinearity, reverse in ((0, False), (1, True)):
        output, h_n = torch.ops.padkern.rnn_recurrence(gates_x, offsets, w_hh, h0, nonlinearity, reverse)
        grads = [torch.randn_like(output), torch.randn_like(h_n)]
        samples.append(("rnn_recurrence_backward", (*grads, output, offsets, w_hh, h0, nonlinearity, reverse)))
        leaves = [t.clone().requires_grad_(requires_grad) for t in (gates_x, w_hh, h0)]
        samples.append(("rnn_recurrence", (leaves[0], offsets, leaves[1], leaves[2], nonlinearity, reverse)))
    return samples


def linear_samples(device, requires_grad):
    from ragged_cases import offsets_of

    generator = torch.Generator().manual_seed(0)

    def make(*shape):
        return torch.randn(shape, generator=generator, dtype=torch.float64).to(device).requires_grad_(requires_grad)

    offsets = offsets_of([3, 0, 5], device)
    padded, values, weight, bias = make(3, 6, 4), make(8, 4), make(5, 4), make(5)
    mats, other = make(3, 4, 5), make(8, 5)
    return [
        ("grouped_linear", (padded, offsets, weight, bias, 2, requires_grad, 8)),
        ("grouped_linear", (values, offsets, weight, None, 1, requires_grad, 8)),
        ("grouped_linear", (values, offsets, mats, None, 0, False, 8)),
        ("ragged_outer_bmm", (values, other, offsets)),
        ("segment_reduce", (values, offsets, 0)),
        ("segment_reduce", (values, offsets, 1)),
        ("segment_reduce", (values, offsets, 2)),
        ("segment_softmax", (values, offsets)),
    ]


@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph_feedforward(device):
    torch._dynamo.reset()

    def block(ragged: Ragged, w1, b1, w2):
        hidden = padkern.ops.ragged_linear(ragged, w1, b1, activation="gelu")
        scores = padkern.ops.segment_softmax(padkern.ops.ragged_linear(hidden, w2).values, ragged.offsets)
        return padkern.ops.segment_sum(scores * hidden.values[:, :1], ragged.offsets)

    values, offsets = random_ragged([3, 0, 5, 1], (4,), dtype=torch.float64, device=device)
    args = [torch.randn(6, 4, dtype=torch.float64, device=device), torch.randn(6, dtype=torch.float64, device=device),
            torch.randn(2, 6, dtype=torch.float64, device=device)]
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(Ragged(values, offsets), *args), block(Ragged(values, offsets), *args))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("flavour", ["native", "triton"])
@pytest.mark.parametrize("family", [padding_samples, recurrence_samples, linear_samples],
                         ids=["padding", "recurrence", "linear_segment"])
def test_opcheck(device, requires_grad, flavour, family):
    if not native_ops_available(device):
        pytest.skip("native extension not built (its ops make the recurrence samples)")
    for name, args in family(device, requires_grad):
        op = getattr(torch.ops.padkern, name if flavour == "native" else f"{name}_triton")
        torch.library.opcheck(op, args)
