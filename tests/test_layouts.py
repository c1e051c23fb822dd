"""Every tensor a kernel reads by pointer is laid out as the kernel assumes.

For every public op and backend, offsets (int64/int32, strided, expanded) and float
inputs and upstream gradients (transposed, strided, at a storage offset, expanded,
zero-element with odd strides) give the same forward results and gradients as
contiguous copies of the same numbers on the same backend. A kernel that reads a
view as if it were contiguous reads the wrong numbers, or memory it does not own, so
every body runs in a child process (tests/isolated.py): a crash is one failing test.
"""
import pytest
import torch

import padkern
from isolated import isolated
from op_specs import OPS, build, first_mismatches, forward_and_grads, names_of

LENGTHS = [3, 0, 2, 4]  # with an empty sequence; L = 9
NO_TOKENS = [0, 0, 0]  # B = 3, L = 0: the only lengths expanded offsets can describe

OFFSETS_LAYOUTS = ["int64", "int64_strided", "expanded", "int32", "int32_strided"]
TENSOR_LAYOUTS = ["transposed", "strided", "storage_offset", "expanded", "zero_tokens_expanded",
                  "zero_tokens_odd_strides"]


def int_layout(kind, ints):
    """`ints` in the layout `kind`. Strided: every other element of a buffer whose other
    half holds offsets past the end (the pattern torch.tensor([0, 9, 3, 9, 5])[::2])."""
    dtype = torch.int32 if kind.startswith("int32") else torch.int64
    if kind == "expanded":
        assert not any(ints), "expanded offsets describe sequences of no tokens only"
        return torch.zeros(1, dtype=dtype).expand(len(ints))
    if kind.endswith("strided"):
        junk = max(ints, default=0) + 9
        return torch.tensor([v for i in ints for v in (i, junk)], dtype=dtype)[::2]
    return torch.tensor(ints, dtype=dtype)


def relayout(kind, t):
    """The same numbers as `t` (for "expanded": row 0 repeated) in another memory layout."""
    if kind == "transposed":  # column-major
        order = list(reversed(range(t.dim())))
        return t.permute(order).contiguous().permute(order)
    if kind == "strided":  # every other element of a NaN buffer in every dimension
        buffer = t.new_full([2 * s for s in t.shape], float("nan"))
        view = buffer[tuple(slice(None, None, 2) for _ in t.shape)]
        return view.copy_(t)
    if kind == "storage_offset":
        buffer = t.new_full((t.numel() + 3,), float("nan"))
        return buffer[3:].view(t.shape).copy_(t)
    if kind == "expanded":
        return t if t.dim() == 0 or t.shape[0] == 0 else t[:1].expand_as(t)
    raise AssertionError(kind)


def zero_element(kind, t):
    """A tensor with t's (zero-element) shape and odd strides."""
    if kind == "zero_tokens_expanded":
        return torch.ones((), dtype=t.dtype).expand(t.shape)  # every stride 0
    return t.new_empty(0).as_strided(t.shape, [7 + 2 * i for i in range(t.dim())])


def to_device(inputs, device):
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


def upstream_in(kind):
    """Seeded integer-valued upstream gradients, in layout `kind` (None: contiguous)."""
    def upstream(i, out):
        g = torch.randint(-3, 4, out.shape, generator=torch.Generator().manual_seed(100 + i)).to(out)
        relayable = kind is not None and out.numel() > 0 and out.is_floating_point()
        return relayout(kind, g) if relayable else g
    return upstream


def mismatches(op, variant, baseline, backend, upstream):
    """Names (and messages) of results of `variant` that differ from those of `baseline`."""
    got, _ = forward_and_grads(op, variant, backend, upstream)
    want, _ = forward_and_grads(op, baseline, backend, lambda i, out: upstream(i, out).contiguous())
    rtol, atol = (0, 0) if OPS[op].exact else (1e-12, 1e-12)
    found = []
    for name, g, w in zip(names_of(op, len(got) - len(OPS[op].floats)), got, want):
        problem = first_mismatches(g, w, rtol, atol)
        if problem:
            found.append(f"{name}: {problem}")
    return found


def contiguous_copy(inputs):
    return {k: v.contiguous().clone() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


@pytest.mark.parametrize("offsets_layout", OFFSETS_LAYOUTS)
@pytest.mark.parametrize("op", list(OPS))
@isolated
def test_offsets_layout(device_backend, op, offsets_layout):
    device, backend = device_backend
    spec = OPS[op]
    inputs = to_device(build(op, NO_TOKENS if offsets_layout == "expanded" else LENGTHS), device)
    ints = inputs[spec.int_arg].tolist()
    variant = dict(inputs, **{spec.int_arg: int_layout(offsets_layout, ints).to(device)})
    baseline = dict(inputs, **{spec.int_arg: torch.tensor(ints, dtype=torch.int64, device=device)})
    found = mismatches(op, variant, baseline, backend, upstream_in(None))
    assert not found, f"{spec.int_arg} {offsets_layout} {tuple(variant[spec.int_arg].stride())}: " + "; ".join(found)


@pytest.mark.parametrize("layout", TENSOR_LAYOUTS)
@pytest.mark.parametrize("op", list(OPS))
@isolated
def test_tensor_layout(device_backend, op, layout):
    """All float inputs (and upstream gradients) in `layout` at once; on a mismatch each
    input is tried alone, so the message names the argument whose layout is mishandled."""
    device, backend = device_backend
    spec = OPS[op]
    zero = layout.startswith("zero_tokens")
    inputs = to_device(build(op, NO_TOKENS if zero else LENGTHS), device)
    if zero:
        for name in spec.floats:
            t = inputs[name]
            if t.dim() == 3 and name in ("x", "padded"):  # a padded batch: no time steps at all
                t = t.new_empty((t.shape[0], 0, t.shape[2]))
            if t.numel() == 0:
                inputs[name] = zero_element(layout, t)
        variants, upstream = {name: inputs[name] for name in spec.floats}, upstream_in(None)
    else:
        variants, upstream = {name: relayout(layout, inputs[name]) for name in spec.floats}, upstream_in(layout)
    variant = dict(inputs, **variants)
    found = mismatches(op, variant, contiguous_copy(variant), backend, upstream)
    if found and not zero:
        dense = contiguous_copy(variant)
        culprits = [name for name in spec.floats
                    if mismatches(op, dict(dense, **{name: variants[name]}), dense, backend, upstream_in(None))]
        found.insert(0, f"mishandled alone: {culprits or 'none (only the upstream gradient layout, or combined)'}")
    assert not found, f"{layout}: " + "; ".join(found)


# ----- the exact reports ------------------------------------------------------------------
@isolated
def test_repro_strided_offsets_segment_sum(device_backend):
    device, backend = device_backend
    o = torch.tensor([0, 9, 3, 9, 5], device=device)[::2]
    out = padkern.ops.segment_sum(torch.ones(5, 4, device=device), o, backend=backend)
    torch.testing.assert_close(out, torch.tensor([[3.0] * 4, [2.0] * 4], device=device), rtol=0, atol=0)


@isolated
def test_repro_strided_offsets_lstm(device_backend):
    device, backend = device_backend
    generator = torch.Generator().manual_seed(0)
    o = torch.tensor([0, 9, 3, 9, 5], device=device)[::2]
    args = [torch.randn(shape, generator=generator).to(device) for shape in ((5, 4), (12, 4), (12, 3))]
    got = padkern.ops.lstm(args[0], o, *args[1:], backend=backend)
    want = padkern.ops.lstm(args[0], o.contiguous(), *args[1:], backend="reference")
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


@isolated
def test_repro_expanded_offsets_no_tokens(device_backend):
    device, backend = device_backend
    offsets = torch.zeros(1, dtype=torch.long, device=device).expand(4)
    out = padkern.ops.segment_sum(torch.zeros(0, 4, device=device), offsets, backend=backend)
    torch.testing.assert_close(out, torch.zeros(3, 4, device=device), rtol=0, atol=0)


@isolated
def test_repro_unpad_expanded_no_steps(device_backend):
    device, backend = device_backend
    out = padkern.ops.unpad(torch.ones((), device=device).expand(2, 0, 4), torch.tensor([0, 0, 0], device=device),
                            backend=backend)
    assert out.shape == (0, 4), out.shape
