"""GPU checks of the tensor-core matmuls (csrc/cuda/mma_pipeline.cuh) and their routes:
alignment fallbacks, ragged edges, both tile heights, float16 near overflow, TF32 on and
off, and the dense cuBLAS route against padkern's own kernel.

Tolerances (TESTING.md): float32 within 1e-5 of float64 with TF32 off; float32 with TF32 on
within the bound TF32's 10-bit mantissa allows (tests/tf32_bound.py: for tiny shapes cuBLAS
computes in exact float32, so PyTorch's error is no yardstick there); float16/bfloat16 within
2x the error of PyTorch's own computation in the same precision.
"""
import pytest
import torch
import torch.nn.functional as F

import padkern
from ragged_cases import offsets_of
from tf32_bound import assert_within_tf32_bound

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")

ACT = {None: lambda z: z, "relu": F.relu, "gelu": F.gelu, "silu": F.silu}
# Sequence lengths whose tiles straddle every boundary of 64- and 128-row tiles.
RAGGED_EDGES = [63, 0, 65, 1, 127, 129, 0, 200, 1, 64]


@pytest.fixture(params=["dense", "kernel"])
def dense_route(request, monkeypatch):
    """Shared-weight ragged_linear through cuBLAS (the default) or padkern's kernel."""
    if request.param == "kernel":
        monkeypatch.setenv("PADKERN_DENSE_LINEAR", "0")
    return request.param


@pytest.fixture(params=[False, True], ids=["tf32_off", "tf32_on"])
def tf32(request):
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = request.param
    yield request.param
    torch.backends.cuda.matmul.allow_tf32 = previous


def rand(*shape, seed=0, scale=1.0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=generator, dtype=torch.float64) * scale).cuda()


def assert_within_torch_error(ours, pytorch, truth, dtype, tf32_on, magnitude=None, depth=None, activation=False):
    """float64/exact float32: close to the truth; float32 under TF32: within TF32's bound, for
    which ``magnitude`` (per element, the summed |terms|, i.e. the computation on absolute
    values) and ``depth`` (the most terms in one sum) are needed; otherwise within 2x
    PyTorch's own error."""
    if dtype == torch.float64 or (dtype == torch.float32 and not tf32_on):
        rtol = 1e-12 if dtype == torch.float64 else 1e-5
        torch.testing.assert_close(ours.double(), truth, rtol=rtol, atol=rtol)
        return
    if dtype == torch.float32:
        assert_within_tf32_bound(ours, truth, magnitude, depth, activation)
        return
    ours_error = (ours.double() - truth).abs().max().item()
    torch_error = (pytorch.double() - truth).abs().max().item()
    assert ours_error <= 2 * torch_error + 1e-6, (ours_error, torch_error)


DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def dtype_id(dtype):
    return str(dtype).replace("torch.", "")


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("k,n", [(1, 1), (7, 9), (13, 130), (64, 128), (72, 200), (256, 72)])
@pytest.mark.parametrize("activation", [None, "gelu"])
def test_masked_linear_any_k_n(dtype, k, n, activation, tf32):
    lengths = torch.tensor(RAGGED_EDGES)
    x = rand(len(RAGGED_EDGES), max(RAGGED_EDGES) + 3, k, seed=1)
    w, b = rand(n, k, seed=2) / k ** 0.5, rand(n, seed=3)
    truth = torch.zeros(x.shape[:2] + (n,), dtype=torch.float64, device="cuda")
    pytorch = torch.zeros_like(truth, dtype=dtype)
    for i, length in enumerate(lengths.tolist()):
        truth[i, :length] = ACT[activation](F.linear(x[i, :length], w, b))
        pytorch[i, :length] = ACT[activation](F.linear(x[i, :length].to(dtype), w.to(dtype), b.to(dtype)))
    magnitude = F.linear(x.abs(), w.abs(), b.abs())  # padding rows: bound 0, and the output is 0 there
    ours = padkern.ops.masked_linear(x.to(dtype), lengths, w.to(dtype), b.to(dtype), activation=activation,
                                     backend="cuda")
    padding = lengths.cuda()[:, None] <= torch.arange(x.shape[1], device="cuda")
    assert torch.count_nonzero(ours[padding]) == 0
    assert_within_torch_error(ours, pytorch, truth, dtype, tf32, magnitude, k, activation is not None)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("k,n", [(7, 9), (64, 128), (100, 72)])
def test_ragged_linear_routes(dtype, k, n, dense_route, tf32):
    offsets = offsets_of(RAGGED_EDGES, "cuda")
    values = rand(int(offsets[-1]), k, seed=4)
    w, b = rand(n, k, seed=5) / k ** 0.5, rand(n, seed=6)
    truth = F.relu(F.linear(values, w, b))
    pytorch = F.relu(F.linear(values.to(dtype), w.to(dtype), b.to(dtype)))
    ours = padkern.ops.ragged_linear(values.to(dtype), w.to(dtype), b.to(dtype), offsets=offsets, activation="relu",
                                     backend="cuda")
    magnitude = F.linear(values.abs(), w.abs(), b.abs())
    assert_within_torch_error(ours, pytorch, truth, dtype, tf32, magnitude, k, True)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("k,n", [(5, 3), (32, 128), (72, 136)])
def test_bmm_and_outer_any_k_n(dtype, k, n, tf32):
    offsets = offsets_of(RAGGED_EDGES, "cuda")
    values, other = rand(int(offsets[-1]), k, seed=7), rand(int(offsets[-1]), n, seed=8)
    weights = rand(len(RAGGED_EDGES), k, n, seed=9) / k ** 0.5
    bounds = offsets.tolist()
    pieces = [(bounds[i], bounds[i + 1]) for i in range(len(RAGGED_EDGES))]
    truth = torch.cat([values[s:e] @ weights[i] for i, (s, e) in enumerate(pieces)])
    pytorch = torch.cat([values[s:e].to(dtype) @ weights[i].to(dtype) for i, (s, e) in enumerate(pieces)])
    ours = padkern.ops.ragged_bmm(values.to(dtype), offsets, weights.to(dtype), backend="cuda")
    magnitude = torch.cat([values[s:e].abs() @ weights[i].abs() for i, (s, e) in enumerate(pieces)])
    assert_within_torch_error(ours, pytorch, truth, dtype, tf32, magnitude, k)
    truth = torch.stack([values[s:e].T @ other[s:e] for s, e in pieces])
    pytorch = torch.stack([values[s:e].to(dtype).T @ other[s:e].to(dtype) for s, e in pieces])
    ours = padkern.ops.ragged_outer_bmm(values.to(dtype), other.to(dtype), offsets, backend="cuda")
    magnitude = torch.stack([values[s:e].abs().T @ other[s:e].abs() for s, e in pieces])
    assert_within_torch_error(ours, pytorch, truth, dtype, tf32, magnitude, max(RAGGED_EDGES))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=dtype_id)
def test_operands_off_16_byte_alignment(dtype, dense_route, tf32):
    # Views one element into a wider buffer: rows start off 16-byte boundaries, so the
    # copies take the element-wise path; the result must not change.
    lengths = torch.tensor([5, 0, 70, 33])
    wide = rand(4, 71, 65, seed=10).to(dtype)
    x = wide[:, :, 1:]
    w = rand(48, 65, seed=11).to(dtype)[:, 1:] / 8
    aligned = padkern.ops.masked_linear(x.contiguous(), lengths, w.contiguous(), backend="cuda")
    torch.testing.assert_close(padkern.ops.masked_linear(x, lengths, w, backend="cuda"), aligned, rtol=0, atol=0)
    offsets = offsets_of([5, 0, 70, 33], "cuda")
    values = rand(108, 65, seed=12).to(dtype)[:, 1:]
    # padkern's kernel copies the same numbers into the same layout either way: bitwise
    # equal. cuBLAS may pick another kernel for other alignments: equal within rounding.
    exact = dict(rtol=0, atol=0) if dense_route == "kernel" else {}
    torch.testing.assert_close(padkern.ops.ragged_linear(values, w, offsets=offsets, backend="cuda"),
                               padkern.ops.ragged_linear(values.contiguous(), w.contiguous(), offsets=offsets,
                                                         backend="cuda"), **exact)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=dtype_id)
def test_one_row_sequences_and_both_tile_heights(dtype):
    # 64 x 256 rows with N = 1024 picks 128-row tiles on any GPU of up to 512 SMs; one-row
    # sequences pick 64-row tiles.
    for lengths, k, n in [([1] * 300, 64, 96), ([256] * 64, 128, 1024)]:
        lengths = torch.tensor(lengths)
        x = rand(len(lengths), int(lengths.max()), k, seed=13)
        w = rand(n, k, seed=14) / k ** 0.5
        truth = F.linear(x, w)
        pytorch = F.linear(x.to(dtype), w.to(dtype))
        ours = padkern.ops.masked_linear(x.to(dtype), lengths, w.to(dtype), backend="cuda")
        assert_within_torch_error(ours, pytorch, truth, dtype, True)


def test_float16_near_overflow_stays_finite():
    # 64 products of 30 x 30 sum to 57600, exactly representable in float16 (max 65504):
    # fp32 accumulation must give it exactly, with no inf on the way.
    x = torch.full((2, 8, 64), 30.0, dtype=torch.float16, device="cuda")
    w = torch.full((16, 64), 30.0, dtype=torch.float16, device="cuda")
    out = padkern.ops.masked_linear(x, torch.tensor([8, 3]), w, backend="cuda")
    assert torch.equal(out[0], torch.full((8, 16), 57600.0, dtype=torch.float16, device="cuda"))
    assert torch.equal(out[1, 3:], torch.zeros(5, 16, dtype=torch.float16, device="cuda"))


@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_tf32_follows_torch_setting(backend):
    # With TF32 allowed, float32 products lose 13 mantissa bits (error ~1e-3 relative);
    # without, they are exact to float32 (~1e-6). Both ways, as torch.matmul does.
    lengths = torch.tensor([200, 57, 128])
    x, w = rand(3, 200, 256, seed=15), rand(192, 256, seed=16) / 16
    truth = torch.zeros(3, 200, 192, dtype=torch.float64, device="cuda")
    for i, length in enumerate(lengths.tolist()):
        truth[i, :length] = F.linear(x[i, :length], w)
    errors = {}
    for allowed in (False, True):
        torch.backends.cuda.matmul.allow_tf32 = allowed
        out = padkern.ops.masked_linear(x.float(), lengths, w.float(), backend=backend)
        errors[allowed] = (out.double() - truth).abs().max().item() / truth.abs().max().item()
    assert errors[False] < 1e-5
    assert 1e-5 < errors[True] < 1e-2, errors


def test_deterministic_and_stream_ordered():
    lengths = torch.tensor(RAGGED_EDGES)
    x = rand(len(RAGGED_EDGES), 200, 96, seed=17).half()
    w = rand(136, 96, seed=18).half() / 10
    first = padkern.ops.masked_linear(x, lengths, w, activation="silu", backend="cuda")
    for _ in range(3):
        assert torch.equal(padkern.ops.masked_linear(x, lengths, w, activation="silu", backend="cuda"), first)


def gradients(fn, inputs):
    inputs = [t.detach().requires_grad_() for t in inputs]
    out = fn(*inputs)
    out.backward(torch.ones_like(out))  # a fixed cotangent, the same in every precision
    return [out] + [t.grad for t in inputs]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=dtype_id)
@pytest.mark.parametrize("op", ["masked_linear", "ragged_linear", "ragged_bmm", "ragged_outer_bmm"])
def test_backward_on_tensor_cores(dtype, op, dense_route):
    # Backward runs the transposed operands: weight.t() (rows adjacent), [B, N, K]
    # weights, the gradient as the B operand of an outer product.
    torch.backends.cuda.matmul.allow_tf32 = True
    lengths = [63, 0, 130, 1, 77]
    offsets = offsets_of(lengths, "cuda")
    tokens = sum(lengths)
    # float32 (TF32) is held to TF32's bound, which the same computation on absolute values
    # gives exactly for sums of products; an activation's derivative would also carry the
    # forward's error into the gradient, so float32 runs without one (the epilogue is the
    # same code for every dtype, and float16/bfloat16 test it).
    gelu, silu = ("gelu", "silu") if dtype != torch.float32 else (None, None)
    if op == "masked_linear":
        inputs = [rand(5, 131, 40, seed=20), rand(72, 40, seed=21) / 7, rand(72, seed=22)]
        fn = lambda x, w, b: padkern.ops.masked_linear(x, torch.tensor(lengths), w, b, activation=gelu,
                                                        backend=backend)
    elif op == "ragged_linear":
        inputs = [rand(tokens, 40, seed=23), rand(72, 40, seed=24) / 7, rand(72, seed=25)]
        fn = lambda v, w, b: padkern.ops.ragged_linear(v, w, b, offsets=offsets, activation=silu, backend=backend)
    elif op == "ragged_bmm":
        inputs = [rand(tokens, 40, seed=26), rand(5, 40, 72, seed=27) / 7]
        fn = lambda v, w: padkern.ops.ragged_bmm(v, offsets, w, backend=backend)
    else:
        inputs = [rand(tokens, 40, seed=28), rand(tokens, 72, seed=29)]
        fn = lambda x, y: padkern.ops.ragged_outer_bmm(x, y, offsets, backend=backend)
    backend = "reference"
    truth = gradients(fn, inputs)
    pytorch = gradients(fn, [t.to(dtype) for t in inputs])
    magnitudes = gradients(fn, [t.abs() for t in inputs])  # the cotangent is ones: |terms| summed
    backend = "cuda"
    ours = gradients(fn, [t.to(dtype) for t in inputs])
    for o, p, t, m in zip(ours, pytorch, truth, magnitudes):
        assert_within_torch_error(o, p, t, dtype, True, m, tokens)


def test_empty_depth_gives_the_bias():
    # K = 0: no K-slice runs on the tensor-core path; the output is act(bias), padding zero.
    x = torch.empty(3, 5, 0, dtype=torch.float16, device="cuda")
    w = torch.empty(24, 0, dtype=torch.float16, device="cuda")
    b = rand(24, seed=30).half()
    out = padkern.ops.masked_linear(x, torch.tensor([5, 0, 2]), w, b, activation="relu", backend="cuda")
    expected = torch.zeros(3, 5, 24, dtype=torch.float16, device="cuda")
    expected[0] = expected[2, :2] = torch.relu(b)
    assert torch.equal(out, expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=dtype_id)
def test_outer_bmm_with_128_row_tiles(dtype):
    # M = 256 rows per sequence over 80 sequences fills any GPU of up to 320 SMs twice with
    # 128-row tiles, so the 128-row kernel runs.
    lengths = [40 + (7 * i) % 90 for i in range(80)]
    offsets = offsets_of(lengths, "cuda")
    x, y = rand(sum(lengths), 256, seed=31), rand(sum(lengths), 300, seed=32)
    bounds = offsets.tolist()
    truth = torch.stack([x[s:e].T @ y[s:e] for s, e in zip(bounds[:-1], bounds[1:])])
    pytorch = torch.stack([x[s:e].to(dtype).T @ y[s:e].to(dtype) for s, e in zip(bounds[:-1], bounds[1:])])
    ours = padkern.ops.ragged_outer_bmm(x.to(dtype), y.to(dtype), offsets, backend="cuda")
    assert_within_torch_error(ours, pytorch, truth, dtype, True)
