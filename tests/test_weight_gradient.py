"""grad^T @ rows (padkern/ops/_weight_gradient.py): the brgemm route (padkern::ragged_outer_bmm
over one sequence) against a float64 truth, at its chunk and row-block edges and on strided
inputs; where it is taken and where it must not be; and the layers whose backward uses it,
checked with shapes large enough to take it."""
import importlib

import pytest
import torch

import padkern
from padkern.ops import _weight_gradient as wg
from error_bounds import assert_within, sum_bound

brgemm = pytest.mark.skipif(not wg.brgemm_available(),
                            reason="torch's CPU brgemm reaches no oneDNN micro-kernel here")

# brgemm_outer_product's token chunk and its tail's rounding (csrc/cpu/brgemm_blocks.h).
CHUNK, TAIL = 64, 16


def truth_and_bound(grad, rows):
    g, x = grad.double(), rows.double()
    return g.t() @ x, sum_bound(g.abs().t() @ x.abs(), grad.shape[0], grad.dtype)


@brgemm
@pytest.mark.parametrize("length", [1, TAIL - 1, TAIL, TAIL + 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5])
@pytest.mark.parametrize("layout", ["contiguous", "strided", "transposed", "expanded"])
def test_within_bound_at_chunk_edges(length, layout):
    g = torch.Generator().manual_seed(length)
    # Enough columns that every length here passes the route's threshold; 1000 output rows: 15
    # whole blocks of 64 and one of 40.
    n, k = 1000, 2200
    if layout == "contiguous":
        grad, rows = torch.randn(length, n, generator=g), torch.randn(length, k, generator=g)
    elif layout == "strided":  # grad column-major (its chunks gathered element by element), rows apart
        grad, rows = torch.randn(n, length, generator=g).t(), torch.randn(length, k + 8, generator=g)[:, :k]
    elif layout == "transposed":  # rows column-major: at::mm inside the op
        grad, rows = torch.randn(length, 2 * n, generator=g)[:, ::2], torch.randn(k, length, generator=g).t()
    else:  # what .sum().backward() hands a layer: one row repeated (stride 0)
        grad, rows = torch.randn(1, n, generator=g).expand(length, n), torch.randn(length, k, generator=g)
    assert wg.uses_brgemm(grad, rows)
    truth, bound = truth_and_bound(grad, rows)
    assert_within(wg.weight_gradient(grad, rows), truth, bound, f"L={length}")


@brgemm
@pytest.mark.parametrize("width", [40, 200])
def test_same_bits_on_any_thread_count(width):
    """The output is split into blocks over the threads (64 rows, and 128 columns where the row
    blocks are fewer than the threads: 40 rows on 3 threads); each block's sums run in one order
    in any split. 301 tokens end in a rounded-up chunk of 45."""
    g = torch.Generator().manual_seed(9)
    grad, rows = torch.randn(301, width, generator=g), torch.randn(301, 300, generator=g)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = wg.weight_gradient(grad, rows)
        torch.set_num_threads(3)
        assert torch.equal(wg.weight_gradient(grad, rows), alone)
    finally:
        torch.set_num_threads(threads)
    truth, bound = truth_and_bound(grad, rows)
    assert_within(alone, truth, bound, f"{width} x 300")


@brgemm
def test_routes(monkeypatch):
    big = torch.randn(4 * CHUNK, 1024), torch.randn(4 * CHUNK, 1024)
    assert wg.uses_brgemm(*big)
    small = torch.randn(8, 16), torch.randn(8, 16)
    assert not wg.uses_brgemm(*small), "below the threshold the chunks' calls cost more than one at::mm"
    assert not wg.uses_brgemm(*(t.double() for t in big)), "float32 only"
    assert not wg.uses_brgemm(big[0].bfloat16(), big[1].bfloat16()), "float32 only"
    leaf = big[0].clone().requires_grad_()
    assert not wg.uses_brgemm(leaf, big[1]), "a differentiable call stays a matmul"
    with torch.no_grad():
        assert wg.uses_brgemm(leaf, big[1])
    for other in (torch.zeros(0, 1024), torch.zeros(4 * CHUNK, 0)):
        assert wg.weight_gradient(other, other).shape == (other.shape[1], other.shape[1])
    assert not wg.uses_brgemm(big[0][1:], big[1]), "rows of different counts: at::mm raises"
    with torch.backends.mkldnn.flags(enabled=False):
        assert not wg.uses_brgemm(*big), "oneDNN off: torch's brgemm would call its BLAS per block"
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
    assert not wg.uses_brgemm(*big), "no AVX2: no micro-kernel"
    monkeypatch.undo()
    monkeypatch.setattr(wg.platform, "machine", lambda: "aarch64")
    assert not wg.uses_brgemm(*big), "torch builds the micro-kernel for x86 only"
    monkeypatch.undo()
    monkeypatch.setattr(wg._extension, "CPU_MISSING", "no padkern._C")
    assert not wg.uses_brgemm(*big), "the route is padkern's own CPU kernel"


@brgemm
def test_linear_layer_weight_gradient_within_bound():
    """masked_linear's weight gradient at a shape that takes the brgemm route."""
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([700, 0, 513, 256])
    x = torch.randn(4, 700, 256, generator=g)
    w = torch.randn(512, 256, generator=g, requires_grad=True)
    grad_out = torch.randn(4, 700, 512, generator=g)
    real = torch.arange(700)[None, :] < lengths[:, None]
    assert wg.uses_brgemm(grad_out[real], x[real])
    padkern.ops.masked_linear(x, lengths, w, backend="cpu").backward(grad_out)
    truth, bound = truth_and_bound(grad_out[real], x[real])
    assert_within(w.grad, truth, bound, "grad weight")


@brgemm
@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_recurrence_weight_gradients_within_bound(kind, monkeypatch):
    """Every weight gradient of a recurrence's backward (input and recurrent weights) takes the
    brgemm route at this size, and each is within the bound of the operands it was given."""
    calls = []

    def recording(grad, rows):
        result = wg.weight_gradient(grad, rows)
        calls.append((grad.clone(), rows.clone(), wg.uses_brgemm(grad, rows), result))
        return result

    for module in ("padkern.ops.rnn", "padkern.ops.linear"):
        monkeypatch.setattr(importlib.import_module(module), "weight_gradient", recording)
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([300, 0, 120, 77])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    layer = getattr(padkern.nn, kind)(128, 256)
    values = torch.randn(int(lengths.sum()), 128, generator=g)
    out = layer(padkern.Ragged(values, offsets))[0].values
    out.backward(torch.randn(out.shape, generator=g))
    assert len(calls) == 2, "one for w_ih, one for w_hh"
    for grad, rows, took_brgemm, result in calls:
        assert took_brgemm
        truth, bound = truth_and_bound(grad, rows)
        assert_within(result, truth, bound, f"{kind} weight gradient {tuple(result.shape)}")


@brgemm
def test_compiled_backward_keeps_one_matmul(monkeypatch):
    """Under torch.compile the route is not taken (the graph keeps a matmul Inductor can plan):
    the backward traces, with the route's size and dtype, and matches eager."""
    traced = []
    original = wg._traced

    def spy(*tensors):
        traced.append(original(*tensors))
        return traced[-1]

    monkeypatch.setattr(wg, "_traced", spy)
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(2)
    lengths = torch.tensor([700, 0, 513, 256])
    x = torch.randn(4, 700, 256, generator=g)
    w = torch.randn(512, 256, generator=g)
    results = []
    for call in (padkern.ops.masked_linear,
                 torch.compile(padkern.ops.masked_linear, fullgraph=True, backend="aot_eager")):
        leaf = w.clone().requires_grad_()
        call(x, lengths, leaf).sum().backward()
        results.append(leaf.grad)
    assert True in traced and False in traced, "the compiled backward traced, the eager one took the route"
    real = torch.arange(700)[None, :] < lengths[:, None]
    truth, bound = truth_and_bound(torch.ones(int(lengths.sum()), 512), x[real])
    for result in results:
        assert_within(result, truth, bound, "grad weight")
