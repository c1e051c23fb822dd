"""Backend agreement on edge values, and the promises the reference must keep too.

Edge inputs (NaN, +-inf, all sequences empty, B = 0, one token, zeros first/last/every
fifth) run through every kernel backend and the reference, forward and backward (every
differentiable input, one fixed integer-valued upstream gradient): equal, NaN where NaN,
bitwise where the computation is exact (integer-valued pad/unpad/segment_sum/max),
float64 tolerance elsewhere. Then the specification itself, on every backend including
the reference: segment_max (NaN propagates as torch.amax, all -inf gives -inf, empty gives
0, the gradient goes to the first row holding the max), segment_mean of an empty sequence,
masked_linear never letting its padding reach an output or a gradient, autograd kept when
there are no tokens, and padding values carried exactly.
Bodies run in a child process (tests/isolated.py): an edge input must not crash a kernel.
"""
import pytest
import torch

import padkern
from isolated import isolated
from op_specs import (OPS, assert_results_equal, build, first_mismatches, forward_and_grads, names_of,
                      offsets_list)

CASES = {
    "all_empty": [0, 0, 0],
    "no_sequences": [],
    "one_token": [1],
    "zeros_first_last_every_fifth": [0, 2, 3, 1, 4, 0, 2, 1, 3, 5, 0, 2, 0],
    "mixed": [3, 0, 6, 1, 4],
}
POISONS = ["finite", "nan", "inf"]
ACTIVATIONS = [None, "relu", "gelu", "silu"]
AGREEMENT_OPS = (["pad", "pad_time_major", "unpad", "segment_sum", "segment_mean", "segment_max", "segment_softmax",
                  "ragged_bmm", "ragged_outer_bmm", "ragged_attention", "ragged_conv1d", "ragged_conv1d_depthwise", "lstm", "gru_reverse", "rnn_relu", "rnn_tanh_reverse"]
                 + [f"{op}:{act}" for op in ("ragged_linear", "masked_linear") for act in ACTIVATIONS])
FLOAT64 = dict(rtol=1e-10, atol=1e-12)
EXACT = dict(rtol=0, atol=0)


def real_positions(lengths):
    return [(b, t) for b, n in enumerate(lengths) for t in range(n)]


def poisoned_sequences(lengths, kind):
    positions = real_positions(lengths)
    if kind == "finite" or not positions:
        return set()
    chosen = {positions[0][0], positions[len(positions) // 2][0], positions[-1][0]}
    return chosen | ({max(range(len(lengths)), key=lambda b: lengths[b])} if kind == "inf" else set())


def poison(tokens, lengths, kind, padded, padding_too=True):
    """Write NaN or +-inf into `tokens` ([L, F] ragged, or [B, T, F] padded) at the first,
    a middle and the last real token; "inf" also makes one column of the longest
    sequence all -inf. A padded batch also gets the poison at every padded position
    (unless not `padding_too`)."""
    positions = real_positions(lengths)
    if kind == "finite" or not positions:
        return tokens
    tokens = tokens.clone()
    row = (lambda b, t: tokens[b, t]) if padded else (lambda b, t: tokens[offsets_list(lengths)[b] + t])
    first, middle, last = positions[0], positions[len(positions) // 2], positions[-1]
    value = float("nan") if kind == "nan" else float("inf")
    row(*first)[0] = value
    row(*middle)[:] = -value
    row(*last)[-1] = value
    if kind == "inf":
        longest = max(range(len(lengths)), key=lambda b: lengths[b])
        for t in range(lengths[longest]):
            row(longest, t)[-1] = float("-inf")
    if padded and padding_too:
        real = torch.zeros(tokens.shape[:2], dtype=torch.bool)
        for b, t in positions:
            real[b, t] = True
        tokens[~real] = value
    return tokens


def edge_inputs(op, lengths, kind, padding_too=True):
    name, _, activation = op.partition(":")
    inputs = build(name, lengths)
    if activation:
        inputs["activation"] = None if activation == "None" else activation
    first = OPS[name].floats[0]
    inputs[first] = poison(inputs[first], lengths, kind, first in ("x", "padded") and inputs[first].dim() == 3,
                           padding_too)
    return name, inputs


@pytest.mark.parametrize("kind", POISONS)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("op", AGREEMENT_OPS)
@isolated
def test_agrees_with_reference(kernel_backend, op, case, kind):
    device, backend = kernel_backend
    lengths = CASES[case]
    if kind != "finite" and sum(lengths) == 0:
        pytest.skip("no tokens to poison")
    name, inputs = edge_inputs(op, lengths, kind)
    inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    got, _ = forward_and_grads(name, inputs, backend)
    want, _ = forward_and_grads(name, inputs, "reference")
    assert_results_equal(name, got, want, **(EXACT if OPS[name].exact else FLOAT64), context=f"{op} {case} {kind} "
                         f"on {backend}")


# Which axis of each result indexes sequences ("tokens": rows of [L, ...] values; "batch":
# axis 0 is B; "time_major": axis 1 is B); results shared by all sequences are absent.
PER_SEQUENCE = {
    "pad": {"output[0]": "batch", "grad values": "tokens"},
    "pad_time_major": {"output[0]": "time_major", "grad values": "tokens"},
    "unpad": {"output[0]": "tokens", "grad padded": "batch"},
    **{op: {"output[0]": "batch", "grad values": "tokens"} for op in ("segment_sum", "segment_mean", "segment_max")},
    "segment_softmax": {"output[0]": "tokens", "grad values": "tokens"},
    "ragged_linear": {"output[0]": "tokens", "grad values": "tokens"},
    "masked_linear": {"output[0]": "batch", "grad x": "batch"},
    "ragged_bmm": {"output[0]": "tokens", "grad values": "tokens", "grad weights": "batch"},
    "ragged_outer_bmm": {"output[0]": "batch", "grad x": "tokens", "grad y": "tokens"},
    "ragged_attention": {"output[0]": "tokens", "grad q": "tokens", "grad k": "tokens", "grad v": "tokens"},
    **{op: {"output[0]": "tokens", "grad values": "tokens"} for op in ("ragged_conv1d", "ragged_conv1d_depthwise")},
    "lstm": {"output[0]": "tokens", "output[1]": "batch", "output[2]": "batch", "grad values": "tokens",
             "grad h0": "batch", "grad c0": "batch"},
    **{op: {"output[0]": "tokens", "output[1]": "batch", "grad values": "tokens", "grad h0": "batch"}
       for op in ("gru_reverse", "rnn_relu", "rnn_tanh_reverse")},
}


def sequence_slices(kind, lengths, b):
    if kind == "batch":
        return (b,)
    if kind == "time_major":
        return (slice(None), b)
    start = offsets_list(lengths)[b]
    return (slice(start, start + lengths[b]),)


@pytest.mark.parametrize("kind", ["nan", "inf"])
@pytest.mark.parametrize("case", ["zeros_first_last_every_fifth", "mixed"])
@pytest.mark.parametrize("op", [op for op in AGREEMENT_OPS if op.partition(":")[0] in PER_SEQUENCE])
@isolated
def test_poison_stays_in_its_sequence(device_backend, op, case, kind):
    """NaN or inf in one sequence's tokens changes nothing that belongs to another
    sequence: its outputs, its states, its rows of every gradient."""
    device, backend = device_backend
    lengths = CASES[case]
    results = []
    for poisoned in ("finite", kind):
        name, inputs = edge_inputs(op, lengths, poisoned, padding_too=False)
        inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        results.append(forward_and_grads(name, inputs, backend)[0])
    names = names_of(name, len(results[0]) - len(OPS[name].floats))
    touched = poisoned_sequences(lengths, kind)
    problems = []
    for label, clean, dirty in zip(names, *results):
        axis = PER_SEQUENCE[name].get(label)
        for b in range(len(lengths)):
            if axis is None or b in touched:
                continue
            index = sequence_slices(axis, lengths, b)
            found = first_mismatches(dirty[index], clean[index], **FLOAT64)
            if found or not torch.isfinite(dirty[index]).all():
                problems.append(f"{label}, sequence {b}: {found or 'not finite'}")
    assert not problems, (f"{op} {case}: {kind} in sequences {sorted(touched)} reached others (poisoned vs clean):\n  "
                          + "\n  ".join(problems))


# ----- segment_max and segment_mean: the specification ---------------------------------------
MAX_LENGTHS = [3, 0, 4, 1, 0, 5]


def max_values():
    """Integer-valued (ties), with NaN, +-inf, and columns that are -inf throughout a sequence."""
    nan, inf = float("nan"), float("inf")
    v = torch.randint(-2, 3, (13, 4), generator=torch.Generator().manual_seed(5)).to(torch.float64)
    v[1, 1] = inf          # seq 0: +inf max
    v[4, 1] = nan          # seq 2: first NaN at its row 1 ...
    v[6, 1] = nan          # ... and another later
    v[3:7, 2] = -inf       # seq 2: column 2 all -inf
    v[7, 2] = -inf         # seq 3 (one token): -inf
    v[9, 3] = v[11, 3] = inf  # seq 5: tied +inf, the first gets the gradient
    v[8:13, 0] = 2.0       # seq 5: all rows tie
    return v


def max_expected(values, lengths, upstream):
    """torch.amax per sequence (0 when empty); gradient to the first row holding the max
    (the first NaN when there is one)."""
    out = torch.zeros((len(lengths),) + values.shape[1:], dtype=values.dtype)
    grad = torch.zeros_like(values)
    bounds = offsets_list(lengths)
    for b in range(len(lengths)):
        piece = values[bounds[b]:bounds[b + 1]]
        if piece.shape[0] == 0:
            continue
        out[b] = piece.amax(0)
        for d in range(values.shape[1]):
            column = piece[:, d]
            hits = torch.isnan(column) if torch.isnan(column).any() else column == out[b, d]
            grad[bounds[b] + int(hits.nonzero()[0]), d] = upstream[b, d]
    return out, grad


@isolated
def test_segment_max_spec(device_backend):
    device, backend = device_backend
    values = max_values().to(device).requires_grad_()
    offsets = torch.tensor(offsets_list(MAX_LENGTHS), device=device)
    upstream = torch.randint(1, 5, (len(MAX_LENGTHS), 4), generator=torch.Generator().manual_seed(6)).double()
    out = padkern.ops.segment_max(values, offsets, backend=backend)
    (grad,) = torch.autograd.grad(out, values, upstream.to(device))
    want_out, want_grad = max_expected(values.detach().cpu(), MAX_LENGTHS, upstream)
    torch.testing.assert_close(out.cpu(), want_out, equal_nan=True, **EXACT,
                               msg=lambda m: f"segment_max forward (NaN as amax, all -inf -> -inf, empty -> 0): {m}")
    torch.testing.assert_close(grad.cpu(), want_grad, **EXACT,
                               msg=lambda m: f"segment_max gradient (all to the first row holding the max): {m}")


@pytest.mark.parametrize("lengths", [[0, 0, 0], []], ids=["all_empty", "no_sequences"])
@pytest.mark.parametrize("op", ["segment_max", "segment_mean", "segment_sum", "segment_softmax"])
@isolated
def test_segment_backward_without_tokens(device_backend, op, lengths):
    device, backend = device_backend
    values = torch.zeros(0, 4, dtype=torch.float64, device=device, requires_grad=True)
    offsets = torch.tensor(offsets_list(lengths), device=device)
    out = getattr(padkern.ops, op)(values, offsets, backend=backend)
    assert out.requires_grad, f"{op} with no tokens dropped autograd"
    (grad,) = torch.autograd.grad(out, values, torch.ones_like(out))
    assert grad.shape == (0, 4), grad.shape
    if op != "segment_softmax":
        torch.testing.assert_close(out, torch.zeros(len(lengths), 4, dtype=torch.float64, device=device), **EXACT)


@isolated
def test_segment_mean_empty_sequence(device_backend):
    device, backend = device_backend
    lengths = [2, 0, 3, 0]
    values = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    values[2, 0] = float("nan")  # a NaN elsewhere must not reach the empty sequences
    values = values.to(device).requires_grad_()
    offsets = torch.tensor(offsets_list(lengths), device=device)
    upstream = torch.arange(12, dtype=torch.float64).view(4, 3) + 1
    out = padkern.ops.segment_mean(values, offsets, backend=backend)
    (grad,) = torch.autograd.grad(out, values, upstream.to(device))
    assert torch.equal(out[[1, 3]].cpu(), torch.zeros(2, 3, dtype=torch.float64)), out
    want = torch.cat([upstream[0].expand(2, 3) / 2, upstream[2].expand(3, 3) / 3])
    torch.testing.assert_close(grad.cpu(), want, **FLOAT64)


# ----- masked_linear: padding never reaches an output or a gradient --------------------------
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("garbage", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@isolated
def test_masked_linear_padding_never_leaks(device_backend, activation, garbage, batch_first):
    device, backend = device_backend
    lengths = torch.tensor([3, 0, 5, 1])
    generator = torch.Generator().manual_seed(8)
    clean = torch.randn(4, 6, 3, dtype=torch.float64, generator=generator)
    weight = torch.randn(5, 3, dtype=torch.float64, generator=generator)
    bias = torch.randn(5, dtype=torch.float64, generator=generator)
    upstream = torch.randn(4, 6, 5, dtype=torch.float64, generator=generator)
    padding = torch.arange(6)[None, :] >= lengths[:, None]
    clean[padding] = 0.0
    dirty = clean.clone()
    dirty[padding] = float(garbage)

    def run(x):
        leaves = [t.to(device).requires_grad_() for t in (x if batch_first else x.transpose(0, 1), weight, bias)]
        out = padkern.ops.masked_linear(leaves[0], lengths, leaves[1], leaves[2], activation=activation,
                                        batch_first=batch_first, backend=backend)
        g = upstream.to(device) if batch_first else upstream.transpose(0, 1).to(device)
        grads = torch.autograd.grad(out, leaves, g)
        if not batch_first:
            out, grads = out.transpose(0, 1), (grads[0].transpose(0, 1),) + grads[1:]
        return [t.cpu() for t in (out, *grads)]

    out, grad_x, grad_w, grad_b = run(dirty)
    assert torch.equal(out[padding], torch.zeros_like(out[padding])), "padding reached the output"
    assert torch.equal(grad_x[padding], torch.zeros_like(grad_x[padding])), "x.grad is not exactly zero at padding"
    for name, t in (("output", out), ("x.grad", grad_x), ("weight.grad", grad_w), ("bias.grad", grad_b)):
        assert torch.isfinite(t).all(), f"{garbage} in the padding reached {name}"
    for name, got, want in zip(("output", "x.grad", "weight.grad", "bias.grad"), (out, grad_x, grad_w, grad_b),
                               run(clean)):
        torch.testing.assert_close(got, want, **FLOAT64, msg=lambda m, name=name: f"{name}: {m}")


# ----- no tokens: autograd is kept ------------------------------------------------------------
@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN"])
@isolated
def test_module_without_tokens_keeps_autograd(device_backend, cell):
    device, backend = device_backend
    module = getattr(padkern.nn, cell)(3, 4, backend=backend).to(device)
    output, hidden = module(torch.zeros(5, 0, 3, device=device))
    h_n = hidden[0] if cell == "LSTM" else hidden
    assert output.shape == (5, 0, 4) and h_n.shape == (1, 0, 4), (output.shape, h_n.shape)
    assert output.requires_grad, "output of a module with parameters must require grad"
    assert h_n.requires_grad, "h_n of a module with parameters must require grad"
    (output.sum() + h_n.sum()).backward()  # as torch.nn.GRU/LSTM/RNN: every parameter gets a zero gradient
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None and torch.equal(parameter.grad, torch.zeros_like(parameter)), \
            f"{name}.grad = {parameter.grad}"


@pytest.mark.parametrize("lengths", [[0, 0, 0], []], ids=["all_empty", "no_sequences"])
@pytest.mark.parametrize("op", ["lstm", "gru_reverse", "rnn_relu"])
@isolated
def test_rnn_op_without_tokens_keeps_autograd(device_backend, op, lengths):
    device, backend = device_backend
    spec = OPS[op]
    inputs = {k: v.to(device) for k, v in build(op, lengths).items()}
    leaves = [inputs[name].requires_grad_() for name in spec.floats]
    outputs = list(spec.call(inputs, backend))
    assert all(out.requires_grad for out in outputs), [out.requires_grad for out in outputs]
    upstream = [torch.full_like(out, 3.0) for out in outputs]
    grads = torch.autograd.grad(outputs, leaves, upstream, allow_unused=True)
    for name, leaf, g in zip(spec.floats, leaves, grads):
        # h_n/c_n of an empty sequence are h0/c0: their gradient passes straight through.
        want = upstream[spec.floats.index(name) - 4] if name in ("h0", "c0") else torch.zeros_like(leaf)
        assert g is not None and torch.equal(g, want), f"grad {name}: {g} (want {want})"


# ----- padding values are carried exactly ------------------------------------------------------
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("dtype, value", [(torch.float64, 0.1), (torch.int64, -123456789), (torch.float64, 1e300),
                                          (torch.float32, 0.1), (torch.float64, float("-inf"))],
                         ids=["f64_0.1", "i64_-123456789", "f64_1e300", "f32_0.1", "f64_-inf"])
@isolated
def test_pad_padding_value_exact(device_backend, dtype, value, batch_first):
    device, backend = device_backend
    lengths = [2, 0, 3]
    values = (torch.arange(10, dtype=torch.int64).view(5, 2) * 1000003).to(dtype).to(device)
    out = padkern.ops.pad(values, torch.tensor(offsets_list(lengths), device=device), total_length=4,
                          padding_value=value, batch_first=batch_first, backend=backend)
    want = torch.full((3, 4, 2), value, dtype=dtype)
    for b, t in real_positions(lengths):
        want[b, t] = values[offsets_list(lengths)[b] + t].cpu()
    torch.testing.assert_close(out.cpu(), want if batch_first else want.transpose(0, 1), **EXACT)
