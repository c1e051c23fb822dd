"""Ragged attention on a GPU: the cuda backend's two routes (torch's varlen flash kernel for
float16/bfloat16, padkern's own kernel for the rest, or for everything with
PADKERN_FLASH_ATTENTION=0) and the Triton kernels in reduced precision, forward and backward
against the float64 reference; empty sequences, a non-default stream and CUDA-graph capture.
Skips without a GPU."""
import math

import pytest
import torch

from attention_truth import assert_within, low_precision_errors, make_case, truth

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

NAMES = ("out", "lse", "grad_q", "grad_k", "grad_v")
# (query lengths, kv lengths or None for self-attention, Hq, Hkv, causal): sequences empty on
# either side, lengths past one 64/128-row tile and not multiples of it.
CASES = {
    "self": ([70, 0, 129, 5], None, 4, 4, False),
    "causal_grouped": ([70, 0, 129, 5], None, 4, 2, True),
    "cross": ([70, 0, 33, 5], [40, 9, 0, 200], 2, 1, False),
}
HALVES = (torch.float16, torch.bfloat16)


def native(q, k, v, grad_out, offsets, kv_offsets, causal, scale):
    out, lse = torch.ops.padkern.ragged_attention(q, k, v, offsets, kv_offsets, causal, scale)
    grads = torch.ops.padkern.ragged_attention_backward(grad_out, q, k, v, out, lse, offsets, kv_offsets, causal,
                                                        scale)
    return (out, lse) + tuple(grads)


def triton_ops(q, k, v, grad_out, offsets, kv_offsets, causal, scale):
    from padkern.triton import attention

    out, lse = attention.ragged_attention_triton(q, k, v, offsets, kv_offsets, causal, scale)
    grads = attention.ragged_attention_backward_triton(grad_out, q, k, v, out, lse, offsets, kv_offsets, causal,
                                                       scale)
    return (out, lse) + tuple(grads)


def check(run, case, head_dim, dtype, seed=0):
    lengths, kv_lengths, heads, kv_heads, causal = case
    tensors = make_case(lengths, kv_lengths or lengths, heads, kv_heads, head_dim, dtype, "cuda", seed)
    q, k, v, grad_out, offsets, kv_offsets = tensors
    scale = 1 / math.sqrt(head_dim)
    got = run(q, k, v, grad_out, offsets, kv_offsets, causal, scale)
    expected = truth(q, k, v, grad_out, offsets, kv_offsets, causal, scale, dtype)
    if dtype in HALVES:
        # Within twice the error of PyTorch's own computation in that dtype (the reference
        # run in it), plus one rounding of the result.
        baseline = low_precision_errors(q, k, v, grad_out, offsets, kv_offsets, causal, scale, expected)
        for name, value, (want, _), allowed in zip(NAMES, got, expected, baseline):
            value64 = value.double().cpu()
            err = torch.where(value64 == want, 0.0, (value64 - want).abs()).amax().item() if want.numel() else 0.0
            floor = torch.finfo(dtype).eps * (want.nan_to_num(0, 0, 0).abs().amax().item() if want.numel() else 0)
            assert not value.isnan().any(), name
            assert err <= 2 * allowed + floor, f"{name}: error {err} > 2 x {allowed} + {floor}"
    else:
        for name, value, (want, bound) in zip(NAMES, got, expected):
            assert_within(name, value, want, bound)
    return got


@pytest.fixture(params=["flash", "own"])
def route(request, monkeypatch):
    if request.param == "own":
        monkeypatch.setenv("PADKERN_FLASH_ATTENTION", "0")
    return request.param


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("head_dim", [40, 64, 128])
@pytest.mark.parametrize("name", list(CASES))
def test_cuda_matches_reference(route, dtype, head_dim, name):
    if route == "flash" and dtype not in HALVES:
        pytest.skip("the flash route takes float16/bfloat16 only")
    check(native, CASES[name], head_dim, dtype)


@pytest.mark.parametrize("dtype", HALVES, ids=str)
@pytest.mark.parametrize("name", list(CASES))
def test_cuda_triton_half_matches_reference(dtype, name):
    check(triton_ops, CASES[name], 64, dtype)


@pytest.mark.parametrize("head_dim", [17, 256])
def test_cuda_own_kernel_odd_and_widest_heads(head_dim):
    # D = 17 is no multiple of 8 (the own kernel takes it in every dtype); 256 uses 16 lanes a row.
    check(native, CASES["causal_grouped"], head_dim, torch.float32)
    check(native, CASES["causal_grouped"], head_dim, torch.float16)


@pytest.mark.parametrize("lengths", [[0], [0, 0, 0], [1], [0, 1, 0]], ids=str)
def test_cuda_empty_sequences(route, lengths):
    check(native, (lengths, None, 4, 2, True), 64, torch.float16)
    check(native, (lengths, None, 4, 2, True), 64, torch.float32)


def test_cuda_queries_without_keys_give_zero(route):
    out, lse, grad_q, grad_k, grad_v = check(native, ([4, 0, 3], [0, 5, 2], 2, 1, False), 64, torch.float16)
    assert (out[:4] == 0).all() and (lse[:4] == -math.inf).all() and (grad_q[:4] == 0).all()
    assert (grad_k[:5] == 0).all() and (grad_v[:5] == 0).all()


def test_cuda_non_default_stream(route):
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        got = check(native, CASES["causal_grouped"], 64, torch.float16)
    stream.synchronize()
    assert got[0].shape[0] == sum(CASES["causal_grouped"][0])


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=str)
def test_cuda_graph_capture(route, dtype):
    # No host synchronisation inside either op: both are captured and replayed.
    lengths, _, heads, kv_heads, causal = CASES["causal_grouped"]
    q, k, v, grad_out, offsets, _ = make_case(lengths, lengths, heads, kv_heads, 64, dtype, "cuda")
    scale = 0.125
    eager = native(q, k, v, grad_out, offsets, offsets, causal, scale)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up outside the graph (allocator, lazy init)
        native(q, k, v, grad_out, offsets, offsets, causal, scale)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = native(q, k, v, grad_out, offsets, offsets, causal, scale)
    graph.replay()
    torch.cuda.synchronize()
    for a, b in zip(eager[:2] + eager[3:], captured[:2] + captured[3:]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # dQ by flash accumulates with atomics: equal within its rounding, not bit for bit.
    torch.testing.assert_close(eager[2], captured[2])


def test_cuda_head_dim_past_the_kernels():
    """D=320: auto runs the reference on the GPU; the kernel backends refuse it by name."""
    import padkern

    q, k, v, _, offsets, _ = make_case([5, 0, 9], [5, 0, 9], 2, 1, 320, torch.float32, "cuda", 0)
    got = padkern.ops.ragged_attention(q, k, v, offsets)
    want = padkern.ops.ragged_attention(q, k, v, offsets, backend="reference")
    assert torch.equal(got, want)
    for backend in ("cuda", "triton"):
        with pytest.raises(ValueError, match="takes head_dim up to 256 on a GPU"):
            padkern.ops.ragged_attention(q, k, v, offsets, backend=backend)


def test_cuda_heads_past_the_grid():
    """65536 query heads: past the 65535 a GPU grid's y axis holds, auto runs the reference on
    the GPU; the kernel backends refuse it by name, the native op too."""
    import padkern

    q, k, v, _, offsets, _ = make_case([3, 0, 2], [3, 0, 2], 65536, 1, 8, torch.float32, "cuda", 0)
    got = padkern.ops.ragged_attention(q, k, v, offsets, causal=True)
    want = padkern.ops.ragged_attention(q, k, v, offsets, causal=True, backend="reference")
    assert torch.equal(got, want)
    for backend in ("cuda", "triton"):
        with pytest.raises(ValueError, match="takes up to 65535 query heads on a GPU, got 65536"):
            padkern.ops.ragged_attention(q, k, v, offsets, backend=backend)
    with pytest.raises(RuntimeError, match="takes up to 65535 query heads, got 65536"):
        torch.ops.padkern.ragged_attention(q, k, v, offsets, offsets, False, 1.0)
