"""padkern.nn.MultiheadAttention: torch.nn.MultiheadAttention computed on real tokens only.

A subclass of torch.nn.MultiheadAttention, so its constructor, parameter names, initialisation
and ``state_dict`` are torch's own (loading works both ways). ``forward`` takes what torch's
takes and returns it in the same form: a padded batch with ``key_padding_mask`` is gathered to
its real tokens, projected, attended with ``padkern.ops.ragged_attention`` and scattered back
(exact zeros at padded query positions of self-attention); a ``Ragged`` or a ``torch.nested``
jagged tensor runs as it is and comes back as one. ``need_weights=True`` (torch's default) also
returns the attention weights, computed per sequence on a slower path: pass
``need_weights=False`` for speed.
"""
from typing import Optional

import torch
import torch.nn.functional as F

from .. import _nested, ops
from ..ragged import Ragged


def _mask_alternatives() -> str:
    return ("pass is_causal=True (with attn_mask None or the causal mask) for causal masking, key_padding_mask "
            "or a Ragged input for padding, or use torch.nn.MultiheadAttention for an arbitrary attn_mask")


def _is_causal_mask(mask: torch.Tensor, queries: int, keys: int) -> bool:
    if mask.dim() != 2 or tuple(mask.shape) != (queries, keys):
        return False
    future = torch.ones(queries, keys, dtype=torch.bool, device=mask.device).triu(1)
    if mask.dtype == torch.bool:
        return bool((mask == future).all())
    return bool(((mask == float("-inf")) == future).all() and (mask[~future] == 0).all())


def _boolean_padding(key_padding_mask: torch.Tensor) -> torch.Tensor:
    """True where a key is padding; a float mask must be 0 (keep) or -inf (padding)."""
    if key_padding_mask.dtype == torch.bool:
        return key_padding_mask
    if key_padding_mask.is_floating_point():
        padding = key_padding_mask == float("-inf")
        if bool(((key_padding_mask == 0) | padding).all()):
            return padding
    raise ValueError("key_padding_mask must be bool (True = padding) or float holding only 0 and -inf; other "
                     "additive masks are not supported: " + _mask_alternatives())


def _offsets_of(counts: torch.Tensor) -> torch.Tensor:
    return F.pad(counts.to(torch.int64).cumsum(0), (1, 0))


def _append_token(values: torch.Tensor, offsets: torch.Tensor, extra: torch.Tensor):
    """Each sequence's rows followed by one more row (extra [B, E]) -> (values, offsets)."""
    batch = offsets.shape[0] - 1
    steps = torch.arange(batch + 1, device=offsets.device)
    new_offsets = offsets + steps
    lengths = offsets[1:] - offsets[:-1]
    sequence = torch.repeat_interleave(torch.arange(batch, device=offsets.device), lengths,
                                       output_size=values.shape[0])
    rows = torch.arange(values.shape[0], device=offsets.device) + sequence
    out = values.new_zeros((values.shape[0] + batch,) + tuple(values.shape[1:]))
    out = out.index_put((rows,), values).index_put((new_offsets[1:] - 1,), extra.to(values.dtype))
    return out, new_offsets


class MultiheadAttention(torch.nn.MultiheadAttention):
    """torch.nn.MultiheadAttention's arguments and parameters; see the module docstring.

    Not supported (each raises an error naming the alternative): an attn_mask other than the
    causal one; attention dropout while training; is_causal with add_bias_kv/add_zero_attn
    or with cross-attention. ``backend`` chooses padkern's attention backend.
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False, add_zero_attn=False,
                 kdim=None, vdim=None, batch_first=False, device=None, dtype=None, *, backend: Optional[str] = None):
        super().__init__(embed_dim, num_heads, dropout, bias, add_bias_kv, add_zero_attn, kdim, vdim, batch_first,
                         device, dtype)
        self.backend = backend

    # ----- forms -------------------------------------------------------------------------------
    def _to_ragged(self, x, name):
        """(Ragged, form) of a Ragged, a torch.nested jagged tensor, or a padded tensor (form
        "padded": the caller gathers it)."""
        if isinstance(x, Ragged):
            return x, ("ragged", None)
        if isinstance(x, torch.Tensor) and x.is_nested:
            if not _nested.is_jagged(x):
                raise TypeError(f"a torch.nested {name} must have layout=torch.jagged, got {x.layout}")
            return _nested.ragged_of(x), ("nested", x)
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a Tensor, a Ragged or a torch.nested jagged tensor, got {type(x).__name__}")
        return None, ("padded", None)

    def _projections(self):
        E = self.embed_dim
        if self._qkv_same_embed_dim:
            w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        else:
            w_q, w_k, w_v = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        b = self.in_proj_bias
        biases = (None, None, None) if b is None else (b[:E], b[E:2 * E], b[2 * E:])
        return (w_q, w_k, w_v), biases

    def _check_options(self, attn_mask, is_causal, self_attention, queries, keys):
        causal = bool(is_causal)
        if attn_mask is not None:
            if not _is_causal_mask(attn_mask, queries, keys):
                raise ValueError("padkern.nn.MultiheadAttention does not take a dense attn_mask other than the causal "
                                 "one: " + _mask_alternatives())
            causal = True
        if causal and not self_attention:
            raise ValueError("causal attention needs self-attention (query, key and value the same tokens); for "
                             "cross-attention use torch.nn.MultiheadAttention with an attn_mask")
        if causal and (self.bias_k is not None or self.add_zero_attn):
            raise ValueError("is_causal with add_bias_kv or add_zero_attn is not supported: use "
                             "torch.nn.MultiheadAttention")
        if self.training and self.dropout > 0:
            raise ValueError("attention dropout is not supported in training: set dropout=0.0 (or call eval()), or "
                             "use torch.nn.MultiheadAttention")
        return causal

    # ----- the computation on real tokens --------------------------------------------------------
    def _attend(self, q_in, k_in, v_in, offsets, kv_offsets, causal, need_weights, average):
        """Real tokens q_in [L, E], k_in/v_in [Lk, kdim/vdim] -> (out [L, E], per-sequence weights)."""
        (w_q, w_k, w_v), (b_q, b_k, b_v) = self._projections()
        H, E = self.num_heads, self.embed_dim
        q = F.linear(q_in, w_q, b_q)
        k = F.linear(k_in, w_k, b_k)
        v = F.linear(v_in, w_v, b_v)
        batch = offsets.shape[0] - 1
        if self.bias_k is not None:
            k, _ = _append_token(k, kv_offsets, self.bias_k.reshape(1, E).expand(batch, E))
            v, kv_offsets = _append_token(v, kv_offsets, self.bias_v.reshape(1, E).expand(batch, E))
        if self.add_zero_attn:
            zeros = k.new_zeros(batch, E)
            k, _ = _append_token(k, kv_offsets, zeros)
            v, kv_offsets = _append_token(v, kv_offsets, zeros)
        q, k, v = q.reshape(-1, H, E // H), k.reshape(-1, H, E // H), v.reshape(-1, H, E // H)
        shared = kv_offsets is offsets
        out = ops.ragged_attention(q, k, v, offsets, kv_offsets=None if shared else kv_offsets, causal=causal,
                                   backend=self.backend)
        out = F.linear(out.reshape(-1, E), self.out_proj.weight, self.out_proj.bias)
        weights = self._weights(q, k, offsets, kv_offsets, causal, average) if need_weights else None
        return out, weights

    @staticmethod
    def _weights(q, k, offsets, kv_offsets, causal, average):
        """softmax(q k^T / sqrt(D)) of each sequence: a list of [H, n, m] (or [n, m] averaged)."""
        scale = q.shape[-1] ** -0.5
        bounds, kv_bounds = offsets.tolist(), kv_offsets.tolist()
        pieces = []
        for b in range(len(bounds) - 1):
            qb, kb = q[bounds[b]:bounds[b + 1]], k[kv_bounds[b]:kv_bounds[b + 1]]
            scores = torch.einsum("nhd,mhd->hnm", qb, kb) * scale
            if causal:
                future = torch.ones(scores.shape[1:], dtype=torch.bool, device=q.device).triu(1)
                scores = scores.masked_fill(future, float("-inf"))
            w = torch.softmax(scores, -1) if scores.shape[-1] > 0 else scores
            pieces.append(w.mean(0) if average else w)
        return pieces

    @staticmethod
    def _pad_weights(pieces, queries, keys, like, average, query_rows=None, key_rows=None):
        """Per-sequence weights into [B, (H,) T, S] zeros (padded rows and columns stay 0)."""
        heads = () if average or not pieces else (pieces[0].shape[0],)
        out = like.new_zeros((len(pieces),) + heads + (queries, keys))
        for b, w in enumerate(pieces):
            rows = slice(0, w.shape[-2]) if query_rows is None else query_rows[b]
            cols = slice(0, w.shape[-1]) if key_rows is None else key_rows[b]
            view = out[b]
            if isinstance(rows, slice) and isinstance(cols, slice):
                view[..., rows, cols] = w
            else:
                index = torch.meshgrid(torch.as_tensor(rows), torch.as_tensor(cols), indexing="ij")
                view[(Ellipsis,) + index] = w
        return out

    # ----- forward -----------------------------------------------------------------------------------
    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        q_ragged, q_form = self._to_ragged(query, "query")
        k_ragged, _ = self._to_ragged(key, "key")
        v_ragged, _ = self._to_ragged(value, "value")
        if q_form[0] != "padded":
            return self._forward_ragged(query, key, value, q_ragged, k_ragged, v_ragged, q_form, key_padding_mask,
                                        need_weights, attn_mask, average_attn_weights, is_causal)
        return self._forward_padded(query, key, value, key_padding_mask, need_weights, attn_mask,
                                    average_attn_weights, is_causal)

    def _forward_ragged(self, query, key, value, q, k, v, form, key_padding_mask, need_weights, attn_mask, average,
                        is_causal):
        if k is None or v is None:
            raise TypeError("with a Ragged (or torch.nested) query, key and value must be Ragged (or nested) too")
        if key_padding_mask is not None:
            raise ValueError("key_padding_mask must be None for a Ragged or torch.nested input: its offsets already "
                             "say which tokens are real")
        if k.values.shape[0] != v.values.shape[0]:
            raise ValueError(f"key and value must hold the same tokens, got {k.values.shape[0]} and "
                             f"{v.values.shape[0]}")
        self_attention = query is key and key is value
        longest = lambda r: int((r.offsets[1:] - r.offsets[:-1]).max()) if r.offsets.numel() > 1 else 0  # noqa: E731
        causal = self._check_options(attn_mask, is_causal, self_attention,
                                     *((longest(q), longest(k)) if attn_mask is not None else (0, 0)))
        offsets = q.offsets.to(torch.int64)
        kv_offsets = offsets if self_attention else k.offsets.to(torch.int64)
        out, pieces = self._attend(q.values, k.values, v.values, offsets, kv_offsets, causal, need_weights, average)
        result = Ragged(out, q.offsets)
        if form[0] == "nested":
            result = _nested.nested_like(result, form[1])
        weights = None
        if need_weights:
            weights = self._pad_weights(pieces, longest(q), max((p.shape[-1] for p in pieces), default=0), out,
                                        average)
        return result, weights

    def _forward_padded(self, query, key, value, key_padding_mask, need_weights, attn_mask, average, is_causal):
        self_attention = query is key and key is value
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif self.batch_first:
            query, key, value = (x.transpose(0, 1) for x in (query, key, value))
        # Time-major [T, B, E] from here, as torch's own forward.
        T, B, _ = query.shape
        S = key.shape[0]
        if key.shape[:2] != value.shape[:2] or key.shape[1] != B:
            raise ValueError(f"key and value must be [S, B, *] with query's batch {B}, got {tuple(key.shape)} and "
                             f"{tuple(value.shape)}")
        causal = self._check_options(attn_mask, is_causal, self_attention, T, S)
        key_real = torch.ones(B, S, dtype=torch.bool, device=query.device)
        if key_padding_mask is not None:
            if tuple(key_padding_mask.shape) != (B, S):
                raise ValueError(f"key_padding_mask must be [B, S] = {(B, S)}, got {tuple(key_padding_mask.shape)}")
            key_real = ~_boolean_padding(key_padding_mask)
        query_real = key_real if self_attention else torch.ones(B, T, dtype=torch.bool, device=query.device)
        # Batch-major gathers: tokens of sequence 0, then 1, ...
        q_tokens = query.transpose(0, 1)[query_real]
        offsets = _offsets_of(query_real.sum(1))
        if self_attention:
            k_tokens, v_tokens, kv_offsets = q_tokens, q_tokens, offsets
        else:
            k_tokens, v_tokens = key.transpose(0, 1)[key_real], value.transpose(0, 1)[key_real]
            kv_offsets = _offsets_of(key_real.sum(1))
        out, pieces = self._attend(q_tokens, k_tokens, v_tokens, offsets, kv_offsets, causal, need_weights, average)
        padded = out.new_zeros(B, T, self.embed_dim).index_put(tuple(query_real.nonzero().unbind(1)), out)
        weights = None
        if need_weights:
            extra = (self.bias_k is not None) + bool(self.add_zero_attn)
            key_rows = [torch.cat([row.nonzero().flatten(), S + torch.arange(extra, device=row.device)])
                        for row in key_real]
            query_rows = [row.nonzero().flatten() for row in query_real]
            weights = self._pad_weights(pieces, T, S + extra, out, average, query_rows, key_rows)
            if unbatched:
                weights = weights.squeeze(0)
        if unbatched:
            return padded.squeeze(0), weights
        return (padded if self.batch_first else padded.transpose(0, 1)), weights
