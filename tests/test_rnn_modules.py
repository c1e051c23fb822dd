"""padkern.nn.LSTM / GRU / RNN against torch.nn.LSTM / GRU / RNN on pack_padded_sequence
(enforce_sorted=False), float64, outputs and every gradient."""
import itertools
import os

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import padkern
from padkern import Ragged
from rnn_cases import padkern_module, torch_module

CONFIGS = list(itertools.product(["lstm", "gru"], [1, 3], [False, True], [True, False], [False, True], [True, False]))
# The plain RNN shares the module code above its cell: stacked, with initial states.
CONFIGS += list(itertools.product(["rnn_tanh", "rnn_relu"], [3], [False, True], [True, False], [True], [True, False]))


def config_id(config):
    cell, layers, bidirectional, bias, with_hx, batch_first = config
    return (f"{cell}-L{layers}-{'bi' if bidirectional else 'uni'}-{'bias' if bias else 'nobias'}-"
            f"{'hx' if with_hx else 'nohx'}-{'bf' if batch_first else 'tf'}")


def module_pair(cell, layers, bidirectional, bias, batch_first, device, backend):
    kwargs = dict(num_layers=layers, bias=bias, batch_first=batch_first, bidirectional=bidirectional)
    torch.manual_seed(0)
    reference = torch_module(cell, 3, 4, **kwargs).double().to(device)
    ours = padkern_module(cell, 3, 4, **kwargs, backend=backend).double().to(device)
    ours.load_state_dict(reference.state_dict())
    return reference, ours


def flatten_states(states):
    return list(states) if isinstance(states, tuple) else [states]


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_matches_torch_packed(device_backend, config):
    device, backend = device_backend
    cell, layers, bidirectional, bias, with_hx, batch_first = config
    reference, ours = module_pair(cell, layers, bidirectional, bias, batch_first, device, backend)
    lengths = torch.tensor([3, 7, 1, 5])  # unsorted
    x = torch.randn(4, 7, 3, dtype=torch.float64, device=device)
    if not batch_first:
        x = x.transpose(0, 1).contiguous()
    directions = 2 if bidirectional else 1
    hx = None
    if with_hx:
        hx = tuple(torch.randn(layers * directions, 4, 4, dtype=torch.float64, device=device)
                   for _ in range(2 if cell == "lstm" else 1))
        hx = hx if cell == "lstm" else hx[0]

    results = []
    for module, packed_input in ((reference, True), (ours, False)):
        x_leaf = x.clone().requires_grad_()
        hx_leaves = None if hx is None else tuple(h.clone().requires_grad_() for h in flatten_states(hx))
        hx_arg = None if hx_leaves is None else (hx_leaves if cell == "lstm" else hx_leaves[0])
        if packed_input:
            packed = pack_padded_sequence(x_leaf, lengths, batch_first=batch_first, enforce_sorted=False)
            out, states = module(packed, hx_arg)
            out, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=7)
        else:
            out, states = module(x_leaf, hx_arg, lengths=lengths)
        states = flatten_states(states)
        weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=device).view_as(out)
        loss = (out * weight).sum() + sum((s * (k + 2)).sum() for k, s in enumerate(states))
        leaves = [x_leaf, *module.parameters(), *(hx_leaves or ())]
        results.append([out, *states, *torch.autograd.grad(loss, leaves)])
    for expected, actual in zip(*results):
        torch.testing.assert_close(actual, expected, rtol=1e-7, atol=1e-10)


def test_packed_in_packed_out(device_backend):
    device, backend = device_backend
    reference, ours = module_pair("lstm", 2, True, True, True, device, backend)
    x = torch.randn(5, 6, 3, dtype=torch.float64, device=device)
    packed = pack_padded_sequence(x, torch.tensor([6, 2, 4, 1, 3]), batch_first=True, enforce_sorted=False)
    expected, (h, c) = reference(packed)
    actual, (h2, c2) = ours(packed)
    assert isinstance(actual, torch.nn.utils.rnn.PackedSequence)
    for field in ("data", "batch_sizes", "sorted_indices", "unsorted_indices"):
        torch.testing.assert_close(getattr(actual, field), getattr(expected, field), rtol=1e-7, atol=1e-10)
    torch.testing.assert_close((h2, c2), (h, c), rtol=1e-7, atol=1e-10)


def test_ragged_in_ragged_out_with_empty_sequences(device_backend):
    device, backend = device_backend
    _, ours = module_pair("gru", 2, True, True, True, device, backend)
    pieces = [torch.randn(n, 3, dtype=torch.float64, device=device) for n in (0, 4, 0, 2)]
    output, h_n = ours(Ragged.from_list(pieces))
    assert isinstance(output, Ragged) and output.values.shape == (6, 8)
    # Each sequence alone gives the same rows; an empty one leaves its state at zero.
    for b, piece in enumerate(pieces):
        if piece.shape[0] == 0:
            assert torch.equal(h_n[:, b], torch.zeros_like(h_n[:, b]))
            continue
        alone, h_alone = ours(Ragged.from_list([piece]))
        torch.testing.assert_close(output.values[output.offsets[b]:output.offsets[b + 1]], alone.values)
        torch.testing.assert_close(h_n[:, b], h_alone[:, 0])


def test_padded_outputs_and_gradients_are_zero_at_padding(device_backend):
    device, backend = device_backend
    _, ours = module_pair("lstm", 1, False, True, True, device, backend)
    x = torch.randn(3, 5, 3, dtype=torch.float64, device=device, requires_grad=True)
    lengths = torch.tensor([5, 0, 2])
    out, _ = ours(x, lengths=lengths)
    pad = ~(torch.arange(5)[None, :] < lengths[:, None]).to(device)
    assert torch.equal(out[pad], torch.zeros_like(out[pad]))
    out.sum().backward()
    assert torch.equal(x.grad[pad], torch.zeros_like(x.grad[pad]))


def test_state_dict_round_trip():
    reference = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    ours = padkern.nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    ours.load_state_dict(reference.state_dict())
    reference.load_state_dict(ours.state_dict())
    assert list(ours.state_dict()) == list(reference.state_dict())


def test_dropout_between_layers_only_in_training():
    ours = padkern.nn.GRU(3, 4, num_layers=2, dropout=0.5).double()
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    ours.eval()
    first, _ = ours(x)
    second, _ = ours(x)
    assert torch.equal(first, second)
    ours.train()
    torch.manual_seed(0)
    dropped, _ = ours(x)
    assert not torch.equal(dropped, first)


def test_hx_shape_is_checked():
    ours = padkern.nn.LSTM(3, 4, num_layers=2)
    x = torch.randn(5, 2, 3)
    with pytest.raises(ValueError, match=r"hx must have shape \(2, 2, 4\), got \(7, 2, 4\)"):
        ours(x, (torch.zeros(7, 2, 4), torch.zeros(7, 2, 4)))
    with pytest.raises(ValueError, match=r"hx must hold 2 tensor\(s\), got 1"):
        ours(x, (torch.zeros(2, 2, 4),))


def test_compile_fullgraph_no_graph_break():
    torch._dynamo.reset()

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = padkern.nn.LSTM(3, 8, num_layers=2, bidirectional=True)
            self.head = torch.nn.Linear(16, 2)

        def forward(self, ragged: Ragged):
            output, (h_n, _) = self.rnn(ragged)
            return self.head(torch.cat([h_n[-2], h_n[-1]], dim=1)), output.values

    model = Classifier().double()
    ragged = Ragged.from_list([torch.randn(n, 3, dtype=torch.float64) for n in (4, 0, 6, 2)])
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    expected = model(ragged)
    actual = compiled(ragged)
    torch.testing.assert_close(actual, expected)
    actual[0].sum().backward()


def _ddp_worker(rank, world, init_file, batch, lengths, result_file):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = DistributedDataParallel(padkern.nn.LSTM(3, 5, num_layers=2).double())
    share = len(lengths) // world
    mine = slice(rank * share, (rank + 1) * share)
    x = batch[:, mine]
    out, _ = model(x, lengths=lengths[mine])
    # Sum over the whole batch, split across ranks: DDP averages, so scale by world.
    (out.sum() * world).backward()
    if rank == 0:
        torch.save([p.grad for p in model.module.parameters()], result_file)
    # Both ranks finish their collectives, then leave without tearing gloo down: its
    # teardown at interpreter exit aborted now and then ("terminate called without an
    # active exception") under load, and a finished worker has nothing left to release.
    dist.barrier()
    os._exit(0)


def test_ddp_two_processes_match_one(tmp_path):
    import torch.multiprocessing as mp

    torch.manual_seed(1)
    batch = torch.randn(6, 4, 3, dtype=torch.float64)
    lengths = torch.tensor([6, 2, 0, 5])
    result_file = str(tmp_path / "grads.pt")
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), batch, lengths, result_file), nprocs=2, join=True)
    torch.manual_seed(0)
    single = padkern.nn.LSTM(3, 5, num_layers=2).double()
    out, _ = single(batch, lengths=lengths)
    out.sum().backward()
    for distributed, local in zip(torch.load(result_file), single.parameters()):
        torch.testing.assert_close(distributed, local.grad, rtol=1e-10, atol=1e-12)


def test_compile_fullgraph_padded_input():
    # A padded input's token count is data (the lengths); dynamo keeps it in the graph
    # as an unbacked size when scalar outputs are captured.
    torch._dynamo.reset()
    model = padkern.nn.GRU(3, 4, batch_first=True, num_layers=2).double()
    x = torch.randn(3, 5, 3, dtype=torch.float64)
    lengths = torch.tensor([5, 0, 2])
    with torch._dynamo.config.patch(capture_scalar_outputs=True):
        compiled = torch.compile(lambda x, lengths: model(x, lengths=lengths), fullgraph=True, backend="aot_eager")
        actual = compiled(x, lengths)
    torch.testing.assert_close(actual, model(x, lengths=lengths))


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_takes_torch_arguments_in_torch_order(nonlinearity):
    arguments = (3, 4, 2, nonlinearity, False, True, 0.0, True)  # ..., num_layers, nonlinearity, bias, batch_first
    reference, ours = torch.nn.RNN(*arguments), padkern.nn.RNN(*arguments)
    assert list(ours.state_dict()) == list(reference.state_dict())
    assert (ours.nonlinearity, ours.bias, ours.batch_first, ours.bidirectional) == (nonlinearity, False, True, True)
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(ours(x), reference(x))


def test_rnn_rejects_unknown_nonlinearity_as_torch_does():
    with pytest.raises(ValueError, match=r"Unknown nonlinearity 'gelu'. Select from 'tanh' or 'relu'."):
        torch.nn.RNN(3, 4, nonlinearity="gelu")
    with pytest.raises(ValueError, match=r"Unknown nonlinearity 'gelu'. Select from 'tanh' or 'relu'."):
        padkern.nn.RNN(3, 4, nonlinearity="gelu")


def test_compile_fullgraph_rnn_relu():
    torch._dynamo.reset()
    model = padkern.nn.RNN(3, 4, num_layers=2, nonlinearity="relu", bidirectional=True).double()
    ragged = Ragged.from_list([torch.randn(n, 3, dtype=torch.float64) for n in (4, 0, 6)])
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    expected, expected_h = model(ragged)
    actual, actual_h = compiled(ragged)
    torch.testing.assert_close(actual.values, expected.values)
    torch.testing.assert_close(actual_h, expected_h)
    actual_h.sum().backward()
