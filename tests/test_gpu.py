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
