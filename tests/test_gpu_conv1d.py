"""GPU-only checks of ragged_conv1d: a non-default stream, capture in a CUDA graph (no host
synchronisation inside the op), the GPU backends against the CPU kernel on a larger
batch, and an index past 2^31 elements. The shared-suite cases (every backend against the
reference, forward and backward) run on the GPU as their cuda-cuda / cuda-triton ids."""
import pytest
import torch

import padkern
from ragged_cases import random_ragged

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")

CONFIGS = [(64, 64, 4, 64, 1, "causal"), (32, 48, 3, 1, 2, "same"), (32, 32, 5, 4, 1, "same")]


def _inputs(lengths, config, device, dtype=torch.float32):
    c_in, c_out, k, groups, dilation, padding = config
    values, offsets = random_ragged(lengths, (c_in,), dtype=dtype, device=device)
    generator = torch.Generator().manual_seed(3)
    weight = torch.randn(c_out, c_in // groups, k, generator=generator).to(dtype).to(device)
    bias = torch.randn(c_out, generator=generator).to(dtype).to(device)
    return values, offsets, weight, bias, dict(padding=padding, dilation=dilation, groups=groups)


@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("config", CONFIGS)
def test_gpu_matches_cpu_kernel(backend, config):
    lengths = [300, 0, 1, 1000, 17, 513]
    values, offsets, weight, bias, options = _inputs(lengths, config, "cuda", torch.float64)
    leaves = [t.requires_grad_() for t in (values, weight, bias)]
    out = padkern.ops.ragged_conv1d(leaves[0], offsets, leaves[1], leaves[2], backend=backend, **options)
    grads = torch.autograd.grad(out, leaves, torch.ones_like(out))
    cpu_leaves = [t.detach().cpu().requires_grad_() for t in leaves]
    want = padkern.ops.ragged_conv1d(cpu_leaves[0], offsets.cpu(), cpu_leaves[1], cpu_leaves[2], backend="cpu",
                                     **options)
    want_grads = torch.autograd.grad(want, cpu_leaves, torch.ones_like(want))
    for got, expected in zip([out] + list(grads), [want] + list(want_grads)):
        torch.testing.assert_close(got.detach().cpu(), expected.detach(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_non_default_stream(backend):
    values, offsets, weight, bias, options = _inputs([7, 0, 33, 5], CONFIGS[0], "cuda")
    expected = padkern.ops.ragged_conv1d(values, offsets, weight, bias, backend=backend, **options)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        actual = padkern.ops.ragged_conv1d(values, offsets, weight, bias, backend=backend, **options)
    torch.cuda.current_stream().wait_stream(stream)
    assert torch.equal(actual, expected)


@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("config", CONFIGS[:2])
def test_cuda_graph_capture(backend, config):
    values, offsets, weight, bias, options = _inputs([9, 0, 40, 3], config, "cuda")
    expected = padkern.ops.ragged_conv1d(values, offsets, weight, bias, backend=backend, **options)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm up (Triton compiles) outside the capture
        padkern.ops.ragged_conv1d(values, offsets, weight, bias, backend=backend, **options)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = padkern.ops.ragged_conv1d(values, offsets, weight, bias, backend=backend, **options)
    values.mul_(2.0)
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(captured, 2 * expected - bias, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_index_past_int32(backend):
    # L * C > 2^31 elements: every row address must be computed in 64 bits.
    free, _ = torch.cuda.mem_get_info()
    if free < 24 * 2**30:
        pytest.skip("needs 24 GiB free")
    channels, rows = 1024, 2**21 + 8
    values = torch.zeros(rows, channels, device="cuda", dtype=torch.float16)
    values[-8:] = 1.0
    offsets = torch.tensor([0, rows - 8, rows], device="cuda")
    weight = torch.ones(channels, 1, 3, device="cuda", dtype=torch.float16)
    with torch.no_grad():
        out = padkern.ops.ragged_conv1d(values, offsets, weight, padding="same", groups=channels, backend=backend)
    # The last sequence (8 ones): 2 at its edges, 3 inside.
    assert out[-8, 0].item() == 2 and out[-4, 5].item() == 3 and out[-1, -1].item() == 2
    assert out[-9].abs().max().item() == 0
