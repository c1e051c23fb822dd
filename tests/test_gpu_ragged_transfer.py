"""GPU-only: a Ragged batch pinned by the DataLoader, moved with non_blocking=True and used at
once, gives the answer a synchronous copy gives (the copies and the kernels share a stream)."""
import pytest
import torch
from torch.utils.data import DataLoader

import padkern
from padkern import Ragged

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")

BACKENDS = ["cuda", "triton"]


def _integer_sequences(count, features, seed=0):
    # Small integers in float32: every partial sum is exact, so any order of summation
    # gives the same bits and a stale or half-copied row cannot pass unnoticed.
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, 4000, (count,), generator=generator)
    return [torch.randint(-8, 9, (int(n), features), generator=generator).float() for n in lengths]


def test_pin_memory_pins_both_tensors():
    ragged = Ragged.from_list(_integer_sequences(5, 8))
    pinned = ragged.pin_memory()
    assert pinned.is_pinned() and pinned.values.is_pinned() and pinned.offsets.is_pinned()
    assert torch.equal(pinned.values, ragged.values) and torch.equal(pinned.offsets, ragged.offsets)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dataloader_pinned_batch_used_at_once(backend):
    sequences = _integer_sequences(96, 256)  # ~190k tokens x 1 KiB: a copy long enough to race
    loader = DataLoader(sequences, batch_size=32, collate_fn=padkern.collate, pin_memory=True)
    for batch in loader:
        assert isinstance(batch, Ragged) and batch.is_pinned()
        expected = padkern.ops.segment_sum(batch.values, batch.offsets, backend="cpu")
        moved = batch.to("cuda", non_blocking=True)
        assert moved.values.device.type == moved.offsets.device.type == "cuda"
        actual = padkern.ops.segment_sum(moved.values, moved.offsets, backend=backend)  # no synchronisation between
        assert torch.equal(actual.cpu(), expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_blocking_lstm_equals_synchronous_copy(backend):
    batch = Ragged.from_list(_integer_sequences(64, 64, seed=1)).pin_memory()
    torch.manual_seed(0)
    module = padkern.nn.LSTM(64, 32, batch_first=True, backend=backend).cuda()
    with torch.no_grad():
        out_async, (h_async, _) = module(batch.cuda(non_blocking=True))
        torch.cuda.synchronize()
        out_sync, (h_sync, _) = module(batch.to("cuda"))
    assert torch.equal(out_async.values, out_sync.values) and torch.equal(h_async, h_sync)
    # And back, with the dtype converted on the way out (offsets stay integers).
    back = out_async.to("cpu", torch.float64)
    assert back.values.dtype == torch.float64 and back.offsets.dtype == torch.int64
    assert torch.equal(back.offsets, batch.offsets)
