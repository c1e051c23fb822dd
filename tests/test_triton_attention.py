"""The Triton ragged attention kernels (padkern/triton/attention.py) against a float64
per-sequence truth, forward and backward, on every device Triton runs on here (the
interpreter on the CPU: shapes stay tiny, tiles are 16 rows there)."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from padkern._backend import why_unavailable

from attention_truth import assert_within, make_case, truth
from conftest import DEVICES

pytest.importorskip("triton")
TRITON_DEVICES = [d for d in DEVICES if why_unavailable("triton", torch.device(d)) is None]
if not TRITON_DEVICES:
    pytest.skip("triton cannot run here", allow_module_level=True)

from padkern.triton import attention  # noqa: E402

# (query lengths, kv lengths or None for self-attention, Hq, Hkv, causal). Lengths cross
# 16-row tiles and are not multiples of them; sequences are empty on either side.
CASES = {
    "self": ([5, 0, 37, 16], None, 2, 2, False),
    "causal": ([5, 0, 37, 16], None, 2, 2, True),
    "grouped_causal": ([33, 1, 0, 18], None, 4, 2, True),
    "cross": ([5, 0, 37, 16, 3], [3, 7, 0, 20, 1], 3, 1, False),
}


def run(case, head_dim, dtype, device, seed=0):
    lengths, kv_lengths, heads, kv_heads, causal = case
    q, k, v, grad_out, offsets, kv_offsets = make_case(lengths, kv_lengths or lengths, heads, kv_heads, head_dim,
                                                       dtype, device, seed)
    scale = 1 / math.sqrt(head_dim)
    out, lse = attention.ragged_attention_triton(q, k, v, offsets, kv_offsets, causal, scale)
    grads = attention.ragged_attention_backward_triton(grad_out, q, k, v, out, lse, offsets, kv_offsets, causal,
                                                       scale)
    expected = truth(q, k, v, grad_out, offsets, kv_offsets, causal, scale, dtype)
    for name, got, (value, bound) in zip(("out", "lse", "grad_q", "grad_k", "grad_v"), (out, lse) + grads, expected):
        assert got.dtype == (torch.float32 if name == "lse" else dtype)
        assert_within(name, got, value, bound)
    return out, lse, grads


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("head_dim", [16, 40, 64])
@pytest.mark.parametrize("name", list(CASES))
def test_forward_backward_match_truth(device, dtype, head_dim, name):
    run(CASES[name], head_dim, dtype, device)


@pytest.mark.parametrize("device", TRITON_DEVICES)
def test_query_without_keys_gives_zero_and_no_nan(device):
    # Sequence 1 has queries but no keys, sequence 2 keys but no queries.
    out, lse, (grad_q, grad_k, grad_v) = run(([4, 0, 3], [0, 5, 2], 2, 1, False), 16, torch.float32, device)
    assert (out[:4] == 0).all() and (lse[:4] == -math.inf).all() and (grad_q[:4] == 0).all()
    assert (grad_k[:5] == 0).all() and (grad_v[:5] == 0).all()


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("lengths", [[0], [0, 0, 0], [1]], ids=str)
def test_no_tokens_and_one_token(device, lengths):
    run((lengths, None, 2, 1, True), 16, torch.float32, device)


@pytest.mark.parametrize("device", TRITON_DEVICES)
def test_repeated_runs_are_bitwise_equal(device):
    # Every output element has one writer (no atomics), so reruns agree bit for bit.
    first = run(CASES["grouped_causal"], 16, torch.float32, device)
    second = run(CASES["grouped_causal"], 16, torch.float32, device)
    for a, b in zip((first[0], first[1]) + first[2], (second[0], second[1]) + second[2]):
        assert torch.equal(a, b)


@settings(max_examples=20, deadline=None)
@given(lengths=st.lists(st.integers(0, 20), min_size=1, max_size=4), group=st.sampled_from([1, 2]),
       causal=st.booleans(), head_dim=st.sampled_from([8, 16, 24]), seed=st.integers(0, 2**16))
def test_fuzz(lengths, group, causal, head_dim, seed):
    # Head sizes below 16 and not powers of two pad the tile's feature columns.
    run((lengths, None, 2 * group, 2, causal), head_dim, torch.float32, TRITON_DEVICES[0], seed)


def test_launcher_rejects_layouts_it_does_not_assume():
    q, k, v, _, offsets, kv_offsets = make_case([3, 2], [3, 2], 2, 1, 16, torch.float32)
    with pytest.raises(RuntimeError, match="q must be contiguous"):
        attention.ragged_attention_triton(q.transpose(0, 1).contiguous().transpose(0, 1), k, v, offsets,
                                          kv_offsets, False, 0.25)
    with pytest.raises(RuntimeError, match="Hq=2 a multiple of Hkv"):
        attention.ragged_attention_triton(q, k.expand(-1, 3, -1).contiguous(), v, offsets, kv_offsets, False, 0.25)
    with pytest.raises(RuntimeError, match="kv_offsets must be a torch.int64"):
        attention.ragged_attention_triton(q, k, v, offsets, kv_offsets.int(), False, 0.25)
    out, lse = attention.ragged_attention_triton(q, k, v, offsets, kv_offsets, False, 0.25)
    with pytest.raises(RuntimeError, match="lse must be a torch.float32"):
        attention.ragged_attention_backward_triton(q, q, k, v, out, lse.double(), offsets, kv_offsets, False, 0.25)
