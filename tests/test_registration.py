"""opcheck on every registered op and torch.compile(fullgraph=True) through Ragged."""
import pytest
import torch

import padkern
from padkern import Ragged
from conftest import DEVICES
from ragged_cases import random_ragged


def padding_samples(device, requires_grad):
    values, offsets = random_ragged([3, 0, 4], (5,), device=device)
    padded = torch.randn(3, 6, 5, device=device)
    values.requires_grad_(requires_grad)
    padded.requires_grad_(requires_grad)
    return [
        ("pad", (values, offsets, 6, 0.5, True)),
        ("pad", (values, offsets, 4, 0.0, False)),
        ("unpad", (padded, offsets, 7, True)),
        ("unpad", (padded.transpose(0, 1).contiguous(), offsets, 7, False)),
    ]


def native_ops_available(device):
    from padkern._backend import why_unavailable

    return why_unavailable("cpu" if device == "cpu" else "cuda", torch.device(device)) is None


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("flavour", ["native", "triton"])
def test_opcheck_padding(device, requires_grad, flavour):
    if flavour == "native" and not native_ops_available(device):
        pytest.skip("native extension not built")
    for name, args in padding_samples(device, requires_grad):
        op = getattr(torch.ops.padkern, name if flavour == "native" else f"{name}_triton")
        torch.library.opcheck(op, args)


@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph(device):
    torch._dynamo.reset()

    def layer(ragged: Ragged, weight):
        hidden = ragged.with_values(torch.tanh(ragged.values @ weight))
        return hidden.to_padded(total_length=8)

    values, offsets = random_ragged([3, 0, 5, 1], (4,), device=device)
    weight = torch.randn(4, 6, device=device)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(Ragged(values, offsets), weight), layer(Ragged(values, offsets), weight))
