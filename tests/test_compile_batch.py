"""torch.compile(dynamic=True) over ragged_bmm / ragged_outer_bmm: one graph whatever the
batch size B, on every backend, and FBGEMM's test_jagged_dense_bmm_dynamic_shape ported to
padkern (B up to 512). Timings are in benchmarks/bench_compile_batch.py; here the claim is
structural: the traced graphs, forward and backward, do not grow with B."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from functorch.compile import make_boxed_func
from torch._dynamo.backends.common import aot_autograd

import padkern
from conftest import DEVICE_BACKENDS


def _batch(batch, max_length, in_features, out_features, dtype=torch.float32, device="cpu", seed=0):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, max_length + 1, (batch,), generator=generator)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)]).to(device)
    values = torch.rand(int(lengths.sum()), in_features, generator=generator, dtype=torch.float64)
    weights = torch.rand(batch, in_features, out_features, generator=generator, dtype=torch.float64)
    return values.to(dtype).to(device), offsets, weights.to(dtype).to(device)


def _call(op, backend):
    if op == "ragged_bmm":
        return lambda v, o, w: padkern.ops.ragged_bmm(v, o, w, backend=backend)
    # ragged_outer_bmm of the values with themselves times the weights' first slice: [L, N] by rows.
    return lambda v, o, w: padkern.ops.ragged_outer_bmm(v, v @ w[0], o, backend=backend)


def _graph_sizes(op, backend, device, batch):
    """Node counts of the Dynamo graph and of AOTAutograd's forward and backward graphs."""
    sizes = {}

    def record(name):
        def compiler(gm, example_inputs):
            sizes[name] = len(gm.graph.nodes)
            return make_boxed_func(gm.forward)
        return compiler

    def dynamo_backend(gm, example_inputs):
        sizes["dynamo"] = len(gm.graph.nodes)
        return aot_autograd(fw_compiler=record("forward"), bw_compiler=record("backward"))(gm, example_inputs)

    torch._dynamo.reset()
    values, offsets, weights = _batch(batch, 9, 5, 6, device=device)
    values.requires_grad_()
    weights.requires_grad_()
    compiled = torch.compile(_call(op, backend), fullgraph=True, dynamic=True, backend=dynamo_backend)
    compiled(values, offsets, weights).sum().backward()
    return sizes


@pytest.mark.parametrize("op", ["ragged_bmm", "ragged_outer_bmm"])
def test_compiled_graphs_do_not_grow_with_batch(device_backend, op):
    # A Python loop over sequences would slice once per sequence (one unbacked offset each):
    # B nodes at least, and compile time growing with B.
    device, backend = device_backend
    with torch._dynamo.config.patch(capture_scalar_outputs=True):
        small, large = (_graph_sizes(op, backend, device, batch) for batch in (8, 64))
    assert set(small) == {"dynamo", "forward", "backward"}
    assert small == large


def _truth(values, offsets, weights):
    """float64 per-sequence slices: the definition itself."""
    bounds = offsets.tolist()
    return torch.cat([values[bounds[b]:bounds[b + 1]] @ weights[b] for b in range(weights.shape[0])])


_COMPILED = {}
# Interpreted Triton (CPU tensors) compiles like the others (the graph test above) but runs
# each program in Python: B = 512 would take seconds an example, for nothing this test adds.
PORT_BACKENDS = [pair for pair in DEVICE_BACKENDS if pair != ("cpu", "triton")]


@pytest.mark.parametrize("device_backend_pair", PORT_BACKENDS, ids=lambda p: f"{p[0]}-{p[1]}")
@settings(max_examples=6, deadline=None)
@given(batch=st.integers(10, 512), in_features=st.integers(2, 32), out_features=st.integers(2, 32),
       max_length=st.integers(2, 32))
def test_jagged_dense_bmm_dynamic_shape(device_backend_pair, batch, in_features, out_features, max_length):
    # FBGEMM's test of the same name (fbgemm_gpu/test/jagged_tensor_ops_test.py), on padkern:
    # fullgraph and dynamic shapes, B up to 512, forward and both gradients. One compiled
    # function per backend serves every example (FBGEMM resets Dynamo per example; B is a
    # symbol here, so a new B needs no new graph).
    device, backend = device_backend_pair
    if device_backend_pair not in _COMPILED:
        _COMPILED[device_backend_pair] = torch.compile(_call("ragged_bmm", backend), fullgraph=True, dynamic=True)
    values, offsets, weights = _batch(batch, max_length, in_features, out_features, device=device, seed=batch)
    values.requires_grad_()
    weights.requires_grad_()
    for tensor, dims in ((values, (0, 1)), (offsets, (0,)), (weights, (0,))):
        for dim in dims:
            torch._dynamo.mark_dynamic(tensor, dim)
    with torch._dynamo.config.patch(capture_scalar_outputs=True):
        output = _COMPILED[device_backend_pair](values, offsets, weights)
    grad_output = torch.rand(output.shape, generator=torch.Generator().manual_seed(1)).double()  # float32 values
    output.backward(grad_output.float().to(device))

    # float64 truth, and the error bound: (depth + 2) eps times the sum of |terms| (TESTING.md).
    x64, w64 = (t.detach().double().cpu().requires_grad_() for t in (values, weights))
    truth = _truth(x64, offsets.cpu(), w64)
    truth_grads = torch.autograd.grad(truth, (x64, w64), grad_output)
    abs_x, abs_w = (t.detach().abs().requires_grad_() for t in (x64, w64))
    magnitude = _truth(abs_x, offsets.cpu(), abs_w)
    magnitude_grads = torch.autograd.grad(magnitude, (abs_x, abs_w), grad_output.abs())
    scale = (max(in_features, out_features, max_length) + 2) * torch.finfo(torch.float32).eps
    for got, want, size in ((output, truth, magnitude), (values.grad, truth_grads[0], magnitude_grads[0]),
                            (weights.grad, truth_grads[1], magnitude_grads[1])):
        error = (got.detach().double().cpu() - want).abs()
        assert (error <= scale * size + torch.finfo(torch.float64).tiny).all(), float((error - scale * size).max())
