"""padkern.ops.lstm / gru / rnn (one layer, one direction) on every backend, against the
per-sequence torch.nn reference and the pure-PyTorch reference path."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from error_bounds import assert_within_twice_reference_error
from ragged_cases import EDGE_LENGTHS, offsets_of
from rnn_cases import initial_states, layer_weights, make_values, per_sequence_reference, run_layer

CELLS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]


def assert_all_close(actual, expected, rtol, atol):
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=rtol, atol=atol)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("case", ["mixed_unsorted", "all_empty", "first_empty", "last_empty", "every_fifth_empty",
                                  "all_length_one", "single_sequence", "one_long", "no_tokens_single"])
def test_matches_per_sequence_reference(device_backend, cell, reverse, case):
    device, backend = device_backend
    lengths = EDGE_LENGTHS[case]
    values, offsets = make_values(lengths, 3, device=device)
    weights = layer_weights(cell, 3, 5, device=device)
    states = initial_states(cell, len(lengths), 5, device=device)
    ours = run_layer(cell, values, offsets, weights, states, reverse, backend)
    expected = per_sequence_reference(cell, values, offsets, weights, states, reverse)
    assert_all_close(ours, expected, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("reverse", [False, True])
def test_gradients_match_reference(kernel_backend, cell, reverse):
    device, backend = kernel_backend
    values, offsets = make_values([4, 0, 6, 1], 3, device=device)
    weights = layer_weights(cell, 3, 5, device=device)
    states = initial_states(cell, 4, 5, device=device)
    leaves = [t.requires_grad_() for t in [values, *weights, *states]]
    results = {}
    for name in ("reference", backend):
        outputs = run_layer(cell, values, offsets, weights, states, reverse, name)
        # Weigh every output differently so no gradient can cancel by symmetry.
        loss = sum((out * torch.linspace(-1, 2, out.numel(), dtype=out.dtype, device=device).view_as(out)).sum()
                   for out in outputs)
        results[name] = [*outputs, *torch.autograd.grad(loss, leaves)]
    assert_all_close(results[backend], results["reference"], rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("reverse", [False, True])
def test_gradcheck(device_backend, cell, reverse):
    device, backend = device_backend
    values, offsets = make_values([2, 0, 3], 2, device=device)
    weights = layer_weights(cell, 2, 3, device=device)
    states = initial_states(cell, 3, 3, device=device)
    leaves = [t.requires_grad_() for t in [values, *weights, *states]]

    def layer(values, *rest):
        return run_layer(cell, values, offsets, rest[:4], rest[4:], reverse, backend)

    assert torch.autograd.gradcheck(layer, leaves)


@pytest.mark.parametrize("cell", CELLS)
def test_double_backward(device_backend, cell):
    device, backend = device_backend
    values, offsets = make_values([2, 3], 2, device=device)
    weights = [w.requires_grad_() for w in layer_weights(cell, 2, 3, device=device)]
    states = initial_states(cell, 2, 3, device=device)

    def layer(*w):
        return run_layer(cell, values, offsets, w, states, False, backend)[0]

    if backend == "reference":
        assert torch.autograd.gradgradcheck(layer, weights)
    else:
        out = layer(*weights)
        (grad,) = torch.autograd.grad(out.sum(), weights[1], create_graph=True)
        with pytest.raises(RuntimeError, match="do not support double backward; use backend='reference'"):
            grad.sum().backward()


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("hidden", [1, 17, 128])
def test_float32(device_backend, cell, hidden):
    """float32: within 1e-5 of the reference on identical float32 inputs, and no further
    from the float64 truth than twice PyTorch's own float32 computation."""
    device, backend = device_backend
    lengths = [5, 0, 12, 1]
    values, offsets = make_values(lengths, 4, device=device)
    weights = layer_weights(cell, 4, hidden, device=device)
    states = initial_states(cell, 4, hidden, device=device)
    single = [values.float(), [w.float() for w in weights], [s.float() for s in states]]
    ours = run_layer(cell, single[0], offsets, single[1], single[2], False, backend)
    assert_all_close(ours, run_layer(cell, single[0], offsets, single[1], single[2], False, "reference"),
                     rtol=1e-5, atol=1e-5)
    truth = per_sequence_reference(cell, values, offsets, weights, states, False)
    pytorch = per_sequence_reference(cell, single[0], offsets, single[1], single[2], False)
    for mine, theirs, exact in zip(ours, pytorch, truth):
        assert (mine.double() - exact).abs().max() <= 2 * (theirs.double() - exact).abs().max() + 1e-7


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("hidden", [256, 512])
def test_large_hidden(kernel_backend, cell, hidden):
    device, backend = kernel_backend
    values, offsets = make_values([3, 0, 2], 8, device=device)
    weights = layer_weights(cell, 8, hidden, device=device, bias=False)
    states = initial_states(cell, 3, hidden, device=device)
    ours = run_layer(cell, values, offsets, weights, states, True, backend)
    expected = per_sequence_reference(cell, values, offsets, weights, states, True)
    assert_all_close(ours, expected, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("cell", CELLS)
def test_no_bias_no_state_int32_offsets_noncontiguous(device_backend, cell):
    device, backend = device_backend
    lengths = [3, 1, 0, 4]
    wide = torch.randn(8, 6, dtype=torch.float64, device=device)
    values = wide[:, ::2]  # strided rows
    offsets32 = offsets_of(lengths, device, torch.int32)
    weights = layer_weights(cell, 3, 4, device=device, bias=False)
    ours = run_layer(cell, values, offsets32, weights, [], False, backend)
    zeros = initial_states(cell, 4, 4, device=device)
    zeros = [torch.zeros_like(z) for z in zeros]
    expected = per_sequence_reference(cell, values.contiguous(), offsets32.long(), weights, zeros, False)
    assert_all_close(ours, expected, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("cell", CELLS)
def test_deterministic(kernel_backend, cell):
    device, backend = kernel_backend
    values, offsets = make_values([5, 2, 7], 3, dtype=torch.float32, device=device)
    weights = [w.requires_grad_() for w in layer_weights(cell, 3, 6, dtype=torch.float32, device=device)]
    runs = []
    for _ in range(2):
        outputs = run_layer(cell, values, offsets, weights, [], False, backend)
        runs.append([*outputs, *torch.autograd.grad(outputs[0].sum(), weights)])
    for first, second in zip(*runs):
        assert torch.equal(first, second)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@settings(max_examples=20, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 6), min_size=1, max_size=5),
    input_size=st.integers(1, 5),
    hidden=st.integers(1, 9),
    reverse=st.booleans(),
)
def test_fuzz_against_per_sequence(cell, dtype, lengths, input_size, hidden, reverse):
    from conftest import DEVICE_BACKENDS

    for device, backend in DEVICE_BACKENDS:
        values, offsets = make_values(lengths, input_size, dtype=dtype, device=device)
        weights = layer_weights(cell, input_size, hidden, dtype=dtype, device=device)
        states = initial_states(cell, len(lengths), hidden, dtype=dtype, device=device)
        ours = run_layer(cell, values, offsets, weights, states, reverse, backend)
        expected = per_sequence_reference(cell, values, offsets, weights, states, reverse)
        if dtype == torch.float64:  # no wider truth: float64 kernels agree to ~1e-15
            assert_all_close(ours, expected, rtol=1e-7, atol=1e-10)
            continue
        # float32: against the float64 truth of the same (rounded) inputs, within twice
        # torch.nn's own float32 error.
        truth = per_sequence_reference(cell, values.double(), offsets, [w.double() for w in weights],
                                       [s.double() for s in states], reverse)
        for name, mine, theirs, exact in zip(("output", "h_n", "c_n"), ours, expected, truth):
            assert_within_twice_reference_error(mine, theirs, exact, dtype, f"{cell} {name} on {backend}")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="half precision kernels run on the GPU")
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_half_precision_within_twice_pytorch_error(cell, dtype, backend):
    lengths = [17, 5, 30, 9]
    values, offsets = make_values(lengths, 16, device="cuda")
    weights = layer_weights(cell, 16, 64, device="cuda")
    states = initial_states(cell, 4, 64, device="cuda")
    exact = per_sequence_reference(cell, values, offsets, weights, states, False)
    ours = run_layer(cell, values.to(dtype), offsets, [w.to(dtype) for w in weights], [s.to(dtype) for s in states],
                     False, backend)
    pytorch = per_sequence_reference(cell, values.to(dtype), offsets, [w.to(dtype) for w in weights],
                                     [s.to(dtype) for s in states], False)
    for mine, theirs, truth in zip(ours, pytorch, exact):
        our_error = (mine.double() - truth).abs().max().item()
        their_error = (theirs.double() - truth).abs().max().item()
        assert our_error <= 2 * their_error + 1e-6, (our_error, their_error)


@pytest.mark.parametrize("cell", CELLS)
def test_non_contiguous_output_gradient(kernel_backend, cell):
    device, backend = kernel_backend
    values, offsets = make_values([4, 0, 6], 3, device=device)
    weights = [w.requires_grad_() for w in layer_weights(cell, 3, 5, device=device)]
    grad = torch.randn(5, 10, dtype=torch.float64, device=device).t()  # [L, H], column-major
    results = []
    for name in ("reference", backend):
        output = run_layer(cell, values, offsets, weights, [], False, name)[0]
        results.append(torch.autograd.grad(output, weights, grad_outputs=grad))
    assert_all_close(results[1], results[0], rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("reverse", [False, True])
def test_relu_gradient_passes_through_nan_as_torch(kernel_backend, reverse):
    # torch.relu's backward blocks only h <= 0: where h is NaN the gradient passes.
    device, backend = kernel_backend
    values, offsets = make_values([3, 2], 2, device=device)
    values[1, 0] = float("nan")
    weights = layer_weights("rnn_relu", 2, 4, device=device)
    upstream = torch.zeros(5, 4, dtype=torch.float64, device=device)
    upstream[1] = torch.linspace(-1, 1, 4, dtype=torch.float64)
    results = []
    for name in ("reference", backend):
        leaves = [t.detach().clone().requires_grad_() for t in [values, *weights]]
        output, _ = run_layer("rnn_relu", leaves[0], offsets, leaves[1:], [], reverse, name)
        results.append([output, *torch.autograd.grad(output, leaves, upstream)])
    assert results[1][1][1].isnan().sum() == 0, "the NaN token's own input gradient is finite"
    for actual, expected in zip(results[1], results[0]):
        torch.testing.assert_close(actual, expected, rtol=1e-7, atol=1e-10, equal_nan=True)


@pytest.mark.parametrize("cell", CELLS)
def test_raw_op_states_in_any_layout(kernel_backend, cell):
    # The ops' final states and initial-state gradients come back row-major whatever layout
    # the initial states arrive in (a transposed view here).
    import torch.nn.functional as F

    device, backend = kernel_backend
    suffix = "_triton" if backend == "triton" else ""
    values, offsets = make_values([3, 0, 2], 3, device=device)
    w_ih, w_hh, b_ih, b_hh = layer_weights(cell, 3, 4, device=device)
    gates_x = F.linear(values, w_ih)
    transposed = [s.t().contiguous().t() for s in initial_states(cell, 3, 4, device=device)]
    if cell == "lstm":
        name, head, tail = "lstm_recurrence", (gates_x, offsets, w_hh), (False, True)
    elif cell == "gru":
        name, head, tail = "gru_recurrence", (gates_x, offsets, w_hh, b_hh), (False, True)
    else:
        name, head, tail = "rnn_recurrence", (gates_x, offsets, w_hh), (int(cell == "rnn_relu"), False)
    op = getattr(torch.ops.padkern, name + suffix)
    given = op(*head, *transposed, *tail)
    row_major = op(*head, *[s.contiguous() for s in transposed], *tail)
    for a, e in zip(given, row_major):
        assert torch.equal(a, e)
    # The zero-length sequence returns its initial states unchanged.
    finals = given[1:3] if cell == "lstm" else given[1:2]
    for final, initial in zip(finals, transposed):
        assert torch.equal(final[1], initial[1])


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("reverse", [False, True])
def test_float32_across_step_gemm_blocks(cell, reverse):
    """Sizes where the CPU steps' GEMMs (csrc/cpu/step_gemm.h) span two 64-row blocks and end
    in a partial 128-column panel: 100 sequences, eleven empty, H = 130 (G H = 130..520). The
    forward and every weight gradient no further from the float64 truth than twice the
    reference's float32 computation (plain PyTorch)."""
    lengths = [(7 * i) % 9 for i in range(100)]
    values, offsets = make_values(lengths, 16, device="cpu")
    weights = layer_weights(cell, 16, 130, device="cpu")
    states = initial_states(cell, len(lengths), 130, device="cpu")

    def outputs_and_gradients(run, dtype):
        leaves = [w.to(dtype).requires_grad_() for w in weights]
        outputs = run(values.to(dtype), leaves, [s.to(dtype) for s in states])
        return [*outputs, *torch.autograd.grad(sum(o.sum() for o in outputs), leaves)]

    ours = outputs_and_gradients(lambda v, w, s: run_layer(cell, v, offsets, w, s, reverse, "cpu"), torch.float32)
    reference = lambda v, w, s: run_layer(cell, v, offsets, w, s, reverse, "reference")  # noqa: E731
    pytorch = outputs_and_gradients(reference, torch.float32)
    truth = outputs_and_gradients(reference, torch.float64)
    for index, (mine, theirs, exact) in enumerate(zip(ours, pytorch, truth)):
        assert_within_twice_reference_error(mine, theirs, exact, torch.float32, f"{cell} result {index}")
