"""Every public op as one table entry: a builder of valid inputs for given lengths and a
call that runs it on a backend. Shared by the layout, agreement and hostile-input tests.

An entry's inputs are a dict: its floating-point tensors (``floats``, in call order; the
first one holds the tokens), its integer tensor (``int_arg``: "offsets" [B+1], or
"lengths" [B] for masked_linear's lengths form) and any plain keyword arguments.
"""
from typing import Callable, NamedTuple

import torch
from torch.utils._pytree import tree_leaves

import padkern
from padkern import Ragged
from rnn_cases import GATE_COUNT, padkern_module, run_layer

K, N, H = 3, 4, 3  # in-features, out-features, hidden: small, not powers of two


class OpSpec(NamedTuple):
    build: Callable  # (lengths, generator) -> inputs dict (float64, contiguous)
    call: Callable  # (inputs, backend) -> outputs (a pytree of tensors)
    floats: tuple  # the differentiable tensor inputs, the token-holding one first
    int_arg: str = "offsets"
    exact: bool = False  # integer-valued data and no rounding: results compare bitwise


def offsets_list(lengths):
    out = [0]
    for n in lengths:
        out.append(out[-1] + n)
    return out


def _rand(generator, *shape):
    return torch.randn(shape, generator=generator, dtype=torch.float64)


def _ints(generator, *shape):
    return torch.randint(-4, 5, shape, generator=generator).to(torch.float64)


def _ragged_values(make, features):
    def build(lengths, generator):
        return {"values": make(generator, sum(lengths), features), "offsets": torch.tensor(offsets_list(lengths))}
    return build


def _padded(lengths, generator, features, make=_rand):
    return make(generator, len(lengths), max(lengths, default=0) + 1, features)


def _segment(op):
    return OpSpec(_ragged_values(_ints, 5),
                  lambda a, backend: getattr(padkern.ops, op)(a["values"], a["offsets"], backend=backend),
                  ("values",), exact=op in ("segment_sum", "segment_max"))


def _build_linear(lengths, generator):
    return {"values": _rand(generator, sum(lengths), K), "weight": _rand(generator, N, K), "bias": _rand(generator, N),
            "offsets": torch.tensor(offsets_list(lengths)), "activation": "relu"}


def _build_masked(lengths, generator):
    return {"x": _padded(lengths, generator, K), "weight": _rand(generator, N, K), "bias": _rand(generator, N),
            "offsets": torch.tensor(offsets_list(lengths)), "activation": "gelu"}


def _build_masked_lengths(lengths, generator):
    inputs = _build_masked(lengths, generator)
    del inputs["offsets"]
    return dict(inputs, lengths=torch.tensor(list(lengths), dtype=torch.int64), activation="silu")


def _build_bmm(lengths, generator):
    return {"values": _rand(generator, sum(lengths), K), "weights": _rand(generator, len(lengths), K, N),
            "offsets": torch.tensor(offsets_list(lengths))}


def _build_outer(lengths, generator):
    return {"x": _rand(generator, sum(lengths), K), "y": _rand(generator, sum(lengths), N),
            "offsets": torch.tensor(offsets_list(lengths))}


ATTENTION_HEADS, ATTENTION_KV_HEADS, HEAD_DIM = 4, 2, 5  # grouped-query: two query heads per key head


def _build_attention(lengths, generator):
    total = sum(lengths)
    return {"q": _rand(generator, total, ATTENTION_HEADS, HEAD_DIM),
            "k": _rand(generator, total, ATTENTION_KV_HEADS, HEAD_DIM),
            "v": _rand(generator, total, ATTENTION_KV_HEADS, HEAD_DIM), "offsets": torch.tensor(offsets_list(lengths))}


def _call_attention(a, backend):
    if backend == "triton" and padkern.ops.attention._TRITON is None:
        import pytest

        pytest.skip("padkern's Triton attention kernels are not in this build")
    return padkern.ops.ragged_attention(a["q"], a["k"], a["v"], a["offsets"], causal=True, backend=backend)


def _build_conv(channels_in, channels_out, groups, kernel_size):
    def build(lengths, generator):
        return {"values": _rand(generator, sum(lengths), channels_in),
                "weight": _rand(generator, channels_out, channels_in // groups, kernel_size),
                "bias": _rand(generator, channels_out), "offsets": torch.tensor(offsets_list(lengths))}
    return build


def _call_conv(padding, dilation, groups):
    def call(a, backend):
        return padkern.ops.ragged_conv1d(a["values"], a["offsets"], a["weight"], a["bias"], padding=padding,
                                         dilation=dilation, groups=groups, backend=backend)
    return call


def _build_rnn(cell):
    gates = GATE_COUNT[cell] * H

    def build(lengths, generator):
        inputs = {"values": _rand(generator, sum(lengths), K), "w_ih": _rand(generator, gates, K) * 0.5,
                  "w_hh": _rand(generator, gates, H) * 0.5, "b_ih": _rand(generator, gates),
                  "b_hh": _rand(generator, gates), "h0": _rand(generator, len(lengths), H)}
        if cell == "lstm":
            inputs["c0"] = _rand(generator, len(lengths), H)
        inputs["offsets"] = torch.tensor(offsets_list(lengths))
        return inputs
    return build


def _call_rnn(cell, reverse):
    names = ("values", "offsets", "w_ih", "w_hh", "b_ih", "b_hh", "h0") + (("c0",) if cell == "lstm" else ())

    def call(a, backend):
        return run_layer(cell, a["values"], a["offsets"], [a[n] for n in names[2:6]], [a[n] for n in names[6:]],
                         reverse, backend)
    return call


NN_LAYERS = 2


def _module(cell, backend):
    return padkern_module(cell, K, H, num_layers=NN_LAYERS, bidirectional=True, backend=backend).double()


def _build_nn(cell):
    def build(lengths, generator):
        module = _module(cell, None)
        inputs = {"values": _rand(generator, sum(lengths), K)}
        for name, parameter in module.named_parameters():
            inputs[name] = _rand(generator, *parameter.shape) * 0.5
        states = ("h0", "c0") if cell == "lstm" else ("h0",)
        for name in states:
            inputs[name] = _rand(generator, 2 * NN_LAYERS, len(lengths), H)
        inputs["offsets"] = torch.tensor(offsets_list(lengths))
        return inputs
    return build


def _call_nn(cell):
    def call(a, backend):
        module = _module(cell, backend)
        parameters = {name: a[name] for name, _ in module.named_parameters()}
        hx = (a["h0"], a["c0"]) if cell == "lstm" else a["h0"]
        return torch.func.functional_call(module, parameters, (Ragged(a["values"], a["offsets"]), hx))
    return call


def _nn_floats(cell):
    names = [name for name, _ in _module(cell, None).named_parameters()]
    return tuple(["values"] + names + (["h0", "c0"] if cell == "lstm" else ["h0"]))


OPS = {
    "pad": OpSpec(_ragged_values(_ints, 5),
                  lambda a, backend: padkern.ops.pad(a["values"], a["offsets"], padding_value=-2.5, backend=backend),
                  ("values",), exact=True),
    "pad_time_major": OpSpec(
        _ragged_values(_ints, 5),
        lambda a, backend: padkern.ops.pad(a["values"], a["offsets"], batch_first=False, backend=backend),
        ("values",), exact=True),
    "unpad": OpSpec(lambda lengths, g: {"padded": _padded(lengths, g, 5, _ints),
                                        "offsets": torch.tensor(offsets_list(lengths))},
                    lambda a, backend: padkern.ops.unpad(a["padded"], a["offsets"], backend=backend),
                    ("padded",), exact=True),
    **{op: _segment(op) for op in ("segment_sum", "segment_mean", "segment_max", "segment_softmax")},
    "ragged_linear": OpSpec(_build_linear, lambda a, backend: padkern.ops.ragged_linear(
        a["values"], a["weight"], a["bias"], offsets=a["offsets"], activation=a["activation"], backend=backend),
        ("values", "weight", "bias")),
    "masked_linear": OpSpec(_build_masked, lambda a, backend: padkern.ops.masked_linear(
        a["x"], None, a["weight"], a["bias"], offsets=a["offsets"], activation=a["activation"], backend=backend),
        ("x", "weight", "bias")),
    "masked_linear_lengths": OpSpec(_build_masked_lengths, lambda a, backend: padkern.ops.masked_linear(
        a["x"], a["lengths"], a["weight"], a["bias"], activation=a["activation"], backend=backend),
        ("x", "weight", "bias"), int_arg="lengths"),
    "ragged_bmm": OpSpec(_build_bmm, lambda a, backend: padkern.ops.ragged_bmm(
        a["values"], a["offsets"], a["weights"], backend=backend), ("values", "weights")),
    "ragged_attention": OpSpec(_build_attention, _call_attention, ("q", "k", "v")),
    # groups between 1 and the channels (GEMM + gather), and depthwise (its own pass)
    "ragged_conv1d": OpSpec(_build_conv(4, 6, 2, 3), _call_conv("same", 2, 2), ("values", "weight", "bias")),
    "ragged_conv1d_depthwise": OpSpec(_build_conv(5, 5, 5, 4), _call_conv("causal", 1, 5),
                                      ("values", "weight", "bias")),
    "ragged_outer_bmm": OpSpec(_build_outer, lambda a, backend: padkern.ops.ragged_outer_bmm(
        a["x"], a["y"], a["offsets"], backend=backend), ("x", "y")),
    "lstm": OpSpec(_build_rnn("lstm"), _call_rnn("lstm", False),
                   ("values", "w_ih", "w_hh", "b_ih", "b_hh", "h0", "c0")),
    "gru_reverse": OpSpec(_build_rnn("gru"), _call_rnn("gru", True), ("values", "w_ih", "w_hh", "b_ih", "b_hh", "h0")),
    "nn_lstm": OpSpec(_build_nn("lstm"), _call_nn("lstm"), _nn_floats("lstm")),
    "nn_gru": OpSpec(_build_nn("gru"), _call_nn("gru"), _nn_floats("gru")),
    "rnn_relu": OpSpec(_build_rnn("rnn_relu"), _call_rnn("rnn_relu", False), ("values", "w_ih", "w_hh", "b_ih", "b_hh", "h0")),
    "rnn_tanh_reverse": OpSpec(_build_rnn("rnn_tanh"), _call_rnn("rnn_tanh", True),
                               ("values", "w_ih", "w_hh", "b_ih", "b_hh", "h0")),
    "nn_rnn": OpSpec(_build_nn("rnn_tanh"), _call_nn("rnn_tanh"), _nn_floats("rnn_tanh")),
}


def build(op, lengths, seed=0):
    return OPS[op].build(list(lengths), torch.Generator().manual_seed(seed))


def outputs_of(result):
    """The tensors of a result; integer ones (a returned Ragged's offsets) as int64, since
    they echo the caller's offsets in the caller's dtype."""
    return [t if t.is_floating_point() or t.is_complex() else t.long()
            for t in tree_leaves(result) if isinstance(t, torch.Tensor)]


def forward_and_grads(op, inputs, backend, upstream=None):
    """[outputs..., grad of each float input...] for a fixed upstream gradient per output.

    ``upstream(i, output)`` gives output i's gradient (default: seeded integer-valued).
    A float input that the outputs do not depend on gets a zero gradient.
    """
    spec = OPS[op]
    leaves = [inputs[name].detach().requires_grad_() for name in spec.floats]
    call_inputs = dict(inputs, **dict(zip(spec.floats, leaves)))
    outputs = outputs_of(spec.call(call_inputs, backend))
    if upstream is None:
        generator = torch.Generator().manual_seed(123)
        upstream = lambda i, out: torch.randint(-3, 4, out.shape, generator=generator).to(out.dtype)  # noqa: E731
    grads_out = [upstream(i, out) for i, out in enumerate(outputs)]
    live = [(out, g) for out, g in zip(outputs, grads_out) if out.requires_grad]
    if live:
        grads = torch.autograd.grad([o for o, _ in live], leaves, [g for _, g in live], allow_unused=True)
    else:
        grads = [None] * len(leaves)
    grads = [torch.zeros_like(leaf) if g is None else g for leaf, g in zip(leaves, grads)]
    return [o.detach() for o in outputs] + list(grads), grads_out


def names_of(op, count_outputs):
    return [f"output[{i}]" for i in range(count_outputs)] + [f"grad {n}" for n in OPS[op].floats]


def first_mismatches(got, want, rtol, atol, count=3):
    """Up to `count` positions where got and want differ (NaN equals NaN), with both values."""
    if got.shape != want.shape or got.dtype != want.dtype:
        return f"shape/dtype {tuple(got.shape)} {got.dtype} vs {tuple(want.shape)} {want.dtype}"
    g, w = got.detach().cpu(), want.detach().cpu()
    if not g.is_floating_point():
        bad = g != w
    else:
        same = (g == w) | (torch.isnan(g) & torch.isnan(w))
        bad = ~(same | ((g - w).abs() <= atol + rtol * w.abs()))
    if not bad.any():
        return None
    where = bad.nonzero()[:count].tolist()
    shown = ", ".join(f"{tuple(i)}: {g[tuple(i)].item()!r} vs {w[tuple(i)].item()!r}" for i in where)
    return f"{int(bad.sum())}/{bad.numel()} differ, e.g. {shown}"


def assert_results_equal(op, got, want, rtol, atol, context, against="the reference"):
    """Each output and gradient equal (NaN where NaN); the message names every mismatch."""
    problems = []
    for name, g, w in zip(names_of(op, len(got) - len(OPS[op].floats)), got, want):
        found = first_mismatches(g, w, rtol, atol)
        if found:
            problems.append(f"{name}: {found}")
    assert not problems, f"{context}: differs from {against} (got vs expected):\n  " + "\n  ".join(problems)
