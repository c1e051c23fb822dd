"""padkern.nn.Conv1d against torch.nn.Conv1d run on each sequence alone: the same
parameters and state_dict (loading both ways), every input form (Ragged, NJT, padded
with lengths, unbatched), exact zeros at padding, compile, and clear refusals."""
import pytest
import torch
from torch import nn

import padkern
from padkern import Ragged
from ragged_cases import random_ragged, split


def torch_twin(module: padkern.nn.Conv1d, padding=0) -> nn.Conv1d:
    """torch.nn.Conv1d with the module's weights. per_sequence pads outside, with no padding
    here: torch 2.11's "same" refuses a sequence shorter than the kernel."""
    twin = nn.Conv1d(module.in_channels, module.out_channels, module.kernel_size, padding=padding,
                     dilation=module.dilation, groups=module.groups, bias=module.bias is not None,
                     dtype=module.weight.dtype)
    twin.load_state_dict(module.state_dict())
    return twin


def per_sequence(module, values, offsets):
    twin = torch_twin(module)
    pieces = []
    for piece in split(values, offsets):
        if piece.shape[0] == 0:
            continue
        total = module.dilation[0] * (module.kernel_size[0] - 1)
        if module.padding == "causal":
            sides = (total, 0)
        elif module.padding == "same":
            sides = (total // 2, total - total // 2)  # torch's "same": the odd zero on the right
        else:
            sides = (module.padding[0], module.padding[0])
        pieces.append(twin(torch.nn.functional.pad(piece.t()[None], sides))[0].t())
    return torch.cat(pieces)


MODULES = {
    "depthwise_causal": dict(in_channels=6, out_channels=6, kernel_size=4, groups=6, padding="causal"),
    "grouped_same": dict(in_channels=4, out_channels=6, kernel_size=3, groups=2, padding="same", dilation=2),
    "dense_int_padding": dict(in_channels=3, out_channels=5, kernel_size=5, padding=2, bias=False),
}


@pytest.fixture(params=list(MODULES))
def module(request):
    torch.manual_seed(0)
    built = padkern.nn.Conv1d(**MODULES[request.param], dtype=torch.float64)
    built.spec = MODULES[request.param]
    return built


def test_state_dict_both_ways(module):
    twin = torch_twin(module)
    assert list(module.state_dict()) == list(twin.state_dict())
    reloaded = padkern.nn.Conv1d(**module.spec, dtype=torch.float64)
    reloaded.load_state_dict(twin.state_dict())
    for name, value in module.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], value)
    twin.load_state_dict(reloaded.state_dict())


def test_ragged_and_nested(module, device_backend):
    device, backend = device_backend
    module = module.to(device)
    module.backend = backend
    values, offsets = random_ragged([5, 0, 1, 9], (module.in_channels,), dtype=torch.float64, device=device)
    out = module(Ragged(values, offsets))
    assert isinstance(out, Ragged) and out.offsets is offsets
    torch.testing.assert_close(out.values, per_sequence(module.cpu(), values.cpu(), offsets.cpu()).to(device))
    module.to(device)
    nested = torch.nested.nested_tensor_from_jagged(values, offsets)
    out_nested = module(nested)
    assert out_nested.is_nested
    torch.testing.assert_close(out_nested.values(), out.values)


def test_padded_with_lengths(module):
    lengths = torch.tensor([7, 0, 3, 7, 1])
    x = torch.randn(5, module.in_channels, 7, dtype=torch.float64)
    x[1, :, :] = float("nan")  # padding may hold anything
    x[2, :, 3:] = float("nan")
    x.requires_grad_()
    out = module(x, lengths=lengths)
    assert out.shape == (5, module.out_channels, 7)
    ragged = Ragged.from_padded(x.detach().transpose(1, 2), lengths)
    want = Ragged(per_sequence(module, ragged.values, ragged.offsets), ragged.offsets).to_padded(7).transpose(1, 2)
    torch.testing.assert_close(out, want)
    assert (out[1] == 0).all() and (out[2, :, 3:] == 0).all() and (out[4, :, 1:] == 0).all()
    out.sum().backward()
    assert (x.grad[1] == 0).all() and (x.grad[2, :, 3:] == 0).all() and x.grad.isfinite().all()


def test_full_length_and_unbatched_match_torch():
    torch.manual_seed(1)
    module = padkern.nn.Conv1d(4, 8, 3, padding="same", groups=2, dtype=torch.float64)
    twin = torch_twin(module, padding="same")
    x = torch.randn(3, 4, 11, dtype=torch.float64)
    torch.testing.assert_close(module(x), twin(x))
    torch.testing.assert_close(module(x[0]), twin(x[0]))


def test_compile_fullgraph():
    module = padkern.nn.Conv1d(6, 6, 4, groups=6, padding="causal")
    values, offsets = random_ragged([4, 0, 6], (6,))
    compiled = torch.compile(lambda r: module(r).values, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(Ragged(values, offsets)), module(Ragged(values, offsets)).values)


@pytest.mark.parametrize("kwargs,match", [
    (dict(stride=2), "stride must be 1"),
    (dict(padding_mode="reflect", padding="same"), "padding_mode='reflect' is not supported"),
    (dict(), r"padding=0 changes each sequence's length"),
    (dict(padding="valid"), "padding must be 'same', 'causal' or an int"),
    (dict(padding=(1, 1)), "padding must be"),
])
def test_refusals(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        padkern.nn.Conv1d(4, 4, 3, **kwargs)


def test_input_errors():
    module = padkern.nn.Conv1d(4, 4, 3, padding="same")
    with pytest.raises(ValueError, match=r"expected input \[B, in_channels=4, T\]"):
        module(torch.randn(2, 7, 5))
    with pytest.raises(ValueError, match="lengths must be None for a Ragged input"):
        module(Ragged(torch.randn(3, 4), torch.tensor([0, 3])), lengths=torch.tensor([3]))
    with pytest.raises(TypeError, match="input must be a padkern.Ragged"):
        module([1, 2])
