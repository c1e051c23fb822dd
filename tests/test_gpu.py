"""GPU-only checks: kernels on a non-default stream, and large-offset probes."""
import pytest
import torch

import padkern
from padkern import Ragged
from rnn_cases import initial_states, layer_weights, make_values, run_layer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_non_default_stream(backend):
    values, offsets = make_values([7, 0, 33, 5], 16, dtype=torch.float32, device="cuda")
    weights = layer_weights("lstm", 16, 64, dtype=torch.float32, device="cuda")
    states = initial_states("lstm", 4, 64, dtype=torch.float32, device="cuda")
    expected = run_layer("lstm", values, offsets, weights, states, False, backend)
    padded_expected = padkern.ops.pad(values, offsets, 40, backend=backend)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        actual = run_layer("lstm", values, offsets, weights, states, False, backend)
        padded = padkern.ops.pad(values, offsets, 40, backend=backend)
    torch.cuda.current_stream().wait_stream(stream)
    for a, e in zip(actual, expected):
        assert torch.equal(a, e)
    assert torch.equal(padded, padded_expected)


@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_offsets_past_int32(backend):
    # Row index * row stride passes 2^31 bytes; the rows themselves are few.
    free, _ = torch.cuda.mem_get_info()
    if free < 6 * 2**30:
        pytest.skip("needs 6 GiB free")
    features = 2**20  # 4 MiB rows
    values = torch.empty(600, features, device="cuda")
    values[-1].fill_(7.0)
    offsets = torch.tensor([0, 599, 600], device="cuda")
    padded = padkern.ops.pad(values, offsets, 599, backend=backend)
    assert torch.equal(padded[1, 0], values[-1])
    assert torch.equal(Ragged.from_padded(padded, torch.tensor([599, 1]), backend=backend).values[-1], values[-1])


@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_recurrence_index_past_int32(backend):
    # gates_x [L, 4H] with L * 4H > 2^31: token * gates must be computed in 64 bits.
    free, _ = torch.cuda.mem_get_info()
    if free < 20 * 2**30:
        pytest.skip("needs 20 GiB free")
    batch, length, hidden = 2**20 + 1, 512, 1
    offsets = torch.arange(batch + 1, device="cuda", dtype=torch.int64) * length
    values = torch.zeros(batch * length, 1, device="cuda")
    values[-length:] = torch.linspace(-1, 1, length, device="cuda")[:, None]  # the last sequence, past 2^31
    weights = layer_weights("lstm", 1, hidden, dtype=torch.float32, device="cuda")
    with torch.no_grad():
        _, h_n, c_n = run_layer("lstm", values, offsets, weights, [], False, backend)
        last = run_layer("lstm", values[-length:], offsets[:2], weights, [], False, backend)
    # The input projection may round differently for 2^29 rows than for 512: compare closely.
    torch.testing.assert_close((h_n[-1], c_n[-1]), (last[1][0], last[2][0]), rtol=1e-6, atol=1e-7)


def _graph_model_step(x, lengths, ragged, weights):
    """A small training step touching every op family, with no host synchronisation:
    lengths and offsets live on the GPU, so masked_linear never reads L on the host."""
    w_in, w_ih, w_hh = weights
    hidden = padkern.ops.masked_linear(x, lengths, w_in, activation="relu")
    output, h_n, c_n = padkern.ops.lstm(ragged.values, ragged.offsets, w_ih, w_hh)
    pooled = padkern.ops.segment_max(output, ragged.offsets)
    loss = hidden.square().sum() + pooled.sum() + h_n.sum()
    loss.backward()
    return loss


@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_cuda_graph_capture_and_replay(backend):
    torch.manual_seed(0)
    lengths = torch.tensor([5, 0, 3, 7], device="cuda")
    x = torch.randn(4, 7, 16, device="cuda")
    values, offsets = make_values([5, 0, 3, 7], 16, dtype=torch.float32, device="cuda")
    ragged = Ragged(values, offsets)
    weights = [torch.randn(8, 16, device="cuda", requires_grad=True),
               torch.randn(4 * 12, 16, device="cuda", requires_grad=True),
               torch.randn(4 * 12, 12, device="cuda", requires_grad=True)]

    def step():
        for w in weights:
            w.grad = None
        return _graph_model_step(x, lengths, ragged, weights)

    with padkern.use_backend(backend):
        expected_loss = step().detach().clone()
        expected_grads = [w.grad.clone() for w in weights]
        side = torch.cuda.Stream()  # warm up (compilation, autotuning) outside the capture
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        for w in weights:
            w.grad = None
        with torch.cuda.graph(graph):
            loss = _graph_model_step(x, lengths, ragged, weights)
        graph.replay()
        torch.cuda.synchronize()
    torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=1e-5)
    for w, g in zip(weights, expected_grads):
        torch.testing.assert_close(w.grad, g, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_lengths_past_padded_length_stay_in_bounds(backend):
    # Outside debug mode GPU offsets are not read on the host; kernels clamp each sequence
    # to the padded length T instead of reading or writing past it (run under memcheck).
    padkern.set_debug(False)
    padded = torch.randn(3, 4, 8, device="cuda")
    too_long = torch.tensor([0, 6, 8, 9], device="cuda")  # lengths 6, 2, 1 with T = 4
    values = padkern.ops.unpad(padded, too_long, total_tokens=9, backend=backend)
    torch.cuda.synchronize()
    assert torch.equal(values[:4], padded[0])
    assert torch.equal(values[4:6], torch.zeros(2, 8, device="cuda"))  # tokens past T read as zeros
    assert torch.equal(values[6:8], padded[1, :2])
    assert torch.equal(values[8], padded[2, 0])
    weight = torch.randn(5, 8, device="cuda")
    out = padkern.ops.masked_linear(padded, torch.tensor([6, 2, 1], device="cuda"), weight, backend=backend)
    clamped = padkern.ops.masked_linear(padded, torch.tensor([4, 2, 1], device="cuda"), weight, backend=backend)
    assert torch.equal(out, clamped)


def test_cuda_kernels_clamp_offsets_into_their_tensors():
    # Offsets whose last entry passes L (unchecked on a GPU outside debug mode): every CUDA
    # kernel clamps each sequence to the rows that exist; memcheck proves nothing else is read.
    padkern.set_debug(False)
    values = torch.randn(5, 4, device="cuda")
    beyond = torch.tensor([0, 3, 9], device="cuda")
    clamped = torch.tensor([0, 3, 5], device="cuda")
    for op in (padkern.ops.segment_sum, padkern.ops.segment_max, padkern.ops.segment_softmax):
        assert torch.equal(op(values, beyond, backend="cuda"), op(values, clamped, backend="cuda"))
    assert torch.equal(padkern.ops.pad(values, beyond, 6, backend="cuda"), padkern.ops.pad(values, clamped, 6, backend="cuda"))
    for cell in ("lstm", "gru", "rnn_relu"):
        weights = layer_weights(cell, 4, 8, dtype=torch.float32, device="cuda")
        expected = run_layer(cell, values, clamped, weights, [], False, "cuda")
        actual = run_layer(cell, values, beyond, weights, [], False, "cuda")
        for a, e in zip(actual, expected):
            assert torch.equal(a, e), cell


def test_recurrence_state_past_shared_memory_names_the_limit():
    """The per-sequence recurrences keep their state vectors in shared memory: an H whose
    state cannot fit there (float64, 2 vectors for the RNN forward, 6 for the LSTM backward)
    raises a ValueError naming hidden_size and its limit, not the launch's 'invalid argument'.
    The weights are stride-0 views: the check comes before any copy of them."""
    limit = torch.cuda.get_device_properties(0).shared_memory_per_block_optin
    dev = dict(device="cuda", dtype=torch.float64)
    offsets = torch.tensor([0, 1], device="cuda")
    hidden = limit // (2 * 8) + 1
    with pytest.raises(ValueError, match=rf"rnn_recurrence on CUDA: hidden_size {hidden} .* at most {hidden - 1}"):
        torch.ops.padkern.rnn_recurrence(torch.zeros(1, hidden, **dev), offsets,
                                         torch.zeros(1, 1, **dev).expand(hidden, hidden), torch.zeros(1, hidden, **dev),
                                         0, False)
    hidden = limit // (6 * 8) + 1
    row, gates = torch.zeros(1, hidden, **dev), torch.zeros(1, 4 * hidden, **dev)
    with pytest.raises(ValueError, match=rf"lstm_recurrence_backward on CUDA: hidden_size {hidden} "):
        torch.ops.padkern.lstm_recurrence_backward(row, row, row, gates, row, offsets,
                                                   torch.zeros(1, 1, **dev).expand(4 * hidden, hidden), row, False)


@pytest.mark.parametrize("op", ["segment_sum", "segment_max", "segment_softmax"])
def test_segment_features_past_the_grid_row(op):
    """The segment kernels take 256 features a block, with at most 65535 blocks a sequence (the
    grid's y): past that, each block takes several chunks. The last features agree too."""
    features = 65535 * 256 + 300
    values = torch.randn(3, features, device="cuda")
    offsets = torch.tensor([0, 2, 2, 3], device="cuda")
    got = getattr(padkern.ops, op)(values, offsets, backend="cuda")
    want = getattr(padkern.ops, op)(values, offsets, backend="reference")
    torch.testing.assert_close(got, want)
