"""padkern.nn.MultiheadAttention against torch.nn.MultiheadAttention (same parameters, float64):
padded input with key_padding_mask on real tokens only, Ragged and torch.nested in and out,
weights, state_dict both ways, PyTorch's own MultiheadAttention test cases where they apply
(test/nn/test_multihead_attention.py), clear errors for what it does not take, compile."""
import pytest
import torch

import padkern
from padkern import Ragged
from padkern.nn.attention import MultiheadAttention

E, H = 8, 2


def pair(seed=0, **options):
    torch.manual_seed(seed)
    theirs = torch.nn.MultiheadAttention(E, H, **options).double().eval()
    ours = MultiheadAttention(E, H, **options).double().eval()
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def masks(lengths, total):
    return torch.arange(total)[None, :] >= torch.tensor(lengths)[:, None]  # True = padding


OPTIONS = {
    "default": {}, "no_bias": dict(bias=False), "kdim_vdim": dict(kdim=5, vdim=7), "bias_kv": dict(add_bias_kv=True),
    "zero_attn": dict(add_zero_attn=True), "bias_kv_zero_attn": dict(add_bias_kv=True, add_zero_attn=True),
}


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("option", list(OPTIONS))
def test_cross_attention_with_key_padding_mask_matches_torch(option, batch_first):
    theirs, ours = pair(batch_first=batch_first, **OPTIONS[option])
    g = torch.Generator().manual_seed(1)
    query = torch.randn(3, 5, E, generator=g, dtype=torch.float64)
    key = torch.randn(3, 6, OPTIONS[option].get("kdim", E), generator=g, dtype=torch.float64)
    value = torch.randn(3, 6, OPTIONS[option].get("vdim", E), generator=g, dtype=torch.float64)
    if not batch_first:
        query, key, value = (x.transpose(0, 1) for x in (query, key, value))
    padding = masks([6, 3, 0] if not OPTIONS[option] else [6, 3, 5], 6)
    for average in (True, False):
        want, want_w = theirs(query, key, value, key_padding_mask=padding, average_attn_weights=average)
        got, got_w = ours(query, key, value, key_padding_mask=padding, average_attn_weights=average)
        if not OPTIONS[option]:  # a query with no key: torch gives NaN, padkern 0
            assert got[:, 2].eq(0).all() if not batch_first else got[2].eq(0).all()
            keep = [0, 1]
            want, got = (want[:, keep], got[:, keep]) if not batch_first else (want[keep], got[keep])
            want_w, got_w = want_w[keep], got_w[keep]
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(got_w, want_w)


@pytest.mark.parametrize("batch_first", [False, True])
def test_self_attention_on_real_tokens_only(batch_first):
    theirs, ours = pair(batch_first=batch_first)
    lengths = [5, 2, 4]
    x = torch.randn(3, 5, E, dtype=torch.float64)
    padding = masks(lengths, 5)
    x[padding] = float("nan")  # padding never reaches a real token's output or any gradient
    x_in = (x if batch_first else x.transpose(0, 1)).detach().requires_grad_()
    out, weights = ours(x_in, x_in, x_in, key_padding_mask=padding)
    out_b = out if batch_first else out.transpose(0, 1)
    assert out_b[padding].eq(0).all()
    out_b[~padding].sum().backward()
    grad = x_in.grad if batch_first else x_in.grad.transpose(0, 1)
    assert grad[padding].eq(0).all() and torch.isfinite(grad).all()
    for b, n in enumerate(lengths):
        alone = x[b:b + 1, :n].clone()
        want, want_w = theirs(*(3 * [alone if batch_first else alone.transpose(0, 1)]))
        want = want if batch_first else want.transpose(0, 1)
        torch.testing.assert_close(out_b[b, :n], want[0])
        torch.testing.assert_close(weights[b, :n, :n], want_w[0])
        assert weights[b, n:].eq(0).all() and weights[b, :, n:].eq(0).all()


def test_parameter_gradients_match_torch():
    theirs, ours = pair(batch_first=True)
    x = torch.randn(2, 6, E, dtype=torch.float64)
    padding = masks([6, 6], 6)
    theirs(x, x, x, key_padding_mask=padding, need_weights=False)[0].sum().backward()
    ours(x, x, x, key_padding_mask=padding, need_weights=False)[0].sum().backward()
    for (name, p), q in zip(theirs.named_parameters(), ours.parameters()):
        torch.testing.assert_close(q.grad, p.grad, msg=name)


def test_causal_matches_torch():
    theirs, ours = pair(batch_first=True)
    x = torch.randn(2, 7, E, dtype=torch.float64)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(7, dtype=torch.float64)
    want = theirs(x, x, x, attn_mask=causal, is_causal=True, need_weights=False)[0]
    torch.testing.assert_close(ours(x, x, x, attn_mask=causal, is_causal=True, need_weights=False)[0], want)
    torch.testing.assert_close(ours(x, x, x, is_causal=True, need_weights=False)[0], want)
    torch.testing.assert_close(ours(x, x, x, attn_mask=causal.isinf(), need_weights=False)[0], want)


def test_ragged_and_nested_in_give_the_same_form_out():
    theirs, ours = pair(batch_first=True)
    pieces = [torch.randn(n, E, dtype=torch.float64) for n in (4, 0, 6)]
    ragged = Ragged.from_list(pieces)
    out, weights = ours(ragged, ragged, ragged)
    assert isinstance(out, Ragged) and torch.equal(out.offsets, ragged.offsets)
    for b, piece in enumerate(pieces):
        if piece.shape[0] == 0:
            continue
        want, want_w = theirs(piece[None], piece[None], piece[None])
        torch.testing.assert_close(out.values[ragged.offsets[b]:ragged.offsets[b + 1]], want[0])
        torch.testing.assert_close(weights[b, :piece.shape[0], :piece.shape[0]], want_w[0])
    nested = torch.nested.nested_tensor([p for p in pieces if p.shape[0]], layout=torch.jagged)
    nested_out, _ = ours(nested, nested, nested, need_weights=False)
    assert nested_out.is_nested
    torch.testing.assert_close(nested_out.values(), out.values)


# ----- PyTorch's own cases (test/nn/test_multihead_attention.py) ---------------------------------
def test_torch_case_no_bias():
    """test_multihead_attn_no_bias: bias=False applies to both projections."""
    mha = MultiheadAttention(8, 4, bias=False)
    assert mha.in_proj_bias is None and mha.out_proj.bias is None


def test_torch_case_nested_tensor_outside_fast_path():
    """test_multihead_attn_nested_tensor_outside_fast_path: self and cross on jagged tensors,
    add_bias_kv, add_zero_attn, under no_grad and inference_mode, frozen parameters; each
    sequence as torch computes it alone."""
    torch.manual_seed(0)
    nt1 = torch.nested.nested_tensor([torch.randn(4, 10), torch.randn(6, 10)], layout=torch.jagged)
    nt2 = torch.nested.nested_tensor([torch.randn(7, 10), torch.randn(16, 10)], layout=torch.jagged)
    nt3 = torch.nested.nested_tensor([torch.randn(7, 10), torch.randn(16, 10)], layout=torch.jagged)
    for options in ({}, dict(add_bias_kv=True), dict(add_zero_attn=True), dict(add_bias_kv=True, add_zero_attn=True)):
        theirs = torch.nn.MultiheadAttention(10, 5, batch_first=True, **options).eval()
        ours = MultiheadAttention(10, 5, batch_first=True, **options).eval()
        ours.load_state_dict(theirs.state_dict())
        for q, k, v in ((nt1, nt1, nt1), (nt1, nt2, nt3)):
            got = ours(q, k, v)[0]
            for b, (qb, kb, vb) in enumerate(zip(q.unbind(), k.unbind(), v.unbind())):
                want = theirs(qb[None], kb[None], vb[None])[0][0]
                torch.testing.assert_close(got.unbind()[b], want, rtol=1e-5, atol=1e-5)
        with torch.no_grad():
            ours(nt1, nt1, nt1)
        with torch.inference_mode():
            ours(nt1, nt1, nt1)
        for p in ours.parameters():
            p.requires_grad_(False)
        ours(nt1, nt1, nt1)


def test_torch_case_3d_attn_mask_is_refused_with_the_alternative():
    """test_multihead_attn_3d_attn_mask: a per-batch dense mask is not padkern's; the error
    names what to use."""
    mha = MultiheadAttention(8, 4)
    query, key = torch.rand(2, 8, 8), torch.rand(3, 8, 8)
    mask = torch.zeros(8 * 4, 2, 3)
    with pytest.raises(ValueError, match="torch.nn.MultiheadAttention for an arbitrary attn_mask"):
        mha(query, key, key, attn_mask=mask)


def test_state_dict_both_ways():
    theirs, ours = pair(kdim=5, vdim=7)
    assert list(theirs.state_dict()) == list(ours.state_dict())
    theirs.load_state_dict(ours.state_dict())
    for a, b in zip(theirs.state_dict().values(), ours.state_dict().values()):
        assert torch.equal(a, b)


def test_refuses_what_it_cannot_do():
    mha = MultiheadAttention(E, H, batch_first=True, dropout=0.1)
    x, y = torch.randn(2, 4, E), torch.randn(2, 5, E)
    with pytest.raises(ValueError, match="dropout"):
        mha(x, x, x)
    mha.eval()
    with pytest.raises(ValueError, match="causal attention needs self-attention"):
        mha(x, y, y, is_causal=True)
    with pytest.raises(ValueError, match="attn_mask other than the causal one"):
        mha(x, x, x, attn_mask=torch.zeros(4, 4, dtype=torch.bool).fill_diagonal_(True))
    with pytest.raises(ValueError, match="key_padding_mask must be bool"):
        mha(x, x, x, key_padding_mask=torch.full((2, 4), 0.5))


def test_compile_fullgraph_on_ragged():
    _, ours = pair(batch_first=True)
    ours = ours.float()
    ragged = Ragged.from_list([torch.randn(n, E) for n in (3, 0, 5)])
    compiled = torch.compile(lambda r: ours(r, r, r, need_weights=False)[0].values, fullgraph=True)
    torch.testing.assert_close(compiled(ragged), ours(ragged, ragged, ragged, need_weights=False)[0].values)


def test_backend_choice_reaches_the_op(device_backend):
    device, backend = device_backend
    if backend == "triton" and padkern.ops.attention._TRITON is None:
        pytest.skip("padkern's Triton attention kernels are not in this build")
    theirs, _ = pair(batch_first=True)
    ours = MultiheadAttention(E, H, batch_first=True, backend=backend).double().eval()
    ours.load_state_dict(theirs.state_dict())
    theirs, ours = theirs.to(device), ours.to(device)
    x = torch.randn(2, 5, E, dtype=torch.float64, device=device)
    padding = masks([5, 3], 5).to(device)
    got = ours(x, x, x, key_padding_mask=padding, need_weights=False)[0]
    want = theirs(x, x, x, key_padding_mask=padding, need_weights=False)[0]
    torch.testing.assert_close(got[~padding], want[~padding])
