"""GPU checks of the persistent forward recurrences (csrc/cuda/persistent_rnn.cu), forced
with PADKERN_CUDA_RNN=persistent: against float64 truth within 2x the error of PyTorch's own
computation in the same precision (TESTING.md), forward and through the per-sequence
backward that reads what they save; zero-length and unsorted sequences, reverse, more
running sequences than one 128-row tile, determinism, and the refusals."""
import pytest
import torch

import padkern
from rnn_cases import initial_states, layer_weights, make_values, run_layer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")

# Unsorted, with empty sequences; 150 of them, so the running prefix spans two tiles for a while.
LENGTHS = [(37 * i) % 61 for i in range(150)]


@pytest.fixture
def persistent(monkeypatch):
    monkeypatch.setenv("PADKERN_CUDA_RNN", "persistent")
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True  # float32 runs persistently on TF32 only
    yield
    torch.backends.cuda.matmul.allow_tf32 = previous


def outputs_and_gradients(cell, values, offsets, weights, states, reverse, backend):
    leaves = [t.detach().requires_grad_() for t in [values, *weights, *states]]
    values, weights, states = leaves[0], leaves[1:5], leaves[5:]
    outputs = run_layer(cell, values, offsets, weights, states, reverse, backend)
    # A fixed cotangent on every output, the same in every precision.
    sum(o.float().sum() for o in outputs).backward()
    return [o.detach() for o in outputs] + [t.grad for t in leaves]


def dtype_id(dtype):
    return str(dtype).replace("torch.", "")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=dtype_id)
@pytest.mark.parametrize("cell,hidden", [("lstm", 256), ("lstm", 64), ("gru", 128)])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_matches_float64_within_torch_error(persistent, dtype, cell, hidden, reverse):
    values, offsets = make_values(LENGTHS, 48, device="cuda")
    weights = layer_weights(cell, 48, hidden, device="cuda")
    states = initial_states(cell, len(LENGTHS), hidden, device="cuda")
    truth = outputs_and_gradients(cell, values, offsets, weights, states, reverse, "reference")
    low = [t.to(dtype) for t in [values, *weights, *states]]
    pytorch = outputs_and_gradients(cell, low[0], offsets, low[1:5], low[5:], reverse, "reference")
    ours = outputs_and_gradients(cell, low[0], offsets, low[1:5], low[5:], reverse, "cuda")
    for o, p, t in zip(ours, pytorch, truth):
        ours_error = (o.double() - t).abs().max().item()
        torch_error = (p.double() - t).abs().max().item()
        assert ours_error <= 2 * torch_error + 1e-5, (ours_error, torch_error)


def test_sixteen_units_per_block(persistent):
    # H = 1536 in float16 is past what 8 units per block fit on an H100 (1408): the grid
    # of 96 blocks of 16 units runs.
    lengths = [(13 * i) % 17 for i in range(40)]
    values, offsets = make_values(lengths, 32, device="cuda")
    weights = layer_weights("lstm", 32, 1536, device="cuda")
    truth = run_layer("lstm", values, offsets, weights, [], False, "reference")
    low = [w.half() for w in weights]
    pytorch = run_layer("lstm", values.half(), offsets, low, [], False, "reference")
    with torch.no_grad():
        ours = run_layer("lstm", values.half(), offsets, low, [], False, "cuda")
    for o, p, t in zip(ours, pytorch, truth):
        assert (o.double() - t).abs().max() <= 2 * (p.double() - t).abs().max() + 1e-5


def test_auto_runs_the_persistent_kernel_where_it_can(persistent, monkeypatch):
    values, offsets = make_values(LENGTHS, 32, dtype=torch.float16, device="cuda")
    weights = layer_weights("gru", 32, 64, dtype=torch.float16, device="cuda")
    with torch.no_grad():
        forced = run_layer("gru", values, offsets, weights, [], True, "cuda")
        monkeypatch.setenv("PADKERN_CUDA_RNN", "auto")
        chosen = run_layer("gru", values, offsets, weights, [], True, "cuda")
    assert all(torch.equal(a, b) for a, b in zip(forced, chosen))


def test_weights_off_16_byte_alignment(persistent):
    # A contiguous w_hh starting one element into its storage: copied to an aligned buffer.
    values, offsets = make_values([7, 0, 4], 16, dtype=torch.bfloat16, device="cuda")
    w_ih, w_hh, b_ih, b_hh = layer_weights("lstm", 16, 64, dtype=torch.bfloat16, device="cuda")
    shifted = torch.empty(w_hh.numel() + 1, dtype=w_hh.dtype, device="cuda")[1:].view_as(w_hh)
    shifted.copy_(w_hh)
    with torch.no_grad():
        expected = run_layer("lstm", values, offsets, [w_ih, w_hh, b_ih, b_hh], [], False, "cuda")
        actual = run_layer("lstm", values, offsets, [w_ih, shifted, b_ih, b_hh], [], False, "cuda")
    assert all(torch.equal(a, b) for a, b in zip(expected, actual))


def test_offsets_past_the_tokens_stay_in_bounds(persistent):
    # Unchecked GPU offsets (outside debug mode) are clamped into the tensor: no access
    # outside it, whatever they hold (compute-sanitizer's memcheck runs this).
    padkern.set_debug(False)
    values = torch.randn(8, 16, dtype=torch.float16, device="cuda")
    weights = layer_weights("lstm", 16, 64, dtype=torch.float16, device="cuda")
    with torch.no_grad():
        actual = run_layer("lstm", values, torch.tensor([0, 5, 100], device="cuda"), weights, [], False, "cuda")
        expected = run_layer("lstm", values, torch.tensor([0, 5, 8], device="cuda"), weights, [], False, "cuda")
    for a, e in zip(actual, expected):
        assert torch.equal(a, e)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_empty_sequences_return_their_initial_state(persistent, cell):
    values, offsets = make_values([0, 5, 0, 3], 32, dtype=torch.bfloat16, device="cuda")
    weights = layer_weights(cell, 32, 128, dtype=torch.bfloat16, device="cuda")
    states = initial_states(cell, 4, 128, dtype=torch.bfloat16, device="cuda")
    with torch.no_grad():
        _, *finals = run_layer(cell, values, offsets, weights, states, False, "cuda")
    for final, state in zip(finals, states):
        assert torch.equal(final[[0, 2]], state[[0, 2]])


def test_deterministic(persistent):
    values, offsets = make_values(LENGTHS, 64, dtype=torch.float16, device="cuda")
    weights = layer_weights("lstm", 64, 256, dtype=torch.float16, device="cuda")
    with torch.no_grad():
        first = run_layer("lstm", values, offsets, weights, [], False, "cuda")
        for _ in range(3):
            again = run_layer("lstm", values, offsets, weights, [], False, "cuda")
            assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_forced_persistent_refuses_what_it_cannot_run(persistent):
    values, offsets = make_values([3, 2], 8, dtype=torch.float64, device="cuda")
    weights = layer_weights("lstm", 8, 64, dtype=torch.float64, device="cuda")
    with pytest.raises(RuntimeError, match="cannot run persistently"):
        run_layer("lstm", values, offsets, weights, [], False, "cuda")
    values, offsets = make_values([3, 2], 8, dtype=torch.float16, device="cuda")
    weights = layer_weights("lstm", 8, 40, dtype=torch.float16, device="cuda")  # H not whole 64-byte slices
    with pytest.raises(RuntimeError, match="cannot run persistently"):
        run_layer("lstm", values, offsets, weights, [], False, "cuda")


def test_auto_falls_back_to_per_sequence(monkeypatch):
    monkeypatch.setenv("PADKERN_CUDA_RNN", "auto")
    values, offsets = make_values([3, 0, 2], 8, device="cuda")  # float64: per sequence
    weights = layer_weights("gru", 8, 24, device="cuda")
    ours = run_layer("gru", values, offsets, weights, [], False, "cuda")
    expected = run_layer("gru", values, offsets, weights, [], False, "reference")
    torch.testing.assert_close(ours, expected)


def test_unknown_path_is_an_error(monkeypatch):
    monkeypatch.setenv("PADKERN_CUDA_RNN", "fastest")
    values, offsets = make_values([3], 8, dtype=torch.float16, device="cuda")
    weights = layer_weights("lstm", 8, 64, dtype=torch.float16, device="cuda")
    with pytest.raises(RuntimeError, match="PADKERN_CUDA_RNN must be"):
        run_layer("lstm", values, offsets, weights, [], False, "cuda")
