"""ragged_conv1d: the reference against torch's own F.conv1d on each sequence alone, every
backend against the reference (forward and every gradient), and the op's contract:
sequences never read each other, empty sequences, kernels longer than a sequence,
dilation, groups from 1 through depthwise, autograd to second order, compile, opcheck,
autocast and bad input.

Tolerances are error bounds from the data: a result summing n products is compared with
its float64 truth within n * eps * (the same sum over absolute values), computed by the
reference itself on |inputs|.
"""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import padkern
from padkern.ops.conv import left_padding
from cpp_checks import needs_gxx, run_cpp_check
from ragged_cases import EDGE_LENGTHS, offsets_of, random_ragged, split


# (C_in, C_out, kernel_size, groups, dilation, padding): depthwise (the fast path), dense,
# groups in between, a depthwise multiplier (groups = C_in < C_out), even kernels, a
# kernel wider than most sequences.
CONFIGS = {
    "depthwise_same": (6, 6, 4, 6, 1, "same"),
    "depthwise_causal_dilated": (5, 5, 3, 5, 2, "causal"),
    "dense_same": (4, 6, 3, 1, 1, "same"),
    "dense_causal_even": (3, 5, 2, 1, 3, "causal"),
    "groups_between": (6, 4, 5, 2, 2, "same"),
    "depthwise_multiplier": (3, 6, 3, 3, 1, "causal"),
    "wide_kernel": (2, 3, 9, 1, 1, "same"),
    "int_padding": (4, 4, 5, 2, 1, 2),
    "groups_window": (32, 32, 3, 2, 1, "same"),  # 16 channels a group, taps a row apart: the CPU's window tiles
}
CASES = ["mixed_unsorted", "all_empty", "no_tokens_single", "all_length_one", "one_long", "first_empty"]


pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")


def make(lengths, config, dtype=torch.float64, device="cpu", seed=0, bias=True):
    c_in, c_out, k, groups, dilation, padding = config
    values, offsets = random_ragged(lengths, (c_in,), dtype=dtype, device=device, seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    weight = torch.randn(c_out, c_in // groups, k, generator=generator, dtype=torch.float64).to(dtype).to(device)
    b = torch.randn(c_out, generator=generator, dtype=torch.float64).to(dtype).to(device) if bias else None
    return values, offsets, weight, b, dict(padding=padding, dilation=dilation, groups=groups)


def per_sequence_torch(values, offsets, weight, bias, padding, dilation, groups):
    """torch's own conv on each sequence alone: "same" and int paddings through F.conv1d's
    own padding argument, "causal" as F.pad on the left then no padding."""
    pieces = []
    for piece in split(values, offsets):
        if piece.shape[0] == 0:
            continue
        x = piece.t()[None]
        if padding == "causal":
            x = F.pad(x, (dilation * (weight.shape[2] - 1), 0))
            pieces.append(F.conv1d(x, weight, bias, dilation=dilation, groups=groups)[0].t())
        else:
            pieces.append(F.conv1d(x, weight, bias, padding=padding, dilation=dilation, groups=groups)[0].t())
    return torch.cat(pieces) if pieces else values.new_zeros((0, weight.shape[0]))


def run(values, offsets, weight, bias, options, backend, grad_output=None):
    """[output, grad values, grad weight, grad bias] (grads for the given upstream gradient)."""
    leaves = [t.detach().requires_grad_() for t in (values, weight) + ((bias,) if bias is not None else ())]
    out = padkern.ops.ragged_conv1d(leaves[0], offsets, leaves[1], leaves[2] if bias is not None else None,
                                    backend=backend, **options)
    if grad_output is None:
        grad_output = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
        grad_output = grad_output.to(out.dtype).to(out.device)
    grads = torch.autograd.grad(out, leaves, grad_output, allow_unused=True)
    grads = [torch.zeros_like(leaf) if g is None else g for leaf, g in zip(leaves, grads)]
    return [out.detach()] + grads, grad_output


def error_bounds(values, offsets, weight, bias, options, grad_output, eps):
    """n * eps * sum|terms| for the output and each gradient, from the reference on |inputs|."""
    results, _ = run(values.abs().double(), offsets, weight.abs().double(),
                     None if bias is None else bias.abs().double(), options, "reference",
                     grad_output.abs().double())
    c_out, per_group, k = weight.shape
    terms = [per_group * k + 1, (c_out // options["groups"]) * k, values.shape[0] + 1, values.shape[0] + 1]
    # Inputs rounded to the compared dtype contribute eps each too.
    return [(n + 2) * eps * r + torch.finfo(torch.float64).tiny for n, r in zip(terms, results)]


def assert_within(got, want, bounds, context):
    for name, g, w, bound in zip(["output", "grad values", "grad weight", "grad bias"], got, want, bounds):
        error = (g.double().cpu() - w.double().cpu()).abs()
        bad = error > bound.cpu()
        assert not bad.any(), (f"{context}: {name} off by {error.max().item():.3g} where the bound is "
                               f"{bound.cpu()[bad].min().item():.3g} ({int(bad.sum())}/{bad.numel()} entries)")


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("case", ["mixed_unsorted", "all_length_one", "one_long", "not_tile_multiples"])
def test_reference_is_per_sequence_conv1d(config, case):
    values, offsets, weight, bias, options = make(EDGE_LENGTHS[case], CONFIGS[config])
    got = padkern.ops.ragged_conv1d(values, offsets, weight, bias, backend="reference", **options)
    want = per_sequence_torch(values, offsets, weight, bias, **options)
    # The padded copy and the padding argument take different conv algorithms: equal
    # within rounding, not bitwise.
    bound = error_bounds(values, offsets, weight, bias, options, torch.zeros_like(got), torch.finfo(got.dtype).eps)
    assert_within([got], [want], bound[:1], f"{config} {case}")


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("case", CASES)
def test_backend_matches_reference(kernel_backend, config, case):
    device, backend = kernel_backend
    values, offsets, weight, bias, options = make(EDGE_LENGTHS[case], CONFIGS[config], device=device)
    got, grad_output = run(values, offsets, weight, bias, options, backend)
    want, _ = run(values, offsets, weight, bias, options, "reference", grad_output)
    bounds = error_bounds(values, offsets, weight, bias, options, grad_output, torch.finfo(torch.float64).eps)
    assert_within(got, want, bounds, f"{config} {case} on {backend}")


# The CPU's grouped routes at their edges: register blocks of several lanes and channel
# tiles with a partial last one, more tokens than one weight-gradient chunk (256 rows) and
# stage (64); the window path with 6 input channels a group (not a whole number of its
# channel passes) and 32 output channels (two AVX-512 registers of float32); and a weight past
# the direct kernels' budget (C_in/G x C_out/G x k > 2^18), which takes the GEMM route.
@pytest.mark.parametrize("config,lengths", [((38, 42, 3, 2, 1, "same"), [300, 0, 77, 200]),
                                            ((12, 64, 3, 2, 1, "same"), [300, 0, 77, 200]),
                                            ((330, 330, 3, 1, 2, "causal"), [40, 0, 9])],
                         ids=["direct_long", "window_partial_channels", "gemm_route"])
def test_grouped_routes(kernel_backend, config, lengths):
    device, backend = kernel_backend
    values, offsets, weight, bias, options = make(lengths, config, device=device)
    got, grad_output = run(values, offsets, weight, bias, options, backend)
    want, _ = run(values, offsets, weight, bias, options, "reference", grad_output)
    bounds = error_bounds(values, offsets, weight, bias, options, grad_output, torch.finfo(torch.float64).eps)
    assert_within(got, want, bounds, f"{config} on {backend}")


# The CPU's interior tiles: taps one row apart (k = 2..5) read a window of rows, each row
# broadcast once, in tiles of 16 tokens (AVX-512) or 8, forward and input gradient (mirrored
# taps); the weight gradient walks the rows of each run of interior tokens. Tokens near a
# sequence's edges, and k = 6, go the general way. Lengths 20..35 end a tile at every distance
# from a sequence's end (a tile one row too long for its window reads the next sequence); 16
# channels per group fill one AVX-512 register of float32. bfloat16 converts each element it
# broadcasts. On the CPU, three threads split the forward's tokens elsewhere (a task may start
# inside a sequence) and must give the same bits.
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("padding", ["same", "causal"])
@pytest.mark.parametrize("kernel_size", [2, 3, 4, 5, 6])
def test_window_tiles_within_bound(kernel_backend, kernel_size, padding, dtype):
    device, backend = kernel_backend
    if backend == "triton" and dtype == torch.bfloat16 and device == "cpu":
        pytest.skip("the Triton interpreter computes bfloat16 tl.dot wrongly (see README)")
    config = (32, 32, kernel_size, 2, 1, padding)
    lengths = [100, 0, 17, 24, 9, 1, 40, 5, 6, 7] + list(range(20, 36))
    values, offsets, weight, bias, options = make(lengths, config, device=device)
    low = [t.to(dtype) for t in (values, weight, bias)]
    got, grad_output = run(low[0], offsets, *low[1:], options, backend)
    # The float64 truth of the rounded inputs; float32 sums, then the result rounded to dtype.
    rounded = [t.double() for t in low]
    want, _ = run(rounded[0], offsets, *rounded[1:], options, "reference", grad_output.double())
    bounds = error_bounds(rounded[0], offsets, *rounded[1:], options, grad_output, torch.finfo(torch.float32).eps)
    if dtype != torch.float32:
        magnitude, _ = run(*(t.abs() for t in rounded[:1]), offsets, *(t.abs() for t in rounded[1:]), options,
                           "reference", grad_output.abs().double())
        bounds = [b + torch.finfo(dtype).eps * m for b, m in zip(bounds, magnitude)]
    assert_within(got, want, bounds, f"k={kernel_size} {padding} {dtype} on {backend}")
    if backend == "cpu":
        threads = torch.get_num_threads()
        torch.set_num_threads(3)
        try:
            three_threads, _ = run(low[0], offsets, *low[1:], options, backend, grad_output)
        finally:
            torch.set_num_threads(threads)
        for a, b in zip(got, three_threads):
            assert torch.equal(a, b)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter's inf sums
def test_infinite_row_reaches_only_its_taps(kernel_backend):
    """An infinite input element enters only the weight-gradient entries of the taps that read
    it: a sequence's first and last rows are read by few taps, and the others stay finite (the
    CPU's window path walks those rows beside stand-in zero gradients, where inf x 0 is NaN)."""
    device, backend = kernel_backend
    lengths = [40, 0, 70, 30, 3, 4]  # 3 and 4: runs of interior tokens shorter than the window
    values, offsets, weight, bias, options = make(lengths, CONFIGS["groups_window"], device=device)
    for start, end in zip(offsets[:-1].tolist(), offsets[1:].tolist()):
        if end > start:  # each sequence's first and last rows, a channel of group 0 each
            values[start, 3] = values[end - 1, 5] = float("inf")
    got, grad_output = run(values, offsets, weight, bias, options, backend)
    want, _ = run(values, offsets, weight, bias, options, "reference", grad_output)
    assert want[2].isfinite().any() and not want[2].isfinite().all()
    # inf where one sign of infinity enters, NaN where both do: the same whatever the order.
    torch.testing.assert_close(got[2], want[2], equal_nan=True)


@pytest.mark.parametrize("config", ["depthwise_same", "groups_between", "dense_causal_even"])
def test_float32_within_bound(kernel_backend, config):
    device, backend = kernel_backend
    values, offsets, weight, bias, options = make([40, 0, 7, 1, 19], CONFIGS[config], device=device)
    got, grad_output = run(values.float(), offsets, weight.float(), bias.float(), options, backend)
    want, _ = run(values, offsets, weight, bias, options, "reference", grad_output.double())
    bounds = error_bounds(values, offsets, weight, bias, options, grad_output, torch.finfo(torch.float32).eps)
    assert_within(got, want, bounds, f"float32 {config} on {backend}")


@pytest.mark.parametrize("config", ["depthwise_causal_dilated", "groups_between"])
def test_no_bias_no_values_grad(device_backend, config):
    device, backend = device_backend
    values, offsets, weight, _, options = make([5, 0, 3], CONFIGS[config], device=device, bias=False)
    weight.requires_grad_()
    out = padkern.ops.ragged_conv1d(values, offsets, weight, backend=backend, **options)
    (grad_weight,) = torch.autograd.grad(out.square().sum(), weight)
    want = per_sequence_torch(values, offsets, weight, None, **options)
    torch.testing.assert_close(out, want.detach())
    torch.testing.assert_close(grad_weight, torch.autograd.grad(want.square().sum(), weight)[0])


def test_sequences_never_read_each_other(device_backend):
    """A NaN sequence next to others leaves them finite, forward and backward."""
    device, backend = device_backend
    for config in ("depthwise_same", "dense_same", "groups_between"):
        values, offsets, weight, bias, options = make([4, 3, 5], CONFIGS[config], device=device)
        values[4:7] = float("nan")
        values.requires_grad_()
        out = padkern.ops.ragged_conv1d(values, offsets, weight, bias, backend=backend, **options)
        (grad,) = torch.autograd.grad(out[list(range(4)) + list(range(7, 12))].sum(), values)
        assert out[4:7].isnan().all() and out[:4].isfinite().all() and out[7:].isfinite().all(), config
        assert grad.isfinite().all() and (grad[4:7] == 0).all(), config


@pytest.mark.parametrize("config", ["depthwise_causal_dilated", "groups_between", "dense_causal_even"])
def test_gradcheck(device_backend, config):
    device, backend = device_backend
    values, offsets, weight, bias, options = make([3, 0, 4, 1], CONFIGS[config], device=device)
    inputs = tuple(t.requires_grad_() for t in (values, weight, bias))
    call = lambda v, w, b: padkern.ops.ragged_conv1d(v, offsets, w, b, backend=backend, **options)  # noqa: E731
    # The interpreted Triton kernels take ~50 ms a call: fast mode checks random projections
    # of the Jacobian (a few calls) instead of every column.
    fast = backend == "triton" and device == "cpu"
    torch.autograd.gradcheck(call, inputs, fast_mode=fast)
    if backend != "reference":  # the reference's second order is torch's own F.conv1d's
        torch.autograd.gradgradcheck(call, inputs, fast_mode=fast)


@settings(max_examples=20, deadline=None)
@given(lengths=st.lists(st.integers(0, 12), min_size=1, max_size=5), groups=st.integers(1, 3),
       per_in=st.integers(1, 3), per_out=st.integers(1, 3), kernel_size=st.integers(1, 6), dilation=st.integers(1, 3),
       causal=st.booleans(), depthwise=st.booleans())
def test_fuzz(lengths, groups, per_in, per_out, kernel_size, dilation, causal, depthwise):
    from conftest import DEVICE_BACKENDS

    if depthwise:
        per_in, per_out = 1, 1
    config = (groups * per_in, groups * per_out, kernel_size, groups, dilation, "causal" if causal else "same")
    for device, backend in DEVICE_BACKENDS:
        values, offsets, weight, bias, options = make(lengths, config, device=device)
        got, grad_output = run(values, offsets, weight, bias, options, backend)
        want = per_sequence_torch(values.cpu(), offsets.cpu(), weight.cpu(), bias.cpu(), **options)
        bounds = error_bounds(values, offsets, weight, bias, options, grad_output, torch.finfo(torch.float64).eps)
        assert_within(got[:1], [want], bounds[:1], f"{config} {lengths} on {backend}")
        reference, _ = run(values, offsets, weight, bias, options, "reference", grad_output)
        assert_within(got, reference, bounds, f"{config} {lengths} on {backend}")


@pytest.mark.parametrize("padding,kernel_size,dilation,left", [
    ("same", 3, 1, 1), ("same", 4, 1, 1), ("same", 4, 3, 4), ("causal", 4, 2, 6), (3, 4, 2, 3), ("same", 1, 5, 0)])
def test_left_padding(padding, kernel_size, dilation, left):
    assert left_padding(padding, kernel_size, dilation) == left


def test_compile_fullgraph():
    values, offsets, weight, bias, options = make([5, 0, 3, 7], CONFIGS["groups_between"])
    call = lambda v, o, w, b: padkern.ops.ragged_conv1d(v, o, w, b, **options)  # noqa: E731
    compiled = torch.compile(call, fullgraph=True, backend="aot_eager")
    inputs = [t.detach().requires_grad_() for t in (values, weight, bias)]
    out = compiled(inputs[0], offsets, inputs[1], inputs[2])
    out.sum().backward()
    want = per_sequence_torch(values, offsets, weight, bias, **options)
    torch.testing.assert_close(out, want)


@pytest.mark.parametrize("config", ["depthwise_same", "groups_between"])
def test_opcheck(config):
    from padkern.ops import conv

    values, offsets, weight, bias, options = make([3, 0, 5], CONFIGS[config])
    left = left_padding(options["padding"], weight.shape[2], options["dilation"])
    ops = [op for op in (conv._NATIVE, conv._TRITON) if op is not None]
    for forward_op, backward_op in ops:
        for grad in (False, True):
            args = (values.clone().requires_grad_(grad), offsets, weight.clone().requires_grad_(grad), bias.clone(),
                    left, options["dilation"], options["groups"])
            torch.library.opcheck(forward_op, args)
        grad_output = torch.randn(values.shape[0], weight.shape[0], dtype=torch.float64)
        torch.library.opcheck(backward_op, (grad_output, values, offsets, weight, left, options["dilation"],
                                            options["groups"], [True, True, True]))


def test_autocast_follows_conv1d():
    """Under CPU autocast F.conv1d runs in bfloat16; so does ragged_conv1d, within twice torch's own error."""
    values, offsets, weight, bias, options = make([30, 0, 17], CONFIGS["groups_between"], dtype=torch.float32)
    truth = per_sequence_torch(values.double(), offsets, weight.double(), bias.double(), **options)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = padkern.ops.ragged_conv1d(values, offsets, weight, bias, **options)
        torch_own = per_sequence_torch(values, offsets, weight, bias, **options)
    assert got.dtype == torch_own.dtype == torch.bfloat16
    torch_error = (torch_own.double() - truth).abs().max()
    assert (got.double() - truth).abs().max() <= 2 * torch_error + 1e-3 * truth.abs().max()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision(kernel_backend, dtype):
    device, backend = kernel_backend
    if backend == "triton" and dtype == torch.bfloat16 and device == "cpu":
        pytest.skip("the Triton interpreter computes bfloat16 tl.dot wrongly (see README)")
    for config in ("depthwise_same", "dense_same", "groups_between"):
        values, offsets, weight, bias, options = make([20, 0, 9], CONFIGS[config], device=device)
        low = [t.to(dtype) for t in (values, weight, bias)]
        got, grad_output = run(*low[:1], offsets, *low[1:], options, backend)
        # The float64 truth of the rounded inputs, and of their magnitudes (sum |terms|).
        rounded, _ = run(*(t.double() for t in low[:1]), offsets, *(t.double() for t in low[1:]), options,
                         "reference", grad_output.double())
        magnitude, _ = run(*(t.abs().double() for t in low[:1]), offsets, *(t.abs().double() for t in low[1:]),
                           options, "reference", grad_output.abs().double())
        # float32 accumulation: the error is the result's rounding plus float32's, within
        # eps * sum|terms| of the rounded inputs, forward and every gradient.
        eps = torch.finfo(dtype).eps
        for name, g, want, size in zip(("out", "grad values", "grad weight", "grad bias"), got, rounded, magnitude):
            assert g.dtype == dtype, name
            assert ((g.double() - want).abs() <= eps * size + 1e-30).all(), f"{config} {name}"


@pytest.mark.parametrize("config", ["depthwise_same", "groups_between", "groups_window"])
def test_deterministic(device_backend, config):
    """Bitwise equal over repeated runs and, on the CPU, whatever the thread count: the
    weight gradients sum fixed token chunks (more than one here) in a fixed order."""
    device, backend = device_backend
    values, offsets, weight, bias, options = make([300, 3, 0, 200], CONFIGS[config], device=device)
    first, grad_output = run(values, offsets, weight, bias, options, backend)
    second, _ = run(values, offsets, weight, bias, options, backend, grad_output)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one_thread, _ = run(values, offsets, weight, bias, options, backend, grad_output)
    finally:
        torch.set_num_threads(threads)
    for a, b, c in zip(first, second, one_thread):
        assert torch.equal(a, b) and torch.equal(a, c)


@pytest.mark.parametrize("call,error,match", [
    (lambda v, o, w: padkern.ops.ragged_conv1d(v[:, :, None], o, w), ValueError, r"values must be \[L, C_in\]"),
    (lambda v, o, w: padkern.ops.ragged_conv1d(v, o, w[0]), ValueError, r"weight must be \[C_out, C_in / groups"),
    (lambda v, o, w: padkern.ops.ragged_conv1d(v, o, w, groups=4), ValueError, "groups=4 must divide"),
    (lambda v, o, w: padkern.ops.ragged_conv1d(v, o, w, groups=0), ValueError, "groups must be a positive int"),
    (lambda v, o, w: padkern.ops.ragged_conv1d(v, o, w, dilation=0), ValueError, "dilation must be a positive int"),
    (lambda v, o, w: padkern.ops.ragged_conv1d(v, o, w, padding="valid"), ValueError, "padding must be 'same'"),
    (lambda v, o, w: padkern.ops.ragged_conv1d(v, o, w, padding=7), ValueError, r"padding=7 changes each sequence"),
    (lambda v, o, w: padkern.ops.ragged_conv1d(v, o, w, padding=1.0), TypeError, "padding must be"),
    (lambda v, o, w: padkern.ops.ragged_conv1d(v, o, w, torch.zeros(7, dtype=torch.float64)), ValueError,
     r"bias must have shape \(6,\)"),
    (lambda v, o, w: padkern.ops.ragged_conv1d(v, o, w.float()), TypeError, "weight must have values's dtype"),
    (lambda v, o, w: padkern.ops.ragged_conv1d(v, o[:-1], w), ValueError, r"offsets\[-1\] must equal"),
    (lambda v, o, w: padkern.ops.ragged_conv1d(v.long(), o, w), TypeError, "values must be floating point"),
    (lambda v, o, w: padkern.ops.ragged_conv1d(v, o, w[:, :3]), ValueError, r"weight must be \[C_out, C_in / groups = 4"),
])
def test_bad_input(call, error, match):
    values, offsets, weight, _, _ = make([3, 4], (4, 6, 3, 1, 1, "same"))
    with pytest.raises(error, match=match):
        call(values, offsets, weight)


def test_native_op_checks_layout():
    values, offsets, weight, bias, _ = make([3, 4], CONFIGS["dense_same"])
    with pytest.raises(RuntimeError, match="left_pad must be in"):
        torch.ops.padkern.ragged_conv1d(values, offsets, weight, bias, 3, 1, 1)
    with pytest.raises(RuntimeError, match="offsets must be int64"):
        torch.ops.padkern.ragged_conv1d(values, offsets.int(), weight, bias, 1, 1, 1)
    with pytest.raises(RuntimeError, match="offsets\\[-1\\] must equal"):
        torch.ops.padkern.ragged_conv1d(values, offsets_of([3, 3]), weight, bias, 1, 1, 1)


@needs_gxx
def test_index_maths(tmp_path):
    """csrc/include/padkern/conv1d_layout.h, which the CUDA kernels run, on the CPU."""
    run_cpp_check("conv1d_layout_test", tmp_path)
