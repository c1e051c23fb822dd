"""masked_linear, ragged_linear, ragged_bmm and ragged_outer_bmm on every backend,
against the reference path and the per-sequence slice-and-concatenate computation."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import padkern
from padkern import Ragged
from error_bounds import activation_bound, assert_within, sum_bound
from ragged_cases import EDGE_LENGTHS, nan_filled_allocations, offsets_of, random_ragged, split

ACTIVATIONS = [None, "relu", "gelu", "silu"]
ACT_FN = {None: lambda z: z, "relu": F.relu, "gelu": F.gelu, "silu": F.silu}


def weights(n, k, dtype=torch.float64, device="cpu", seed=3):
    generator = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=generator, dtype=torch.float64) / k ** 0.5
    b = torch.randn(n, generator=generator, dtype=torch.float64)
    return w.to(dtype).to(device), b.to(dtype).to(device)


def padded_batch(lengths, k, dtype=torch.float64, device="cpu", seed=4):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max(lengths + [1]) + 1, k, generator=generator, dtype=torch.float64)
    return x.to(dtype).to(device), torch.tensor(lengths)


def per_sequence_masked(x, lengths, w, b, activation):
    out = torch.zeros(x.shape[:2] + (w.shape[0],), dtype=x.dtype, device=x.device)
    for i, n in enumerate(lengths.tolist()):
        out[i, :n] = ACT_FN[activation](F.linear(x[i, :n], w, b))
    return out


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("case", ["mixed_unsorted", "all_empty", "first_empty", "every_fifth_empty", "all_length_one",
                                  "single_sequence", "not_tile_multiples"])
def test_masked_linear_forward(device_backend, activation, case):
    device, backend = device_backend
    lengths = EDGE_LENGTHS[case]
    x, lens = padded_batch(lengths, 17, device=device)
    w, b = weights(19, 17, device=device)
    out = padkern.ops.masked_linear(x, lens, w, b, activation=activation, backend=backend)
    expected = per_sequence_masked(x, lens, w, b, activation)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
    pad = torch.arange(x.shape[1])[None, :] >= lens[:, None]
    assert torch.equal(out[pad.to(device)], torch.zeros_like(out[pad.to(device)]))


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("batch_first", [True, False])
def test_masked_linear_gradients(kernel_backend, activation, batch_first):
    device, backend = kernel_backend
    x, lens = padded_batch([5, 0, 9, 2], 6, device=device)
    w, b = weights(7, 6, device=device)
    if not batch_first:
        x = x.transpose(0, 1).contiguous()
    results = []
    for name in ("reference", backend):
        leaves = [t.clone().requires_grad_() for t in (x, w, b)]
        out = padkern.ops.masked_linear(leaves[0], lens, leaves[1], leaves[2], activation=activation,
                                        batch_first=batch_first, backend=name)
        weight = torch.linspace(-1, 2, out.numel(), dtype=out.dtype, device=device).view_as(out)
        results.append([out, *torch.autograd.grad((out * weight).sum(), leaves)])
    for actual, expected in zip(results[1], results[0]):
        torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-12)
    # The input gradient is exactly zero at padded rows.
    grad_x = results[1][1] if batch_first else results[1][1].transpose(0, 1)
    pad = (torch.arange(grad_x.shape[1])[None, :] >= lens[:, None]).to(device)
    assert torch.equal(grad_x[pad], torch.zeros_like(grad_x[pad]))


def test_masked_linear_ignores_garbage_at_padding(device_backend):
    device, backend = device_backend
    x, lens = padded_batch([3, 0, 5], 4, device=device)
    pad = (torch.arange(x.shape[1])[None, :] >= lens[:, None]).to(device)
    x[pad] = float("nan")
    w, b = weights(6, 4, device=device)
    out = padkern.ops.masked_linear(x, lens, w, b, activation="gelu", backend=backend)
    assert not out.isnan().any()


def test_masked_linear_offsets_and_int32(device_backend):
    device, backend = device_backend
    x, lens = padded_batch([4, 1, 0, 6], 5, device=device)
    w, _ = weights(3, 5, device=device)
    expected = per_sequence_masked(x, lens, w, None, None)
    by_offsets = padkern.ops.masked_linear(x, None, w, offsets=offsets_of(lens.tolist(), device, torch.int32),
                                           backend=backend)
    by_lengths = padkern.ops.masked_linear(x, lens.to(torch.int32), w, backend=backend)
    torch.testing.assert_close(by_offsets, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(by_lengths, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_ragged_linear(device_backend, activation):
    device, backend = device_backend
    values, offsets = random_ragged([3, 0, 70, 5], (20,), dtype=torch.float64, device=device)
    w, b = weights(33, 20, device=device)
    out = padkern.ops.ragged_linear(Ragged(values, offsets), w, b, activation=activation, backend=backend)
    assert isinstance(out, Ragged) and out.offsets is offsets
    torch.testing.assert_close(out.values, ACT_FN[activation](F.linear(values, w, b)), rtol=1e-10, atol=1e-12)


def test_ragged_linear_gradients(kernel_backend):
    device, backend = kernel_backend
    values, offsets = random_ragged([3, 0, 9], (6,), dtype=torch.float64, device=device)
    w, b = weights(5, 6, device=device)
    leaves = [t.requires_grad_() for t in (values, w, b)]
    torch.autograd.gradcheck(lambda v, w, b: padkern.ops.ragged_linear(v, w, b, offsets=offsets, activation="silu",
                                                                         backend=backend), leaves)


def per_sequence_bmm(values, offsets, weights):
    pieces = [piece @ weights[i] for i, piece in enumerate(split(values, offsets))]
    return torch.cat(pieces) if pieces else values.new_zeros((0, weights.shape[2]))


@pytest.mark.parametrize("case", ["mixed_unsorted", "all_empty", "last_empty", "not_tile_multiples"])
def test_ragged_bmm_and_outer(device_backend, case):
    device, backend = device_backend
    lengths = EDGE_LENGTHS[case]
    values, offsets = random_ragged(lengths, (17,), dtype=torch.float64, device=device)
    generator = torch.Generator().manual_seed(5)
    mats = torch.randn(len(lengths), 17, 9, generator=generator, dtype=torch.float64).to(device)
    torch.testing.assert_close(padkern.ops.ragged_bmm(values, offsets, mats, backend=backend),
                               per_sequence_bmm(values, offsets, mats), rtol=1e-10, atol=1e-12)
    other = torch.randn(values.shape[0], 9, generator=generator, dtype=torch.float64).to(device)
    expected = torch.stack([x.t() @ y for x, y in zip(split(values, offsets), split(other, offsets))])
    torch.testing.assert_close(padkern.ops.ragged_outer_bmm(values, other, offsets, backend=backend), expected,
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("layout", ["contiguous", "row_strided", "transposed_weights"])
def test_ragged_bmm_float32_within_bound(kernel_backend, layout):
    """float32 at the edges of the CPU's brgemm blocks (64 rows, 128 columns: sequences of 63,
    64, 65 and 150 rows, N = 130), on row-strided operands (read in place) and transposed
    weights (the at::mm route), forward and both gradients (the backward multiplies by the
    transposed weights, and ragged_outer_bmm's own backward by contiguous ones), within the
    float64 truth's rounding bound."""
    device, backend = kernel_backend
    lengths, k, n = [0, 1, 63, 64, 65, 150, 3], 37, 130
    generator = torch.Generator().manual_seed(11)
    values, offsets = random_ragged(lengths, (k + 5,), device=device)
    mats = torch.randn(len(lengths), k, n + 7, generator=generator).to(device)
    if layout == "contiguous":
        values, mats = values[:, :k].contiguous(), mats[:, :, :n].contiguous()
    elif layout == "row_strided":
        values, mats = values[:, :k], mats[:, :, :n]
    else:
        values, mats = values[:, :k].contiguous(), mats[:, :, :n].transpose(1, 2).contiguous().transpose(1, 2)
    leaves = [values.clone().requires_grad_(), mats.clone().requires_grad_()]
    out = padkern.ops.ragged_bmm(leaves[0], offsets, leaves[1], backend=backend)
    grad = torch.randn(out.shape, generator=generator).to(device)
    grad_values, grad_mats = torch.autograd.grad(out, leaves, grad)
    v64, m64, g64 = values.double(), mats.double(), grad.double()
    pieces = list(zip(split(v64, offsets), m64, split(g64, offsets)))
    truth_out = torch.cat([v @ m for v, m, _ in pieces])
    bound_out = sum_bound(torch.cat([v.abs() @ m.abs() for v, m, _ in pieces]), k, torch.float32)
    assert_within(out, truth_out, bound_out, "output")
    truth_grad_values = torch.cat([g @ m.t() for _, m, g in pieces])
    bound_grad_values = sum_bound(torch.cat([g.abs() @ m.abs().t() for _, m, g in pieces]), n, torch.float32)
    assert_within(grad_values, truth_grad_values, bound_grad_values, "grad values")
    truth_grad_mats = torch.stack([v.t() @ g for v, _, g in pieces])
    bound_grad_mats = torch.stack([sum_bound(v.abs().t() @ g.abs(), max(len(v), 1), torch.float32)
                                   for v, _, g in pieces])
    assert_within(grad_mats, truth_grad_mats, bound_grad_mats, "grad weights")


@pytest.mark.filterwarnings("ignore:invalid value encountered in matmul:RuntimeWarning")  # interpreter: inf rows
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_ragged_outer_bmm_float32_within_bound(kernel_backend, layout):
    """float32 at the edges of the CPU's chunks of 64 tokens (a last chunk rounded up to 16
    with zeros: lengths 1, 15, 16, 17, 63, 64, 65, 150) and brgemm blocks (M = N = 130 cross
    64 rows and 128 columns), on x stored column-major and y row-strided (both read in place),
    within the float64 truth's rounding bound. A short last chunk must not read past its
    sequence: every sequence is followed by one whose x and y hold infinities (0 x inf = NaN),
    and both buffers go on past L with infinities."""
    device, backend = kernel_backend
    checked, m, n = [1, 15, 16, 17, 63, 64, 0, 65, 150, 3], 130, 130
    poisoned = 5
    lengths = [length for c in checked[:-1] for length in (c, poisoned)] + checked[-1:]
    generator = torch.Generator().manual_seed(12)
    x, offsets = random_ragged(lengths, (m,), device=device)
    y = torch.randn(x.shape[0], n + 6, generator=generator).to(device)
    tokens, past_end = x.shape[0], 64
    x, y = (torch.cat([t, torch.full((past_end, t.shape[1]), float("inf"), device=device)]) for t in (x, y))
    for b in range(1, len(lengths), 2):
        x[offsets[b]:offsets[b + 1]] = y[offsets[b]:offsets[b + 1]] = float("inf")
    if layout == "contiguous":
        x, y = x[:tokens], y[:tokens, :n].contiguous()
    else:
        x, y = x.t().contiguous().t()[:tokens], y[:tokens, :n]
    out = padkern.ops.ragged_outer_bmm(x, y, offsets, backend=backend)[0::2]
    pieces = list(zip(split(x.double(), offsets), split(y.double(), offsets)))[0::2]
    truth = torch.stack([p.t() @ q for p, q in pieces])
    bound = torch.stack([sum_bound(p.abs().t() @ q.abs(), max(len(p), 1), torch.float32) for p, q in pieces])
    assert_within(out, truth, bound, "ragged_outer_bmm")


def test_bmm_gradcheck(device_backend):
    device, backend = device_backend
    values, offsets = random_ragged([2, 0, 3], (3,), dtype=torch.float64, device=device)
    mats = torch.randn(3, 3, 4, dtype=torch.float64, device=device)
    other = torch.randn(5, 4, dtype=torch.float64, device=device)
    leaves = [t.requires_grad_() for t in (values, mats, other)]
    torch.autograd.gradcheck(lambda v, m: padkern.ops.ragged_bmm(v, offsets, m, backend=backend), leaves[:2])
    torch.autograd.gradcheck(lambda v, o: padkern.ops.ragged_outer_bmm(v, o, offsets, backend=backend),
                             [leaves[0], leaves[2]])


def test_masked_linear_gradcheck(device_backend):
    device, backend = device_backend
    x, lens = padded_batch([2, 0, 3], 3, device=device)
    w, b = weights(4, 3, device=device)
    leaves = [t.requires_grad_() for t in (x, w, b)]
    torch.autograd.gradcheck(lambda x, w, b: padkern.ops.masked_linear(x, lens, w, b, activation="gelu",
                                                                         backend=backend), leaves)


def masked_linear_bound(x, lens, w, b, activation, dtype):
    """The rounding bound of masked_linear in `dtype` on float64 inputs: K products and a bias
    summed per output, then the activation."""
    magnitude = per_sequence_masked(x.abs(), lens, w.abs(), b.abs(), None)
    preactivation = per_sequence_masked(x, lens, w, b, None)
    return activation_bound(sum_bound(magnitude, x.shape[-1] + 1, dtype), preactivation, activation, dtype)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_float32_within_rounding_bound(kernel_backend, activation):
    """Sequences of 0 to 150 rows, 63, 64 and 65 at the edge of the CPU's 64-row brgemm
    blocks."""
    device, backend = kernel_backend
    x, lens = padded_batch([30, 0, 63, 64, 65, 7, 103, 150], 48, dtype=torch.float32, device=device)
    w, b = weights(40, 48, dtype=torch.float32, device=device)
    out = padkern.ops.masked_linear(x, lens, w, b, activation=activation, backend=backend)
    x64, w64, b64 = x.double(), w.double(), b.double()
    assert_within(out, per_sequence_masked(x64, lens, w64, b64, activation),
                  masked_linear_bound(x64, lens, w64, b64, activation, torch.float32), "masked_linear float32")


@pytest.mark.parametrize("batch_first", [True, False])
def test_masked_linear_float32_gradients_within_bound(kernel_backend, batch_first):
    """float32 forward and all three gradients at the edges of the CPU's brgemm blocks (64
    rows, 128 columns: sequences of 63, 64, 65 and 150 rows, N = 130), batch-first and
    time-first (rows B K apart, read in place), each within its rounding bound of the float64
    truth; padded rows of the input gradient exactly zero."""
    device, backend = kernel_backend
    lengths, k, n = [63, 0, 64, 65, 150, 3], 37, 130
    x, lens = padded_batch(lengths, k, dtype=torch.float32, device=device)
    w, b = weights(n, k, dtype=torch.float32, device=device)
    source = x if batch_first else x.transpose(0, 1).contiguous().transpose(0, 1)
    leaves = [t.clone().requires_grad_() for t in (source, w, b)]
    given_x = leaves[0] if batch_first else leaves[0].transpose(0, 1)
    out = padkern.ops.masked_linear(given_x, lens, leaves[1], leaves[2], batch_first=batch_first, backend=backend)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(5)).to(device)
    grad_x, grad_w, grad_b = torch.autograd.grad(out, leaves, grad)
    if not batch_first:
        out, grad = out.transpose(0, 1), grad.transpose(0, 1)
    x64, w64, b64, g64 = x.double(), w.double(), b.double(), grad.double()
    assert_within(out, per_sequence_masked(x64, lens, w64, b64, None),
                  masked_linear_bound(x64, lens, w64, b64, None, torch.float32), "output")
    real = torch.arange(x.shape[1], device=device)[None, :, None] < lens.to(device)[:, None, None]
    g_real = torch.where(real, g64, torch.zeros_like(g64))
    assert_within(grad_x, g_real @ w64, sum_bound(g_real.abs() @ w64.abs(), n, torch.float32), "grad x")
    tokens = sum(lengths)
    rows, g_rows = x64.flatten(0, 1), g_real.flatten(0, 1)
    assert_within(grad_w, g_rows.t() @ rows, sum_bound(g_rows.abs().t() @ rows.abs(), tokens, torch.float32),
                  "grad weight")
    assert_within(grad_b, g_rows.sum(0), sum_bound(g_rows.abs().sum(0), tokens, torch.float32), "grad bias")


@pytest.mark.parametrize("activation", [a for a in ACTIVATIONS if a is not None])
@pytest.mark.parametrize("padded", [False, True])
def test_cpu_float32_saved_preactivation_within_bound(activation, padded):
    """The CPU op's two outputs, float32: the activation and the pre-activation the backward
    reads, each within its rounding bound of the float64 truth; ragged input (one GEMM, one
    epilogue over every row) and padded (per sequence)."""
    lengths = [30, 0, 103, 7, 150]
    x, lens = padded_batch(lengths, 48, dtype=torch.float32)
    w, b = weights(40, 48, dtype=torch.float32)
    offsets = offsets_of(lengths)
    act = {"relu": 1, "gelu": 2, "silu": 3}[activation]
    values = torch.cat([x[i, :n] for i, n in enumerate(lengths)])
    source = x if padded else values
    out, pre = torch.ops.padkern.grouped_linear(source, offsets, w, b, act, True, values.shape[0])
    x64, w64, b64 = x.double(), w.double(), b.double()
    truth_pre = per_sequence_masked(x64, lens, w64, b64, None)
    pre_bound = sum_bound(per_sequence_masked(x64.abs(), lens, w64.abs(), b64.abs(), None), 49, torch.float32)
    truth_out = per_sequence_masked(x64, lens, w64, b64, activation)
    out_bound = activation_bound(pre_bound, truth_pre, activation, torch.float32)
    if not padded:
        real = lambda t: torch.cat([t[i, :n] for i, n in enumerate(lengths)])  # noqa: E731
        truth_pre, pre_bound, truth_out, out_bound = map(real, (truth_pre, pre_bound, truth_out, out_bound))
    assert_within(pre, truth_pre, pre_bound, "pre-activation")
    assert_within(out, truth_out, out_bound, "output")


@pytest.mark.parametrize("activation", [a for a in ACTIVATIONS if a is not None])
def test_cpu_epilogue_over_row_blocks_on_two_threads(activation):
    """A ragged input with a shared weight takes its epilogue in blocks of rows across threads
    (32K elements each): 2000 rows of 40 features make three blocks, whose outputs and saved
    pre-activations must each land on their own rows, within the float32 bounds."""
    lengths = [700, 0, 1300]
    x, lens = padded_batch(lengths, 24, dtype=torch.float32)
    w, b = weights(40, 24, dtype=torch.float32)
    values = torch.cat([x[i, :n] for i, n in enumerate(lengths)])
    act = {"relu": 1, "gelu": 2, "silu": 3}[activation]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out, pre = torch.ops.padkern.grouped_linear(values, offsets_of(lengths), w, b, act, True, values.shape[0])
    finally:
        torch.set_num_threads(threads)
    v64, w64, b64 = values.double(), w.double(), b.double()
    truth_pre = F.linear(v64, w64, b64)
    pre_bound = sum_bound(F.linear(v64.abs(), w64.abs(), b64.abs()), 25, torch.float32)
    assert_within(pre, truth_pre, pre_bound, "pre-activation")
    assert_within(out, ACT_FN[activation](truth_pre), activation_bound(pre_bound, truth_pre, activation, torch.float32),
                  "output")


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("with_nan", [False, True])
def test_cpu_float32_gelu_at_infinities(padded, with_nan):
    """Rows whose pre-activations are +inf and -inf (x = +-inf times positive weights): gelu
    gives +inf and NaN (-inf * Phi(-inf) = -inf * 0), as the erf formula and the float64 path
    do, in a short sequence and a long one, with or without a NaN row beside them."""
    lengths = [3, 150]
    x, lens = padded_batch(lengths, 8, dtype=torch.float32)
    w, b = weights(40, 8, dtype=torch.float32)
    w = w.abs()
    x[0, 1] = x[1, 100] = torch.tensor([math.inf] + [0.0] * 7)
    x[0, 2] = x[1, 7] = torch.tensor([-math.inf] + [0.0] * 7)
    if with_nan:
        x[1, 120, 3] = math.nan
    values = torch.cat([x[i, :n] for i, n in enumerate(lengths)])
    source = x if padded else values
    out, _ = torch.ops.padkern.grouped_linear(source, offsets_of(lengths), w, b, 2, False, values.shape[0])
    row = (lambda s, t: out[s, t]) if padded else (lambda s, t: out[sum(lengths[:s]) + t])  # noqa: E731
    for s, t in ((0, 1), (1, 100)):
        assert torch.equal(row(s, t), torch.full_like(row(s, t), math.inf))
    assert row(0, 2).isnan().all() and row(1, 7).isnan().all()
    assert row(1, 120).isnan().all() == with_nan
    truth = per_sequence_masked(x.double(), lens, w.double(), b.double(), "gelu")
    if not padded:
        truth = torch.cat([truth[i, :n] for i, n in enumerate(lengths)])
    assert out.isnan().sum() == truth.isnan().sum() == (3 if with_nan else 2) * 40
    assert out.isinf().sum() == 2 * 40


@pytest.mark.skipif(not torch.cuda.is_available(), reason="half precision kernels run on the GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_half_precision_within_twice_pytorch_error(dtype, backend):
    x, lens = padded_batch([100, 0, 257, 31], 96, device="cuda")
    w, b = weights(80, 96, device="cuda")
    truth = per_sequence_masked(x, lens, w, b, "gelu")
    ours = padkern.ops.masked_linear(x.to(dtype), lens, w.to(dtype), b.to(dtype), activation="gelu", backend=backend)
    pytorch = per_sequence_masked(x.to(dtype), lens, w.to(dtype), b.to(dtype), "gelu")
    assert (ours.double() - truth).abs().max() <= 2 * (pytorch.double() - truth).abs().max() + 1e-6
    values, offsets = random_ragged([100, 0, 257], (96,), dtype=torch.float64, device="cuda")
    other = torch.randn(values.shape[0], 40, dtype=torch.float64, device="cuda")
    truth = padkern.ops.ragged_outer_bmm(values, other, offsets, backend="reference")
    ours = padkern.ops.ragged_outer_bmm(values.to(dtype), other.to(dtype), offsets, backend=backend)
    pytorch = padkern.ops.ragged_outer_bmm(values.to(dtype), other.to(dtype), offsets, backend="reference")
    assert (ours.double() - truth).abs().max() <= 2 * (pytorch.double() - truth).abs().max() + 1e-6


@pytest.mark.parametrize("op", ["masked_linear", "ragged_linear", "ragged_bmm", "ragged_outer_bmm"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@settings(max_examples=20, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 40), min_size=1, max_size=5),
    k=st.integers(1, 20),
    n=st.integers(1, 20),
    activation=st.sampled_from(ACTIVATIONS),
)
def test_fuzz(op, dtype, lengths, k, n, activation):
    from conftest import DEVICE_BACKENDS

    generator = torch.Generator().manual_seed(len(lengths) * 1000 + k * 37 + n)
    for device, backend in DEVICE_BACKENDS:
        x, lens = padded_batch(lengths, k, dtype=dtype, device=device)
        values, offsets = random_ragged(lengths, (k,), dtype=dtype, device=device)
        w, b = weights(n, k, dtype=dtype, device=device)
        mats = torch.randn(len(lengths), k, n, generator=generator, dtype=torch.float64).to(dtype).to(device)
        other = torch.randn(values.shape[0], n, generator=generator, dtype=torch.float64).to(dtype).to(device)
        # The truth in float64 from the inputs as the kernel saw them; each bound is the
        # kernel's rounding in `dtype` plus the float64 truth's own.
        x64, v64, w64, b64, m64, o64 = (t.double() for t in (x, values, w, b, mats, other))
        if op == "masked_linear":
            ours = padkern.ops.masked_linear(x, lens, w, b, activation=activation, backend=backend)
            truth = per_sequence_masked(x64, lens, w64, b64, activation)
            bound = sum(masked_linear_bound(x64, lens, w64, b64, activation, t) for t in (dtype, torch.float64))
        elif op == "ragged_linear":
            ours = padkern.ops.ragged_linear(values, w, b, offsets=offsets, activation=activation, backend=backend)
            truth = ACT_FN[activation](F.linear(v64, w64, b64))
            magnitude = F.linear(v64.abs(), w64.abs(), b64.abs())
            bound = sum(activation_bound(sum_bound(magnitude, k + 1, t), F.linear(v64, w64, b64), activation, t)
                        for t in (dtype, torch.float64))
        elif op == "ragged_bmm":
            ours = padkern.ops.ragged_bmm(values, offsets, mats, backend=backend)
            truth = per_sequence_bmm(v64, offsets, m64)
            bound = sum(sum_bound(per_sequence_bmm(v64.abs(), offsets, m64.abs()), k, t) for t in (dtype, torch.float64))
        else:
            ours = padkern.ops.ragged_outer_bmm(values, other, offsets, backend=backend)
            truth = torch.stack([p.t() @ q for p, q in zip(split(v64, offsets), split(o64, offsets))])
            magnitude = torch.stack([p.t() @ q for p, q in zip(split(v64.abs(), offsets), split(o64.abs(), offsets))])
            bound = sum(sum_bound(magnitude, max(lengths), t) for t in (dtype, torch.float64))
        assert_within(ours, truth, bound, f"{op} {dtype} on {backend}")


def test_every_output_element_written(device_backend):
    # Deterministic mode fills fresh allocations with NaN: a skipped element would stay NaN.
    device, backend = device_backend
    x, lens = padded_batch([3, 0, 70, 5], 8, device=device)
    values, offsets = random_ragged([3, 0, 70, 5], (8,), dtype=torch.float64, device=device)
    w, b = weights(9, 8, device=device)
    mats = torch.randn(4, 8, 9, dtype=torch.float64, device=device)
    with nan_filled_allocations():
        outputs = [padkern.ops.masked_linear(x, lens, w, b, activation="relu", backend=backend),
                   padkern.ops.ragged_linear(values, w, b, offsets=offsets, backend=backend),
                   padkern.ops.ragged_bmm(values, offsets, mats, backend=backend),
                   padkern.ops.ragged_outer_bmm(values, values, offsets, backend=backend)]
    for out in outputs:
        assert not out.isnan().any()


def test_deterministic(kernel_backend):
    # No atomics anywhere: repeated runs are bitwise equal, forward and backward.
    device, backend = kernel_backend
    x, lens = padded_batch([30, 0, 64, 7], 24, dtype=torch.float32, device=device)
    w, b = weights(20, 24, dtype=torch.float32, device=device)
    runs = []
    for _ in range(2):
        leaves = [t.clone().requires_grad_() for t in (x, w, b)]
        out = padkern.ops.masked_linear(leaves[0], lens, leaves[1], leaves[2], activation="silu", backend=backend)
        pooled = padkern.ops.segment_softmax(out[0, :30], torch.tensor([0, 30], device=device), backend=backend)
        runs.append([out, pooled, *torch.autograd.grad(out.sum() + pooled.square().sum(), leaves)])
    for first, second in zip(*runs):
        assert torch.equal(first, second)


def test_row_offsets_past_int32(kernel_backend):
    # A cheap probe of 64-bit addressing: two sequences 2^31 + 16 floats apart in an
    # untouched 8 GiB buffer (only the rows read are ever touched).
    device, backend = kernel_backend
    if device == "cpu" and backend == "triton":
        pytest.skip("the interpreter copies whole storages")
    try:
        storage = torch.empty(2**31 + 32, dtype=torch.float32, device=device)
    except RuntimeError:
        pytest.skip("needs 8 GiB of address space")
    x = storage.as_strided((2, 1, 4), (2**31 + 16, 4, 1))
    x.copy_(torch.arange(8, dtype=torch.float32).view(2, 1, 4))
    w = torch.eye(4, device=device)
    out = padkern.ops.masked_linear(x, torch.tensor([1, 1]), w, backend=backend)
    assert out.flatten().tolist() == list(range(8))


def test_non_contiguous_output_gradient(kernel_backend):
    device, backend = kernel_backend
    x, lens = padded_batch([5, 0, 9, 2], 6, device=device)
    w, b = weights(7, 6, device=device)
    # A gradient laid out [N, B, T] and viewed as [B, T, N]: no unit stride on the last dimension.
    grad = torch.randn(7, x.shape[0], x.shape[1], dtype=torch.float64, device=device).permute(1, 2, 0)
    results = []
    for name in ("reference", backend):
        leaves = [t.clone().requires_grad_() for t in (x, w, b)]
        out = padkern.ops.masked_linear(leaves[0], lens, leaves[1], leaves[2], activation="gelu", backend=name)
        results.append(torch.autograd.grad(out, leaves, grad_outputs=grad))
    for actual, expected in zip(results[1], results[0]):
        torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("activation", ["gelu", "silu"])
def test_gradgradcheck(device_backend, activation):
    # Backward is built from registered ops and PyTorch ops, so it is differentiable again.
    device, backend = device_backend
    x, lens = padded_batch([2, 0, 3], 3, device=device)
    w, b = weights(4, 3, device=device)
    leaves = [t.requires_grad_() for t in (x, w, b)]
    torch.autograd.gradgradcheck(lambda x, w, b: padkern.ops.masked_linear(x, lens, w, b, activation=activation,
                                                                             backend=backend), leaves)


def test_compile_fullgraph_backward_on_padded_input():
    """masked_linear on padded input with lengths, compiled whole, forward and backward: L is
    an unbacked size there, and the backward branches on it."""
    torch._dynamo.reset()
    x, lens = padded_batch([5, 0, 9, 2], 24, dtype=torch.float64)
    w, b = weights(7, 24, dtype=torch.float64)
    grads = []
    for call in (padkern.ops.masked_linear, torch.compile(padkern.ops.masked_linear, fullgraph=True, backend="aot_eager")):
        leaves = [t.clone().requires_grad_() for t in (x, w, b)]
        out = call(leaves[0], lens, leaves[1], leaves[2], activation="gelu")
        grads.append([out, *torch.autograd.grad(out.square().sum(), leaves)])
    for eager, compiled in zip(*grads):
        torch.testing.assert_close(compiled, eager)
