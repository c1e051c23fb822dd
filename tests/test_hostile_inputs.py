"""Hostile inputs never take the process down.

A seeded generator applies mutators (wrong dtypes, ranks and shapes, bad offsets, NaN,
huge or negative sizes, Python objects where tensors belong, mismatched weights) to a
valid base input of every op and ``Ragged`` constructor. Each case runs in one
long-lived child process (tests/isolated.py), so a segfault or abort fails that case and
a fresh worker takes the rest. A case passes when the call raises ValueError, TypeError,
RuntimeError, IndexError or BackendUnavailableError with a real message (not an internal
assert), or returns what the reference backend returns for the same input. A mutator
marked valid keeps the input legal: there, rejecting what the reference accepts fails too.
The registered ops (torch.ops.padkern.*, no public checks) also get garbage offsets: they
may return anything, but must neither crash nor hang.
"""
import random

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence

import padkern
from padkern import Ragged
from isolated import isolated
from op_specs import OPS, OpSpec, build, first_mismatches, offsets_list, outputs_of

SEED = 20240607
BACKENDS = ["cpu", "triton", "reference"]
BASE_LENGTHS = [2, 0, 3]  # B = 3, L = 5
ALLOWED = (ValueError, TypeError, RuntimeError, IndexError, padkern.BackendUnavailableError)
BANNED_IN_MESSAGE = ("padkern bug", "INTERNAL ASSERT")
NO_BACKEND = "-"  # constructors without a backend argument


# ----- ops beyond op_specs: keyword arguments exposed, and the Ragged constructors ----------
def _pad_inputs(lengths, generator):
    return dict(build("pad", lengths), total_length=None, padding_value=0.0, batch_first=True)


def _call_pad(a, backend):
    return padkern.ops.pad(a["values"], a["offsets"], a["total_length"], a["padding_value"], a["batch_first"],
                           backend=backend)


def _call_unpad(a, backend):
    return padkern.ops.unpad(a["padded"], a["offsets"], a["batch_first"], total_tokens=a["total_tokens"],
                             backend=backend)


def _from_padded_inputs(lengths, generator):
    x = build("unpad", lengths)["padded"]
    return {"x": x, "lengths": torch.tensor(lengths), "batch_first": True}


def _from_mask_inputs(lengths, generator):
    x = build("unpad", lengths)["padded"]
    return {"x": x, "mask": torch.arange(x.shape[1])[None, :] < torch.tensor(lengths)[:, None]}


def _from_list_inputs(lengths, generator):
    values = build("pad", lengths)["values"]
    return {"values": values, "sequences": list(values.split(lengths))}


def _jagged(values, offsets):
    """torch.nested's jagged tensor of the (hostile) inputs. torch.nested checks some of them
    with assertions of its own: those are torch's refusals, before padkern is called, so
    they are passed on as the ValueError they stand for."""
    try:
        return torch.nested.nested_tensor_from_jagged(values, offsets)
    except AssertionError as error:
        raise ValueError(f"torch.nested refused the inputs: {error}") from error


def _packed_inputs(lengths, generator):
    values = build("pad", [n + 1 for n in lengths])["values"]  # a PackedSequence holds no empty sequence
    return {"values": values, "offsets": torch.tensor(offsets_list([n + 1 for n in lengths]))}


HOSTILE_OPS = {
    **{name: OPS[name] for name in ("segment_sum", "segment_mean", "segment_max", "segment_softmax", "ragged_linear",
                                    "masked_linear", "masked_linear_lengths", "ragged_bmm", "ragged_outer_bmm", "ragged_attention", "ragged_conv1d",
                                    "lstm", "gru_reverse", "rnn_relu", "nn_lstm", "nn_gru", "nn_rnn")},
    "pad": OpSpec(_pad_inputs, _call_pad, ("values",)),
    "unpad": OpSpec(lambda lengths, g: dict(build("unpad", lengths), batch_first=True, total_tokens=None),
                    _call_unpad, ("padded",)),
    "Ragged.from_padded": OpSpec(_from_padded_inputs, lambda a, backend: Ragged.from_padded(
        a["x"], a["lengths"], a["batch_first"], backend=backend), ("x",), int_arg="lengths"),
    "Ragged.to_padded": OpSpec(_pad_inputs, lambda a, backend: Ragged(a["values"], a["offsets"]).to_padded(
        a["total_length"], a["padding_value"], backend=backend), ("values",)),
    "Ragged.from_mask": OpSpec(_from_mask_inputs, lambda a, _: Ragged.from_mask(a["x"], a["mask"]), ("x",),
                               int_arg="mask"),
    "Ragged.from_list": OpSpec(_from_list_inputs, lambda a, _: Ragged.from_list(a["sequences"]), ()),
    "Ragged.to_packed": OpSpec(_packed_inputs, lambda a, _: Ragged(a["values"], a["offsets"]).to_packed(),
                               ("values",)),
    "Ragged.from_packed": OpSpec(lambda lengths, g: dict(_packed_inputs(lengths, g), packed=None),
                                 lambda a, _: Ragged.from_packed(Ragged(a["values"], a["offsets"]).to_packed()
                                                                 if a["packed"] is None else a["packed"]), ("values",)),
    "Ragged.from_nested": OpSpec(lambda lengths, g: dict(_packed_inputs(lengths, g), nested=None),
                                 lambda a, _: Ragged.from_nested(
                                     _jagged(a["values"], a["offsets"]) if a["nested"] is None else a["nested"]),
                                 ("values",)),
}
TAKES_BACKEND = {op for op in HOSTILE_OPS if not op.startswith("Ragged.") or op in ("Ragged.from_padded",
                                                                                     "Ragged.to_padded")}


# ----- mutators: (name, role, valid, mutate(value, rng) -> new value) -------------------------
# role "int": the offsets / lengths / mask argument ("lengths": only where it is lengths);
# "tokens": the token-holding tensor;
# "other": one of the other float tensors (weights, bias, states); "kw:<name>": a keyword.
def _set(index, value):
    """Element `index` of the flattened tensor (a mask is 2-D) set to `value`."""
    def mutate(t, rng):
        t = t.clone(memory_format=torch.contiguous_format)
        t.view(-1)[index if index >= 0 else t.numel() + index] = value
        return t
    return mutate


def _strided(t, rng):
    junk = torch.full_like(t, 2 ** 40 if t.dtype == torch.int64 else -7)
    return torch.stack([t, junk], 1).flatten()[::2]


def _poke(value):
    def mutate(t, rng):
        t = t.clone()
        if t.numel():
            t.view(-1)[rng.randrange(t.numel())] = value
        return t
    return mutate


def _reshape_one_dim(t, rng):
    shape = list(t.shape) or [1]
    shape[rng.randrange(len(shape))] = 7
    return torch.zeros(shape, dtype=t.dtype)


def _noncontiguous(t, rng):
    if t.dim() < 2:
        return _strided_float(t)
    order = list(reversed(range(t.dim())))
    return t.permute(order).contiguous().permute(order)


def _strided_float(t):
    buffer = torch.full([2 * s for s in t.shape], float("nan"), dtype=t.dtype)
    return buffer[tuple(slice(None, None, 2) for _ in t.shape)].copy_(t)


MUTATORS = [
    # the offsets / lengths / mask argument
    ("float", "int", False, lambda t, r: t.float()),
    ("bool", "int", False, lambda t, r: t.bool()),
    ("complex", "int", False, lambda t, r: t.to(torch.complex64)),
    ("int16", "int", False, lambda t, r: t.to(torch.int16)),
    ("uint8", "int", False, lambda t, r: t.to(torch.uint8)),
    ("nan", "int", False, lambda t, r: _set(1, float("nan"))(t.double(), r)),
    ("negative", "int", False, lambda t, r: _set(1, -3)(t.long(), r)),
    ("decreasing", "int", False, lambda t, r: _set(-2, int(t.long()[-1]) + 2)(t.long(), r)),
    ("huge_last", "int", False, lambda t, r: _set(-1, 2 ** 62)(t.long(), r)),
    ("huge_middle", "int", False, lambda t, r: _set(1, 2 ** 40)(t.long(), r)),
    ("int32_max", "int", False, lambda t, r: _set(-1, 2 ** 31 - 1)(t.int(), r)),
    ("last_too_big", "int", False, lambda t, r: _set(-1, int(t.long()[-1]) + 7)(t.long(), r)),
    ("last_too_small", "int", False, lambda t, r: _set(-1, int(t.long()[-1]) - 1)(t.long(), r)),
    ("first_nonzero", "int", False, lambda t, r: _set(0, 7)(t.long(), r)),
    ("rank_2", "int", False, lambda t, r: t[None]),
    ("rank_0", "int", False, lambda t, r: t[-1]),
    ("no_entries", "int", False, lambda t, r: t[:0]),
    ("one_more_entry", "int", False, lambda t, r: torch.cat([t, t[-1:]])),
    ("strided", "int", True, _strided),
    ("expanded", "int", False, lambda t, r: t[:1].expand_as(t)),
    ("int32_strided", "int", True, lambda t, r: _strided(t.int(), r)),
    ("list", "int", False, lambda t, r: t.tolist()),
    ("none", "int", False, lambda t, r: None),
    ("python_int", "int", False, lambda t, r: 5),
    ("numpy", "int", False, lambda t, r: t.numpy()),
    # lengths [B] against a padded batch of T = 4 steps
    ("longer_than_padded", "lengths", False, lambda t, r: _set(0, 99)(t.long(), r)),
    ("one_past_padded", "lengths", False, lambda t, r: _set(-1, 5)(t.long(), r)),
    ("negative", "lengths", False, lambda t, r: _set(0, -1)(t.long(), r)),
    ("int64_min", "lengths", False, lambda t, r: _set(0, -2 ** 63)(t.long(), r)),
    # the tokens
    ("nan", "tokens", True, _poke(float("nan"))),
    ("inf", "tokens", True, _poke(float("-inf"))),
    ("int64", "tokens", False, lambda t, r: t.long()),
    ("bool", "tokens", False, lambda t, r: t.bool()),
    ("complex", "tokens", False, lambda t, r: t.to(torch.complex128)),
    ("float16", "tokens", False, lambda t, r: t.half()),
    ("float32", "tokens", False, lambda t, r: t.float()),
    ("rank_0", "tokens", False, lambda t, r: t.reshape(-1)[0] if t.numel() else torch.tensor(1.0)),
    ("drop_last_dim", "tokens", False, lambda t, r: t[..., 0]),
    ("add_dim", "tokens", False, lambda t, r: t[..., None]),
    ("no_rows", "tokens", False, lambda t, r: t[:0]),
    ("extra_rows", "tokens", False, lambda t, r: torch.cat([t, t.new_zeros((1,) + t.shape[1:])])),
    ("zero_features", "tokens", False, lambda t, r: t[..., :0]),
    ("noncontiguous", "tokens", True, _noncontiguous),
    ("expanded", "tokens", True, lambda t, r: t[:1].expand_as(t) if t.shape[0] else t),
    ("list", "tokens", False, lambda t, r: t.tolist()),
    ("none", "tokens", False, lambda t, r: None),
    ("python_float", "tokens", False, lambda t, r: 1.0),
    # one of the other float tensors
    ("wrong_size_7", "other", False, _reshape_one_dim),
    ("float32", "other", False, lambda t, r: t.float()),
    ("int64", "other", False, lambda t, r: t.long()),
    ("none", "other", False, lambda t, r: None),
    ("transposed", "other", False, lambda t, r: t.t() if t.dim() == 2 else t.flip(0)[None]),
    ("rank_0", "other", False, lambda t, r: t.reshape(-1)[0] if t.numel() else torch.tensor(1.0)),
    ("add_dim", "other", False, lambda t, r: t[None]),
    ("nan", "other", True, _poke(float("nan"))),
    ("noncontiguous", "other", True, _noncontiguous),
    ("list", "other", False, lambda t, r: t.tolist()),
    # keywords
    *[(f"total_length={v!r}", "kw:total_length", False, lambda t, r, v=v: v)
      for v in (-1, -7, 1, 0, 2 ** 40, 2 ** 63 - 1, 3.5, "7", torch.tensor(4))],
    *[(f"padding_value={v!r}", "kw:padding_value", False, lambda t, r, v=v: v)
      for v in (float("nan"), float("inf"), "x", None, 1j, 2 ** 70, torch.tensor([1.0, 2.0]))],
    *[(f"total_tokens={v!r}", "kw:total_tokens", False, lambda t, r, v=v: v) for v in (-1, 2 ** 40, 3, 6)],
    *[(f"batch_first={v!r}", "kw:batch_first", False, lambda t, r, v=v: v) for v in (False, None, "no")],
    *[(f"activation={v!r}", "kw:activation", False, lambda t, r, v=v: v) for v in ("tanh", "RELU", 5, "")],
    *[(f"sequences={name}", "kw:sequences", False, fn) for name, fn in (
        ("empty", lambda s, r: []), ("one_none", lambda s, r: s[:1] + [None]),
        ("mixed_features", lambda s, r: s + [torch.zeros(2, 7, dtype=s[0].dtype)]),
        ("mixed_dtypes", lambda s, r: s + [torch.zeros(2, s[0].shape[1], dtype=torch.float32)]),
        ("scalars", lambda s, r: [torch.tensor(1.0), torch.tensor(2.0)]), ("tensor", lambda s, r: torch.cat(s)),
        ("all_empty", lambda s, r: [x[:0] for x in s]))],
    *[(f"packed={name}", "kw:packed", False, fn) for name, fn in (
        ("tensor", lambda p, r: torch.zeros(3, 2)), ("tuple", lambda p, r: (torch.zeros(3, 2), torch.tensor([2, 1]))),
        ("bad_batch_sizes", lambda p, r: PackedSequence(torch.zeros(5, 2), torch.tensor([7, 1]), None, None)))],
    *[(f"nested={name}", "kw:nested", False, fn) for name, fn in (
        ("dense", lambda p, r: torch.zeros(3, 2)), ("strided_nested", lambda p, r: torch.nested.nested_tensor(
            [torch.zeros(2, 3), torch.zeros(1, 3)])))],
]
# A module's parameters are Parameters: only its states can be swapped for hostile objects.
OTHERS = {"nn_lstm": ("h0", "c0"), "nn_gru": ("h0",), "nn_rnn": ("h0",)}


def others(op):
    return OTHERS.get(op, HOSTILE_OPS[op].floats[1:])


def applies(op, inputs, role):
    spec = HOSTILE_OPS[op]
    if role == "int":
        return spec.int_arg in inputs
    if role == "lengths":
        return spec.int_arg == "lengths"
    if role == "tokens":
        return bool(spec.floats)
    if role == "other":
        return bool(others(op))
    return role.split(":", 1)[1] in inputs


def mutated_inputs(op, mutator_names, seed):
    """The base input of `op` with the named mutators applied, deterministically from `seed`."""
    rng = random.Random(seed)
    spec = HOSTILE_OPS[op]
    inputs = spec.build(BASE_LENGTHS, torch.Generator().manual_seed(seed))
    table = {(name, role): fn for name, role, _, fn in MUTATORS}
    for key in mutator_names:
        name, role = key.split("@")
        if role in ("int", "lengths"):
            target = spec.int_arg
        elif role == "tokens":
            target = spec.floats[0]
        elif role == "other":
            target = rng.choice(others(op))
        else:
            target = role.split(":", 1)[1]
        inputs[target] = table[(name, role)](inputs.get(target), rng)
    return inputs


def generate_cases(seed=SEED, ops_per_mutator=2, pairs_per_op=2):
    """Each illegal mutator on `ops_per_mutator` ops drawn from those it applies to (one
    backend each, drawn too); each legal mutator on every op, on a kernel backend drawn
    per case; plus `pairs_per_op` random pairs of mutators per op. All from `seed`."""
    rng = random.Random(seed)
    bases = {op: spec.build(BASE_LENGTHS, torch.Generator().manual_seed(0)) for op, spec in HOSTILE_OPS.items()}

    def backend_for(op, kernels_only=False):
        if op not in TAKES_BACKEND:
            return NO_BACKEND
        return rng.choice([b for b in BACKENDS if b != "reference"] if kernels_only else BACKENDS)

    cases = []
    for name, role, valid, _ in MUTATORS:
        key = f"{name}@{role}"
        targets = [op for op in HOSTILE_OPS if applies(op, bases[op], role)]
        if valid:
            for op in targets:
                legal = not (role == "int" and HOSTILE_OPS[op].int_arg == "mask")
                cases.append((op, (key,), backend_for(op, kernels_only=legal), rng.randrange(2 ** 31), legal))
        else:
            for op in rng.sample(targets, min(ops_per_mutator, len(targets))):
                cases.append((op, (key,), backend_for(op), rng.randrange(2 ** 31), False))
    for op in HOSTILE_OPS:
        # A pair mutates two different arguments (a second mutator of the same one would see a list or None).
        usable = [(f"{name}@{role}", "int" if role == "lengths" else role)
                  for name, role, _, _ in MUTATORS if applies(op, bases[op], role)]
        for _ in range(pairs_per_op if len({target for _, target in usable}) > 1 else 0):
            first = rng.choice(usable)
            second = rng.choice([m for m in usable if m[1] != first[1]])
            cases.append((op, tuple(sorted((first[0], second[0]))), backend_for(op), rng.randrange(2 ** 31), False))
    return cases


CASES = generate_cases()


def _attempt(op, mutators, seed, backend):
    try:
        inputs = mutated_inputs(op, mutators, seed)
    except Exception as error:  # noqa: BLE001 - a mutator that cannot apply is a generator bug
        raise AssertionError(f"case generator failed: {error!r}") from error
    try:
        return "ok", HOSTILE_OPS[op].call(inputs, None if backend == NO_BACKEND else backend)
    except Exception as error:  # noqa: BLE001 - judged by the caller
        return "raised", error


def _judge_exception(error):
    message = str(error)
    if not isinstance(error, ALLOWED):
        return f"raised {type(error).__name__} (not ValueError/TypeError/RuntimeError/IndexError): {message!r}"
    if not message.strip():
        return f"raised {type(error).__name__} with an empty message"
    if any(banned in message for banned in BANNED_IN_MESSAGE):
        return f"raised an internal error: {type(error).__name__}: {message[:300]!r}"
    return None


def _tolerance(t):
    if not t.is_floating_point() and not t.is_complex():
        return dict(rtol=0, atol=0)
    return {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-6)}.get(
        t.dtype, dict(rtol=1e-2, atol=1e-3))


@pytest.mark.parametrize("op, mutators, backend, seed, valid", CASES,
                         ids=[f"{i:03d}-{c[0]}-{'+'.join(c[1])}-{c[2]}" for i, c in enumerate(CASES)])
@isolated
def test_hostile_input(op, mutators, backend, seed, valid):
    import traceback

    if backend != NO_BACKEND:
        from padkern._backend import why_unavailable

        assert why_unavailable(backend, torch.device("cpu")) is None, why_unavailable(backend, torch.device("cpu"))
    status, result = _attempt(op, mutators, seed, backend)
    if status == "raised":
        problem = _judge_exception(result)
        assert problem is None, f"{problem}\n{''.join(traceback.format_exception(result))[-2500:]}"
    if backend in ("reference", NO_BACKEND):
        return
    ref_status, expected = _attempt(op, mutators, seed, "reference")
    if status == "raised":
        assert not (valid and ref_status == "ok"), f"rejected a legal input the reference accepts: {result!r}"
        return
    assert ref_status == "ok", f"returned a result where the reference raised {expected!r}"
    got, want = outputs_of(result), outputs_of(expected)
    assert len(got) == len(want), (len(got), len(want))
    problems = [f"output {i}: {found}" for i, (g, w) in enumerate(zip(got, want))
                if (found := first_mismatches(g, w, **_tolerance(w)))]
    assert not problems, "differs from the reference (got vs reference): " + "; ".join(problems)


# ----- the registered ops themselves: garbage offsets contents must not crash either ----------
# torch.ops.padkern.* are reachable without the public checks; their kernels may trust the
# offsets' contents for speed, but must still neither crash nor hang (CUDA clamps sequences
# into their tensors). Any result passes; an exception must be a clean one.
RAW_OFFSETS = {"negative": [0, -3, 2, 5], "decreasing": [0, 4, 2, 5], "huge": [0, 2 ** 40, 2 ** 40, 5],
               "past_the_end": [0, 2, 2, 12], "first_nonzero": [7, 2, 2, 5], "huge_negative": [0, -2 ** 40, 2, 5]}
H_RAW = 2


def _raw_call(op, suffix, offsets):
    g = torch.Generator().manual_seed(1)
    v, h0 = torch.randn(5, 3, generator=g), torch.randn(3, H_RAW, generator=g)
    o = torch.tensor(offsets)
    ops = torch.ops.padkern
    fn = lambda name: getattr(ops, name + suffix)  # noqa: E731
    if op == "pad":
        return fn("pad")(v, o, 3, 0.0, True)
    if op == "unpad":
        return fn("unpad")(torch.randn(3, 3, 3, generator=g), o, 5, True)
    if op == "segment_max":
        return fn("segment_reduce")(v, o, 2)
    if op == "segment_mean":
        return fn("segment_reduce")(v, o, 1)
    if op == "segment_softmax":
        return fn("segment_softmax")(v, o)
    if op == "grouped_linear":
        return fn("grouped_linear")(v, o, torch.randn(4, 3, generator=g), None, 1, False, 5)
    if op == "ragged_outer_bmm":
        return fn("ragged_outer_bmm")(v, torch.randn(5, 2, generator=g), o)
    if op.startswith("conv1d"):
        # left_pad 1 of k = 3: taps reach one token back and one forward.
        groups = 3 if op == "conv1d_depthwise" else 1
        weight = torch.randn(3, 3 // groups, 3, generator=g)
        if op == "conv1d_backward":
            return fn("ragged_conv1d_backward")(torch.randn(5, 3, generator=g), v, o, weight, 1, 1, groups,
                                                [True, True, True])
        return fn("ragged_conv1d")(v, o, weight, torch.randn(3, generator=g), 1, 1, groups)
    if op.startswith("attention"):
        q, k, val = (torch.randn(5, 2, 4, generator=g) for _ in range(3))
        if op == "attention":
            return fn("ragged_attention")(q, k, val, o, o, True, 0.5)
        out, lse = torch.randn(5, 2, 4, generator=g), torch.randn(5, 2, generator=g)
        return fn("ragged_attention_backward")(torch.randn(5, 2, 4, generator=g), q, k, val, out, lse, o, o, True, 0.5)
    if op.startswith("lstm_projected"):  # P = 1 < H = H_RAW
        w_hh, w_hr, h = torch.randn(4 * H_RAW, 1, generator=g), torch.randn(1, H_RAW, generator=g), h0[:, :1]
        gates_x = torch.randn(5, 4 * H_RAW, generator=g)
        if op == "lstm_projected_recurrence":
            return fn(op)(gates_x, o, w_hh, w_hr, h, h0, False, True)
        saved_gates, cell = torch.rand(5, 4 * H_RAW, generator=g), torch.randn(5, H_RAW, generator=g)
        return fn(op)(torch.randn(5, 1, generator=g), h, h0, saved_gates, cell, o, w_hh, w_hr, h0, False)
    gates = {"lstm_recurrence": 4, "gru_recurrence": 3, "rnn_recurrence": 1}[op] * H_RAW
    gates_x, w_hh = torch.randn(5, gates, generator=g), torch.randn(gates, H_RAW, generator=g)
    if op == "rnn_recurrence":
        return fn("rnn_recurrence")(gates_x, o, w_hh, h0, 1, False)
    if op == "lstm_recurrence":
        return fn("lstm_recurrence")(gates_x, o, w_hh, h0, h0.clone(), False, True)
    return fn("gru_recurrence")(gates_x, o, w_hh, torch.zeros(gates), h0, False, True)


RAW_OPS = ["pad", "unpad", "segment_max", "segment_mean", "segment_softmax", "grouped_linear", "ragged_outer_bmm",
           "lstm_recurrence", "gru_recurrence", "rnn_recurrence", "conv1d", "conv1d_depthwise", "conv1d_backward",
           "attention", "attention_backward"]
CPU_ONLY_RAW_OPS = ["lstm_projected_recurrence", "lstm_projected_recurrence_backward"]  # no Triton twins
RAW_CASES = ([(op, name, suffix) for op in RAW_OPS for name in RAW_OFFSETS for suffix in ("", "_triton")]
             + [(op, name, "") for op in CPU_ONLY_RAW_OPS for name in RAW_OFFSETS])


@pytest.mark.parametrize("op, offsets, suffix", RAW_CASES,
                         ids=[f"{op}{suffix or '_cpu'}-{name}" for op, name, suffix in RAW_CASES])
@isolated(timeout=30)
def test_registered_op_survives_garbage_offsets(op, offsets, suffix):
    try:
        _raw_call(op, suffix, RAW_OFFSETS[offsets])
    except Exception as error:  # noqa: BLE001 - judged here
        problem = _judge_exception(error)
        assert problem is None, problem

