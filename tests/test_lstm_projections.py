"""LSTM with projections (torch.nn.LSTM's proj_size): padkern.ops.lstm(w_hr=...) and
padkern.nn.LSTM(proj_size=...) on every backend, against torch.nn.LSTM (each sequence
alone, and packed) and the reference path, forward and backward."""
import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import padkern
from padkern import Ragged
from ragged_cases import EDGE_LENGTHS
from rnn_cases import initial_states, layer_weights, make_values

INPUT, HIDDEN, PROJ = 3, 5, 2


def projected_weights(device, dtype=torch.float64, bias=True, seed=0):
    """[w_ih [4H, K], w_hh [4H, P], b_ih, b_hh], w_hr [P, H]: torch.nn's initialisation range."""
    w_ih, w_hh_full, b_ih, b_hh = layer_weights("lstm", INPUT, HIDDEN, dtype=dtype, device=device, bias=bias, seed=seed)
    generator = torch.Generator().manual_seed(seed + 7)
    bound = HIDDEN ** -0.5
    w_hh = w_hh_full[:, :PROJ].contiguous()
    w_hr = ((torch.rand(PROJ, HIDDEN, generator=generator, dtype=torch.float64) * 2 - 1) * bound).to(dtype).to(device)
    return [w_ih, w_hh, b_ih, b_hh], w_hr


def states(batch, device, dtype=torch.float64):
    h0 = initial_states("lstm", batch, PROJ, dtype=dtype, device=device, seed=1)[0]
    c0 = initial_states("lstm", batch, HIDDEN, dtype=dtype, device=device, seed=2)[0]
    return [h0, c0]


def run(values, offsets, weights, w_hr, initial, reverse, backend):
    return padkern.ops.lstm(values, offsets, *weights, *initial, w_hr=w_hr, reverse=reverse, backend=backend)


def per_sequence_torch(values, offsets, weights, w_hr, initial, reverse):
    """Each sequence alone through torch.nn.LSTM(proj_size=P); an empty one returns h0, c0."""
    module = torch.nn.LSTM(INPUT, HIDDEN, proj_size=PROJ, bias=weights[2] is not None).to(values)
    with torch.no_grad():
        for name, weight in zip(("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"), weights):
            if weight is not None:
                getattr(module, name).copy_(weight)
        module.weight_hr_l0.copy_(w_hr)
    outputs, h_n, c_n = [], [], []
    bounds = offsets.tolist()
    for b in range(len(bounds) - 1):
        piece = values[bounds[b]:bounds[b + 1]]
        if piece.shape[0] == 0:
            h_n.append(initial[0][b])
            c_n.append(initial[1][b])
            continue
        out, (h, c) = module(piece.flip(0) if reverse else piece, (initial[0][b][None], initial[1][b][None]))
        outputs.append(out.flip(0) if reverse else out)
        h_n.append(h[0])
        c_n.append(c[0])
    output = torch.cat(outputs) if outputs else values.new_zeros((0, PROJ))
    return output, torch.stack(h_n), torch.stack(c_n)


def assert_all_close(actual, expected, rtol=1e-7, atol=1e-10):
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=rtol, atol=atol)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("case", ["mixed_unsorted", "all_empty", "first_empty", "every_fifth_empty", "single_sequence",
                                  "no_tokens_single"])
def test_matches_torch_per_sequence(device_backend, case, reverse):
    device, backend = device_backend
    lengths = EDGE_LENGTHS[case]
    values, offsets = make_values(lengths, INPUT, device=device)
    weights, w_hr = projected_weights(device)
    initial = states(len(lengths), device)
    ours = run(values, offsets, weights, w_hr, initial, reverse, backend)
    assert ours.output.shape == (values.shape[0], PROJ) and ours.h_n.shape == (len(lengths), PROJ)
    assert_all_close(ours, per_sequence_torch(values, offsets, weights, w_hr, initial, reverse))


@pytest.mark.parametrize("reverse", [False, True])
def test_gradients_match_reference(kernel_backend, reverse):
    device, backend = kernel_backend
    values, offsets = make_values([4, 0, 6, 1], INPUT, device=device)
    weights, w_hr = projected_weights(device)
    initial = states(4, device)
    leaves = [t.requires_grad_() for t in [values, *weights, w_hr, *initial]]
    results = {}
    for name in ("reference", backend):
        outputs = run(values, offsets, weights, w_hr, initial, reverse, name)
        loss = sum((out * torch.linspace(-1, 2, out.numel(), dtype=out.dtype, device=device).view_as(out)).sum()
                   for out in outputs)
        results[name] = [*outputs, *torch.autograd.grad(loss, leaves)]
    assert_all_close(results[backend], results["reference"])


def test_gradcheck(device_backend):
    device, backend = device_backend
    values, offsets = make_values([2, 0, 3], INPUT, device=device)
    weights, w_hr = projected_weights(device, bias=False)
    initial = states(3, device)
    leaves = [t.requires_grad_() for t in [values, weights[0], weights[1], w_hr, *initial]]

    def layer(values, w_ih, w_hh, w_hr, h0, c0):
        return run(values, offsets, [w_ih, w_hh, None, None], w_hr, [h0, c0], True, backend)

    assert torch.autograd.gradcheck(layer, leaves)


def test_float32_within_twice_torch_error(device_backend):
    device, backend = device_backend
    values, offsets = make_values([7, 0, 12, 1], INPUT, device=device)
    weights, w_hr = projected_weights(device)
    initial = states(4, device)
    single = lambda tensors: [t.float() for t in tensors]  # noqa: E731
    ours = run(values.float(), offsets, single(weights), w_hr.float(), single(initial), False, backend)
    truth = per_sequence_torch(values, offsets, weights, w_hr, initial, False)
    pytorch = per_sequence_torch(values.float(), offsets, single(weights), w_hr.float(), single(initial), False)
    for mine, theirs, exact in zip(ours, pytorch, truth):
        assert (mine.double() - exact).abs().max() <= 2 * (theirs.double() - exact).abs().max() + 1e-7


def test_empty_sequence_state_reaches_no_other_sequence(device_backend):
    # An empty sequence's h0 is returned as its h_n and enters no other sequence's rows,
    # NaN included, forward and backward.
    device, backend = device_backend
    values, offsets = make_values([3, 0, 2], INPUT, device=device)
    weights, w_hr = projected_weights(device)
    initial = states(3, device)
    initial[0][1] = float("nan")
    leaves = [t.requires_grad_() for t in [values, *weights, w_hr]]
    output, h_n, c_n = run(values, offsets, weights, w_hr, initial, False, backend)
    assert output.isfinite().all() and h_n[[0, 2]].isfinite().all() and h_n[1].isnan().all()
    grads = torch.autograd.grad(output.sum() + h_n[[0, 2]].sum() + c_n.sum(), leaves)
    assert all(g.isfinite().all() for g in grads)


# ----- padkern.nn.LSTM(proj_size=...) ---------------------------------------------------------
MODULE_CONFIGS = list(itertools.product([1, 2], [False, True], [True, False], [False, True]))


@pytest.mark.parametrize("layers,bidirectional,bias,batch_first", MODULE_CONFIGS,
                         ids=lambda v: str(v))
def test_module_matches_torch_packed(device_backend, layers, bidirectional, bias, batch_first):
    device, backend = device_backend
    kwargs = dict(num_layers=layers, bias=bias, batch_first=batch_first, bidirectional=bidirectional, proj_size=PROJ)
    torch.manual_seed(0)
    reference = torch.nn.LSTM(INPUT, HIDDEN, **kwargs).double().to(device)
    ours = padkern.nn.LSTM(INPUT, HIDDEN, **kwargs, backend=backend).double().to(device)
    ours.load_state_dict(reference.state_dict())
    lengths = torch.tensor([3, 7, 1, 5])
    x = torch.randn(4, 7, INPUT, dtype=torch.float64, device=device)
    if not batch_first:
        x = x.transpose(0, 1).contiguous()
    directions = 2 if bidirectional else 1
    hx = (torch.randn(layers * directions, 4, PROJ, dtype=torch.float64, device=device),
          torch.randn(layers * directions, 4, HIDDEN, dtype=torch.float64, device=device))
    results = []
    for module, packed_input in ((reference, True), (ours, False)):
        x_leaf = x.clone().requires_grad_()
        hx_leaves = tuple(h.clone().requires_grad_() for h in hx)
        if packed_input:
            packed = pack_padded_sequence(x_leaf, lengths, batch_first=batch_first, enforce_sorted=False)
            out, (h_n, c_n) = module(packed, hx_leaves)
            out, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=7)
        else:
            out, (h_n, c_n) = module(x_leaf, hx_leaves, lengths=lengths)
        weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=device).view_as(out)
        loss = (out * weight).sum() + (2 * h_n).sum() + (3 * c_n).sum()
        results.append([out, h_n, c_n, *torch.autograd.grad(loss, [x_leaf, *module.parameters(), *hx_leaves])])
    assert results[1][0].shape[-1] == PROJ * directions
    for actual, expected in zip(results[1], results[0]):
        torch.testing.assert_close(actual, expected, rtol=1e-7, atol=1e-10)


def test_module_parameters_and_views_match_torch():
    reference = torch.nn.LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True, proj_size=PROJ)
    ours = padkern.nn.LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True, proj_size=PROJ)
    assert list(ours.state_dict()) == list(reference.state_dict())
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == \
        [(k, v.shape) for k, v in reference.state_dict().items()]
    assert ours._flat_weights_names == reference._flat_weights_names
    assert [[w.shape for w in cell] for cell in ours.all_weights] == \
        [[w.shape for w in cell] for cell in reference.all_weights]
    assert "proj_size=2" in repr(ours)
    # Positional arguments in torch.nn.LSTM's order: proj_size after bidirectional.
    positional = padkern.nn.LSTM(INPUT, HIDDEN, 1, True, False, 0.0, False, PROJ)
    assert positional.proj_size == PROJ and positional.weight_hr_l0.shape == (PROJ, HIDDEN)


def test_module_unbatched_input_matches_torch():
    torch.manual_seed(0)
    reference = torch.nn.LSTM(INPUT, HIDDEN, num_layers=2, proj_size=PROJ).double()
    ours = padkern.nn.LSTM(INPUT, HIDDEN, num_layers=2, proj_size=PROJ).double()
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(6, INPUT, dtype=torch.float64)
    hx = (torch.randn(2, PROJ, dtype=torch.float64), torch.randn(2, HIDDEN, dtype=torch.float64))
    torch.testing.assert_close(ours(x, hx), reference(x, hx))


def test_module_errors_match_torch():
    for kwargs, message in (({"proj_size": 5}, "proj_size has to be smaller than hidden_size"),
                            ({"proj_size": -1}, "proj_size should be a positive integer or zero")):
        for module in (torch.nn.LSTM, padkern.nn.LSTM):
            with pytest.raises(ValueError, match=message):
                module(INPUT, HIDDEN, **kwargs)
    for module in (torch.nn.GRU, padkern.nn.GRU, torch.nn.RNN, padkern.nn.RNN):
        with pytest.raises(ValueError, match="proj_size argument is only supported for LSTM, not RNN or GRU"):
            module(INPUT, HIDDEN, proj_size=2)
    reference = torch.nn.LSTM(INPUT, HIDDEN, proj_size=PROJ)
    ours = padkern.nn.LSTM(INPUT, HIDDEN, proj_size=PROJ)
    x = torch.zeros(4, 3, INPUT)
    for hx in ((torch.zeros(1, 3, HIDDEN), torch.zeros(1, 3, HIDDEN)),  # h with hidden_size columns
               (torch.zeros(1, 3, PROJ), torch.zeros(1, 3, PROJ))):  # c with proj_size columns
        with pytest.raises(RuntimeError) as torch_error:
            reference(x, hx)
        with pytest.raises(RuntimeError, match=str(torch_error.value).split(",")[0].replace("[", r"\[")
                           .replace("(", r"\(").replace(")", r"\)").replace("]", r"\]")):
            ours(x, hx)


def test_op_checks_projection_shapes():
    values, offsets = make_values([2, 3], INPUT)
    weights, w_hr = projected_weights("cpu")
    with pytest.raises(ValueError, match=r"w_hh must have shape \(20, 2\), got \(20, 5\)"):
        padkern.ops.lstm(values, offsets, weights[0], torch.zeros(20, 5, dtype=torch.float64), w_hr=w_hr)
    with pytest.raises(ValueError, match=r"h0 must have shape \(2, 2\), got \(2, 5\)"):
        padkern.ops.lstm(values, offsets, *weights, torch.zeros(2, 5, dtype=torch.float64), w_hr=w_hr)
    with pytest.raises(ValueError, match=r"w_hr must be \[proj_size, hidden_size\] with proj_size >= 1"):
        padkern.ops.lstm(values, offsets, *weights, w_hr=w_hr[:0])


def test_compile_fullgraph():
    torch._dynamo.reset()
    model = padkern.nn.LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True, proj_size=PROJ).double()
    ragged = Ragged.from_list([torch.randn(n, INPUT, dtype=torch.float64) for n in (4, 0, 6)])
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    expected, (h_n, c_n) = model(ragged)
    actual, (h_c, c_c) = compiled(ragged)
    torch.testing.assert_close((actual.values, h_c, c_c), (expected.values, h_n, c_n))
    (h_c.sum() + actual.values.sum()).backward()


@pytest.mark.parametrize("variable_len", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_torch_nn_cpu_vs_cudnn_case_with_projections(device_backend, bidirectional, variable_len):
    # test_nn's _test_RNN_cpu_vs_cudnn with proj_size, at its tolerance (float32, 5e-5).
    device, backend = device_backend
    input_size, hidden_size, proj_size, num_layers, seq_length, batch = 10, 6, 4, 2, 7, 6
    directions = 2 if bidirectional else 1
    torch.manual_seed(1)
    input_val = torch.randn(seq_length, batch, input_size, device=device)
    grad_output = torch.randn(seq_length, batch, proj_size * directions, device=device)
    hx_val = torch.randn(num_layers * directions, batch, proj_size, device=device)
    cx_val = torch.randn(num_layers * directions, batch, hidden_size, device=device)
    grad_hy = torch.randn(num_layers * directions, batch, proj_size, device=device)
    grad_cy = torch.randn(num_layers * directions, batch, hidden_size, device=device)
    if variable_len:
        lengths = [7, 5, 5, 2, 1, 1]
        input_val = pack_padded_sequence(input_val, lengths)
        grad_output = pack_padded_sequence(grad_output, lengths).data
    kwargs = dict(num_layers=num_layers, bidirectional=bidirectional, proj_size=proj_size)
    reference = torch.nn.LSTM(input_size, hidden_size, **kwargs).to(device)
    ours = padkern.nn.LSTM(input_size, hidden_size, **kwargs, backend=backend).to(device)
    ours.load_state_dict(reference.state_dict())

    def forward_backward(rnn):
        if isinstance(input_val, PackedSequence):
            data = input_val.data.clone().requires_grad_()
            given, leaf = PackedSequence(data, input_val.batch_sizes), data
        else:
            given = leaf = input_val.clone().requires_grad_()
        hx, cx = hx_val.clone().requires_grad_(), cx_val.clone().requires_grad_()
        output, (hy, cy) = rnn(given, (hx, cx))
        output = output.data if isinstance(output, PackedSequence) else output
        torch.autograd.backward([output, hy, cy], [grad_output, grad_hy, grad_cy])
        return [output, hy, cy, leaf.grad, hx.grad, cx.grad, *[p.grad for p in rnn.parameters()]]

    for actual, expected in zip(forward_backward(ours), forward_backward(reference)):
        torch.testing.assert_close(actual, expected, rtol=5e-5, atol=5e-5)


@pytest.mark.parametrize("device,dtype", [("cpu", torch.bfloat16)] + (
    [("cuda", torch.float16), ("cuda", torch.bfloat16)] if torch.cuda.is_available() else []))
def test_autocast_matches_torch_nn(device, dtype):
    # Under autocast torch.nn.LSTM(proj_size) returns output and h_n in the autocast dtype
    # and c_n as its own computation leaves it; padkern gives the same dtypes, within twice
    # torch's error against float64.
    torch.manual_seed(0)
    reference = torch.nn.LSTM(INPUT, 8, proj_size=PROJ, num_layers=2, bidirectional=True).to(device)
    ours = padkern.nn.LSTM(INPUT, 8, proj_size=PROJ, num_layers=2, bidirectional=True).to(device)
    ours.load_state_dict(reference.state_dict())
    exact_module = torch.nn.LSTM(INPUT, 8, proj_size=PROJ, num_layers=2, bidirectional=True).to(device).double()
    exact_module.load_state_dict(reference.state_dict())
    lengths = torch.tensor([9, 4, 7, 1])
    x = torch.randn(9, 4, INPUT, device=device)
    exact_out, (exact_h, _) = exact_module(pack_padded_sequence(x.double(), lengths, enforce_sorted=False))
    with torch.autocast(device, dtype=dtype):
        theirs, (their_h, their_c) = reference(pack_padded_sequence(x, lengths, enforce_sorted=False))
        mine, (my_h, my_c) = ours(pack_padded_sequence(x, lengths, enforce_sorted=False))
    assert (mine.data.dtype, my_h.dtype, my_c.dtype) == (theirs.data.dtype, their_h.dtype, their_c.dtype)
    for ours_value, torch_value, exact in ((mine.data, theirs.data, exact_out.data), (my_h, their_h, exact_h)):
        our_error = (ours_value.double() - exact).abs().max().item()
        torch_error = (torch_value.double() - exact).abs().max().item()
        assert our_error <= 2 * torch_error + 1e-5, (our_error, torch_error)


def test_compile_fullgraph_padded_input():
    # A padded input's token count is data: nothing in the projection may branch on it.
    torch._dynamo.reset()
    model = padkern.nn.LSTM(INPUT, HIDDEN, batch_first=True, proj_size=PROJ).double()
    x = torch.randn(3, 5, INPUT, dtype=torch.float64)
    lengths = torch.tensor([5, 0, 2])
    with torch._dynamo.config.patch(capture_scalar_outputs=True):
        compiled = torch.compile(lambda x, lengths: model(x, lengths=lengths), fullgraph=True, backend="aot_eager")
        actual = compiled(x, lengths)
    torch.testing.assert_close(actual, model(x, lengths=lengths))


# ----- the CPU kernel (padkern::lstm_projected_recurrence) -------------------------------------
def cpu_kernel_case(lengths, hidden, projection, dtype=torch.float64, seed=0):
    """gates_x [L, 4H], offsets, w_hh [4H, P], w_hr [P, H], h0 [B, P], c0 [B, H]."""
    generator = torch.Generator().manual_seed(seed)

    def make(*shape, scale=hidden ** -0.5):
        return ((torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1) * scale).to(dtype)

    values, offsets = make_values(lengths, 4 * hidden, dtype=dtype, seed=seed)
    batch = len(lengths)
    return (values, offsets, make(4 * hidden, projection), make(projection, hidden), make(batch, projection, scale=1),
            make(batch, hidden, scale=1))


def cpu_kernel_backward_args(forward_args, reverse, seed=3):
    """The backward op's arguments: output gradients and what a saving forward returned."""
    gates_x, offsets, w_hh, w_hr, h0, c0 = forward_args
    output, h_n, c_n, gates, cell, _ = torch.ops.padkern.lstm_projected_recurrence(*forward_args, reverse, True)
    generator = torch.Generator().manual_seed(seed)
    grads = [torch.randn(t.shape, generator=generator, dtype=torch.float64).to(t.dtype) for t in (output, h_n, c_n)]
    return (*grads, gates, cell, offsets, w_hh, w_hr, c0, reverse)


@pytest.mark.parametrize("requires_grad", [False, True])
def test_cpu_kernel_opcheck(requires_grad):
    args = cpu_kernel_case([3, 0, 5, 1], 6, 4)
    leaves = [t.requires_grad_(requires_grad) if t.is_floating_point() else t for t in args]
    for reverse in (False, True):
        torch.library.opcheck(torch.ops.padkern.lstm_projected_recurrence, (*leaves, reverse, requires_grad))
        torch.library.opcheck(torch.ops.padkern.lstm_projected_recurrence_backward,
                              cpu_kernel_backward_args([t.detach() for t in args], reverse))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cpu_kernel_writes_every_output(dtype, reverse):
    # Fresh allocations filled with NaN: every output row, saved tensor and gradient is written,
    # empty sequences' states included (h_n = h0, c_n = c0; their gradients are grad_h_n, grad_c_n).
    from ragged_cases import nan_filled_allocations

    args = cpu_kernel_case([0, 7, 3, 0, 20, 1], 40, 12, dtype)
    with nan_filled_allocations():
        outputs = torch.ops.padkern.lstm_projected_recurrence(*args, reverse, True)
        backward_args = cpu_kernel_backward_args(args, reverse)
        grads = torch.ops.padkern.lstm_projected_recurrence_backward(*backward_args)
    assert all(t.isfinite().all() for t in (*outputs, *grads))
    empty = [0, 3]
    assert torch.equal(outputs[1][empty], args[4][empty]) and torch.equal(outputs[2][empty], args[5][empty])
    assert torch.equal(grads[2][empty], backward_args[1][empty])
    assert torch.equal(grads[3][empty], backward_args[2][empty])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cpu_kernel_reduced_precision_runs_in_float32(dtype):
    # float16/bfloat16 run on float32 copies: the same results as the float32 kernel on the
    # widened inputs, rounded once at the end.
    args = cpu_kernel_case([5, 0, 9], 20, 8, dtype)
    widened = [t.float() if t.is_floating_point() else t for t in args]
    for ours, wide in zip(torch.ops.padkern.lstm_projected_recurrence(*args, True, True),
                          torch.ops.padkern.lstm_projected_recurrence(*widened, True, True)):
        assert ours.dtype == dtype and torch.equal(ours, wide.to(dtype))
    backward = cpu_kernel_backward_args(args, True)
    wide_backward = [t.float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in backward]
    for ours, wide in zip(torch.ops.padkern.lstm_projected_recurrence_backward(*backward),
                          torch.ops.padkern.lstm_projected_recurrence_backward(*wide_backward)):
        assert ours.dtype == dtype and torch.equal(ours, wide.to(dtype))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("hidden, projection", [(72, 24), (150, 130)])
def test_cpu_kernel_float32_at_layer_sizes(hidden, projection, reverse):
    # The step GEMMs' 128-column panels: 4H = 288 gate columns past one, and at H = 150, P = 130
    # every product past one (the projection's P, backward's H and P); sizes not multiples of a
    # register. The op's output, states and every gradient in float32 within twice the float32
    # reference's error against float64 (each with its own rounding of the same products), plus
    # a few ulps of the largest value for an error of 0 there.
    lengths = [40, 0, 17, 33, 1, 0, 25]
    values, offsets = make_values(lengths, 16)
    w_ih = layer_weights("lstm", 16, hidden)[0]
    _, w_hh, w_hr, h0, c0 = cpu_kernel_case(lengths, hidden, projection)[1:]
    leaves64 = [t.clone().requires_grad_() for t in (values, w_ih, w_hh, w_hr, h0, c0)]

    def forward_backward(leaves, backend):
        values, w_ih, w_hh, w_hr, h0, c0 = leaves
        outputs = padkern.ops.lstm(values, offsets, w_ih, w_hh, None, None, h0, c0, w_hr=w_hr, reverse=reverse,
                                   backend=backend)
        loss = sum((out * torch.linspace(-1, 2, out.numel(), dtype=out.dtype).view_as(out)).sum() for out in outputs)
        return [o.detach() for o in outputs] + list(torch.autograd.grad(loss, leaves))

    truth = forward_backward(leaves64, "reference")
    leaves32 = [t.detach().float().requires_grad_() for t in leaves64]
    ours, yardstick = forward_backward(leaves32, "cpu"), forward_backward(leaves32, "reference")
    eps = torch.finfo(torch.float32).eps
    for index, (mine, theirs, exact) in enumerate(zip(ours, yardstick, truth)):
        allowed = 2 * (theirs.double() - exact).abs().max() + 4 * eps * exact.abs().max()
        assert (mine.double() - exact).abs().max() <= allowed, index


def test_cpu_kernel_rows_in_parallel():
    # At H = 512 a task takes 8 sequences' gate loops, so 12 running sequences split over the
    # threads (two at least here): float64 forward and gradients as the reference's.
    threads = torch.get_num_threads()
    torch.set_num_threads(max(threads, 2))
    try:
        lengths = [6, 0, 3, 5, 6, 1, 2, 6, 0, 4, 5, 3, 6, 2]
        values, offsets = make_values(lengths, 8)
        w_ih = layer_weights("lstm", 8, 512)[0]
        _, w_hh, w_hr, h0, c0 = cpu_kernel_case(lengths, 512, 64)[1:]
        leaves = [t.requires_grad_() for t in (values, w_ih, w_hh, w_hr, h0, c0)]
        results = {}
        for backend in ("reference", "cpu"):
            outputs = padkern.ops.lstm(values, offsets, w_ih, w_hh, None, None, h0, c0, w_hr=w_hr, reverse=True,
                                       backend=backend)
            loss = sum((out * torch.linspace(-1, 2, out.numel(), dtype=out.dtype).view_as(out)).sum()
                       for out in outputs)
            results[backend] = [o.detach() for o in outputs] + list(torch.autograd.grad(loss, leaves))
        assert_all_close(results["cpu"], results["reference"])
    finally:
        torch.set_num_threads(threads)


@settings(max_examples=20, deadline=None)
@given(lengths=st.lists(st.integers(0, 6), min_size=1, max_size=5), hidden=st.integers(2, 9), data=st.data(),
       reverse=st.booleans())
def test_fuzz_against_reference(lengths, hidden, data, reverse):
    # Every backend (the CPU's own kernel, the composition elsewhere) against the reference,
    # float64 forward and every gradient, on drawn lengths (empty sequences included) and sizes.
    from conftest import DEVICE_BACKENDS

    projection = data.draw(st.integers(1, hidden - 1), label="projection")
    for device, backend in DEVICE_BACKENDS:
        values, offsets = make_values(lengths, INPUT, device=device)
        w_ih = layer_weights("lstm", INPUT, hidden, device=device)[0]
        w_hh, w_hr, h0, c0 = (t.to(device) for t in cpu_kernel_case(lengths, hidden, projection)[2:])
        leaves = [t.clone().requires_grad_() for t in (values, w_ih, w_hh, w_hr, h0, c0)]
        results = {}
        for name in ("reference", backend):
            outputs = padkern.ops.lstm(leaves[0], offsets, leaves[1], leaves[2], None, None, leaves[4], leaves[5],
                                       w_hr=leaves[3], reverse=reverse, backend=name)
            loss = sum((out * torch.linspace(-1, 2, out.numel(), dtype=out.dtype, device=device).view_as(out)).sum()
                       for out in outputs)
            results[name] = [o.detach() for o in outputs] + list(torch.autograd.grad(loss, leaves))
        assert_all_close(results[backend], results["reference"])


def test_cpu_kernel_checks_shapes():
    gates_x, offsets, w_hh, w_hr, h0, c0 = cpu_kernel_case([2, 3], 6, 4)
    op = torch.ops.padkern.lstm_projected_recurrence
    with pytest.raises(RuntimeError, match="w_hh"):
        op(gates_x, offsets, w_hh[:, :3], w_hr, h0, c0, False, False)
    with pytest.raises(RuntimeError, match="h0"):
        op(gates_x, offsets, w_hh, w_hr, c0, c0, False, False)
    with pytest.raises(RuntimeError, match="w_hr must be"):
        op(gates_x, offsets, w_hh, w_hr[0], h0, c0, False, False)
    with pytest.raises(RuntimeError, match="gates_x"):
        op(gates_x[:, 1:], offsets, w_hh, w_hr, h0, c0, False, False)
