"""``padkern.nn.Conv1d``: torch.nn.Conv1d's constructor, parameters and ``state_dict``,
applied to each sequence of a ragged batch on its own (``padkern.ops.ragged_conv1d``).

``forward(input, lengths=None)`` takes a :class:`padkern.Ragged` (values ``[L, C_in]``),
a ``torch.nested`` jagged tensor ``[B, j, C_in]``, or what ``torch.nn.Conv1d`` takes: a
padded ``[B, C_in, T]`` batch with ``lengths`` [B] (all full length when omitted) or one
sequence ``[C_in, T]``. The output comes back in the input's form; a padded output is
``[B, C_out, T]`` with exact zeros past each length, computed on the real tokens only.
"""
import torch
from torch import nn

from .. import _nested, ops
from ..ops.conv import PADDINGS, left_padding
from ..ragged import Ragged


class Conv1d(nn.Conv1d):
    """Drop-in ``torch.nn.Conv1d`` over ragged batches; every sequence is zero-padded at its
    own edges and never sees another's tokens.

    ``padding`` is ``"same"``, ``"causal"`` (``dilation * (kernel_size - 1)`` zeros on the
    left only), or an int that keeps each sequence's length (``2 * padding == dilation *
    (kernel_size - 1)``). The output keeps every sequence's length, so ``stride`` must be 1
    and ``padding_mode`` ``"zeros"``; anything else raises. ``backend`` as for padkern's ops.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
                 padding_mode="zeros", device=None, dtype=None, *, backend=None):
        kernel, step, spread = (_single(v, name) for v, name in ((kernel_size, "kernel_size"), (stride, "stride"),
                                                                  (dilation, "dilation")))
        if step != 1:
            raise ValueError(f"padkern.nn.Conv1d keeps each sequence's length, so stride must be 1, got {stride}; "
                             "subsample the output (e.g. every other token per sequence) instead")
        if padding_mode != "zeros":
            raise ValueError(f"padkern.nn.Conv1d pads each sequence with zeros; padding_mode={padding_mode!r} is "
                             "not supported, use padding_mode='zeros'")
        padding = padding[0] if isinstance(padding, (tuple, list)) and len(padding) == 1 else padding
        # Checked here, so a module that cannot keep the lengths is never built.
        left_padding(padding, kernel, spread)
        # torch.nn.Conv1d knows no "causal"; it only stores the padding, and forward is ours.
        super().__init__(in_channels, out_channels, kernel, 1, 0 if padding == "causal" else padding, spread, groups,
                         bias, padding_mode, device, dtype)
        self.padding = padding if isinstance(padding, str) else (padding,)
        self.backend = backend

    def _ragged_padding(self):
        return self.padding if self.padding in PADDINGS else self.padding[0]

    def _conv(self, ragged: Ragged) -> Ragged:
        values = ragged.values
        if values.dim() != 2 or values.shape[1] != self.in_channels:
            raise ValueError(f"expected values [L, in_channels={self.in_channels}], got shape {tuple(values.shape)}")
        out = ops.ragged_conv1d(values, ragged.offsets, self.weight, self.bias, padding=self._ragged_padding(),
                                dilation=self.dilation[0], groups=self.groups, backend=self.backend)
        return ragged.with_values(out)

    def forward(self, input, lengths=None):
        if isinstance(input, Ragged):
            input._check()
            _no_lengths(lengths, "a Ragged input")
            return self._conv(input)
        if _nested.is_jagged(input):
            _no_lengths(lengths, "a torch.nested input (its offsets give the lengths)")
            return _nested.nested_like(self._conv(_nested.ragged_of(input)), input)
        if not isinstance(input, torch.Tensor) or input.is_nested:
            raise TypeError("input must be a padkern.Ragged, a torch.nested jagged tensor [B, j, C_in], or a padded "
                            f"[B, C_in, T] / unbatched [C_in, T] tensor, got {type(input).__name__}")
        if input.dim() == 2:
            _no_lengths(lengths, "unbatched [C_in, T] input (one sequence of all its steps)")
            return self.forward(input[None])[0]
        if input.dim() != 3:
            raise ValueError(f"Conv1d: expected a 2-D (unbatched) or 3-D (batched) input, got {input.dim()}-D")
        if input.shape[1] != self.in_channels:
            raise ValueError(f"expected input [B, in_channels={self.in_channels}, T], got shape {tuple(input.shape)}")
        batch, steps = input.shape[0], input.shape[2]
        if lengths is None:
            lengths = torch.full((batch,), steps, dtype=torch.int64)
        ragged = Ragged.from_padded(input.transpose(1, 2), lengths, backend=self.backend)
        padded = self._conv(ragged).to_padded(steps, backend=self.backend)
        # torch.nn.Conv1d's [B, C_out, T], row-major as its output is.
        return padded.transpose(1, 2).contiguous()


def _single(value, name: str) -> int:
    if isinstance(value, (tuple, list)):
        if len(value) != 1:
            raise ValueError(f"{name} must be an int or a 1-tuple for a 1-D convolution, got {value!r}")
        value = value[0]
    return value


def _no_lengths(lengths, what: str) -> None:
    if lengths is not None:
        raise ValueError(f"lengths must be None for {what}")
