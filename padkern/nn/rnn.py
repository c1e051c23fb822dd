"""``padkern.nn.LSTM`` / ``GRU`` / ``RNN``: torch.nn.LSTM/GRU/RNN's constructor, parameter
names and return shapes, computed on the ragged layout end to end (no padding
between layers, no sorting, zero-length sequences allowed).

``forward(input, hx=None, lengths=None)`` takes a :class:`padkern.Ragged`, a
``torch.nested`` jagged tensor ``[B, j, input_size]``, a ``PackedSequence``, a padded
tensor (``lengths`` [B]; all full length when omitted) or one unbatched sequence
``[T, input_size]``, and returns the output in the form it was given plus ``h_n`` (and ``c_n``) shaped ``[num_layers * num_directions, B, H]`` (``[..., H]``
without B for unbatched input) in the caller's batch order.
"""
import functools
import math
import numbers
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from .. import _nested, ops
from ..ops.rnn import NONLINEARITIES
from ..ragged import Ragged


class HiddenSizeError(RuntimeError, ValueError):
    """A wrong hx shape: a RuntimeError as torch.nn raises, and a ValueError as padkern's
    other shape errors."""


class _RaggedRNN(nn.Module):
    GATES = 0  # 4 for LSTM, 3 for GRU, 1 for RNN

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, device=None, dtype=None, *, backend=None, proj_size=None):
        super().__init__()
        # torch.nn.RNNBase's messages, so code matching on them keeps working.
        if proj_size is not None and self.GATES != 4:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        proj_size = proj_size or 0
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
            if value <= 0:
                raise ValueError(f"{name} must be greater than zero, got {value}")
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout should be a number in range [0, 1], got {dropout!r}")
        if proj_size < 0:
            raise ValueError("proj_size should be a positive integer or zero to disable projections")
        if proj_size >= hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")
        if dropout > 0 and num_layers == 1:
            # torch.nn's warning, word for word.
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
                          f"expects num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout, self.bidirectional = bias, batch_first, float(dropout), bidirectional
        self.proj_size, self.backend = proj_size, backend
        factory = {"device": device, "dtype": dtype}
        directions = 2 if bidirectional else 1
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else self.output_size * directions
            for suffix in ("", "_reverse")[:directions]:
                name = f"l{layer}{suffix}"
                gate_rows = self.GATES * hidden_size
                # Registered in torch.nn's order, so state_dict keys come out in the same order.
                setattr(self, f"weight_ih_{name}", nn.Parameter(torch.empty(gate_rows, layer_input, **factory)))
                setattr(self, f"weight_hh_{name}", nn.Parameter(torch.empty(gate_rows, self.output_size, **factory)))
                if bias:
                    setattr(self, f"bias_ih_{name}", nn.Parameter(torch.empty(gate_rows, **factory)))
                    setattr(self, f"bias_hh_{name}", nn.Parameter(torch.empty(gate_rows, **factory)))
                if proj_size:
                    setattr(self, f"weight_hr_{name}", nn.Parameter(torch.empty(proj_size, hidden_size, **factory)))
        self.reset_parameters()

    @property
    def output_size(self) -> int:
        """Width of h per direction: proj_size with projections, else hidden_size."""
        return self.proj_size or self.hidden_size

    # ----- torch.nn.RNNBase's parameter views ------------------------------------------
    @property
    def _flat_weights_names(self):
        names = []
        for layer in range(self.num_layers):
            for suffix in ("", "_reverse")[:self.num_directions]:
                kinds = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if self.bias else ())
                kinds += ("weight_hr",) if self.proj_size else ()
                names += [f"{kind}_l{layer}{suffix}" for kind in kinds]
        return names

    @property
    def _flat_weights(self):
        return [getattr(self, name) for name in self._flat_weights_names]

    @property
    def all_weights(self):
        """Per layer and direction, its parameters (as torch.nn's ``all_weights``)."""
        per_cell = (4 if self.bias else 2) + (1 if self.proj_size else 0)
        flat = self._flat_weights
        return [flat[i:i + per_cell] for i in range(0, len(flat), per_cell)]

    def flatten_parameters(self) -> None:
        """A no-op: padkern's kernels read each parameter where it is (torch.nn compacts them
        into one buffer for cuDNN). Kept so code written for torch.nn runs unchanged."""

    def reset_parameters(self) -> None:
        # torch.nn.LSTM/GRU/RNN's initialisation.
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _layer_parameters(self, layer: int, reverse: bool):
        name = f"l{layer}{'_reverse' if reverse else ''}"
        weights = [getattr(self, f"weight_ih_{name}"), getattr(self, f"weight_hh_{name}")]
        biases = [getattr(self, f"bias_ih_{name}"), getattr(self, f"bias_hh_{name}")] if self.bias else [None, None]
        return weights + biases

    def _layer_options(self, layer: int, reverse: bool) -> dict:
        """Keyword arguments of the layer's op beyond its four weights (LSTM: w_hr)."""
        return {}

    def extra_repr(self) -> str:
        projection = f", proj_size={self.proj_size}" if self.proj_size else ""
        return (f"{self.input_size}, {self.hidden_size}{projection}, num_layers={self.num_layers}, bias={self.bias}, "
                f"batch_first={self.batch_first}, dropout={self.dropout}, bidirectional={self.bidirectional}")

    # ----- input and output forms -------------------------------------------------------
    def _check_input_size(self, features: torch.Tensor) -> None:
        # torch.nn.LSTM's message, raised before any conversion so the ops never see the mismatch.
        if features.shape[-1] != self.input_size:
            raise RuntimeError(
                f"input.size(-1) must be equal to input_size. Expected {self.input_size}, got {features.shape[-1]}")

    def _to_ragged(self, input, lengths):
        if isinstance(input, Ragged):
            input._check()  # values a tensor with a token dimension, offsets well formed
            self._check_input_size(input.values)
            return input, ("ragged", None)
        if isinstance(input, torch.Tensor) and input.is_nested:
            if not _nested.is_jagged(input):
                raise TypeError(f"a torch.nested input must have layout=torch.jagged, got {input.layout}")
            if lengths is not None:
                raise ValueError("lengths must be None for a torch.nested input (its offsets give the lengths)")
            # Always [B, j, input_size], whatever batch_first says: a nested tensor's batch comes first.
            ragged = _nested.ragged_of(input)
            self._check_input_size(ragged.values)
            return ragged, ("nested", input)
        if isinstance(input, PackedSequence):
            self._check_input_size(input.data)
            return Ragged.from_packed(input), ("packed", input)
        if not isinstance(input, torch.Tensor):
            raise TypeError("input must be a padkern.Ragged, a PackedSequence, or a padded 3-D tensor, "
                            f"got {type(input).__name__}")
        if input.dim() != 3:
            # torch.nn's message.
            raise ValueError(f"{type(self).__name__}: Expected input to be 2D or 3D, got {input.dim()}D instead")
        self._check_input_size(input)
        batch, steps = (input.shape[0], input.shape[1]) if self.batch_first else (input.shape[1], input.shape[0])
        if lengths is None:
            lengths = torch.full((batch,), steps, dtype=torch.int64)
        return Ragged.from_padded(input, lengths, self.batch_first, backend=self.backend), ("padded", steps)

    def _from_ragged(self, output: Ragged, form):
        kind, detail = form
        if kind == "packed":
            return output.to_packed_like(detail)
        if kind == "padded":
            return output.to_padded(detail, batch_first=self.batch_first, backend=self.backend)
        if kind == "nested":
            return _nested.nested_like(output, detail)
        return output

    def _initial_states(self, hx, batch, like, count):
        """hx as `count` tensors [layers*directions, B, *] (zeros when not given): h of
        output_size columns, c (LSTM) of hidden_size."""
        shapes = [(self.num_layers * self.num_directions, batch, self.output_size if index == 0 else self.hidden_size)
                  for index in range(count)]
        if hx is None:
            return [like.new_zeros(shape) for shape in shapes]
        states = list(hx) if isinstance(hx, (tuple, list)) else [hx]
        if len(states) != count:
            raise ValueError(f"hx must hold {count} tensor(s), got {len(states)}")
        for index, (state, shape) in enumerate(zip(states, shapes)):
            if not isinstance(state, torch.Tensor):
                raise TypeError(f"hx must hold tensors, got {type(state).__name__} at position {index}")
            if tuple(state.shape) != shape:
                # torch.nn's message; a ValueError as well, for code written against padkern.
                which = f"hidden[{index}]" if count == 2 else "hidden"
                raise HiddenSizeError(f"Expected {which} size {shape}, got {list(state.shape)} "
                                      f"(hx must have shape {shape}, got {tuple(state.shape)})")
        return states

    def _run_unbatched(self, input, hx, state_count, cell):
        """One sequence [T, input_size] (hx [layers*directions, H]): a batch of one."""
        if hx is not None:
            states = list(hx) if isinstance(hx, (tuple, list)) else [hx]
            if any(state.dim() != 2 for state in states):  # torch.nn's messages
                if len(states) == 2:
                    raise RuntimeError("For unbatched 2-D input, hx and cx should also be 2-D but got "
                                       f"({states[0].dim()}-D, {states[1].dim()}-D) tensors")
                raise RuntimeError(f"For unbatched 2-D input, hx should also be 2-D but got {states[0].dim()}-D tensor")
            hx = [state.unsqueeze(1) for state in states]
        batch_dim = 0 if self.batch_first else 1
        output, finals = self._run(input.unsqueeze(batch_dim), hx, None, state_count, cell)
        return output.squeeze(batch_dim), [final.squeeze(1) for final in finals]

    def _run(self, input, hx, lengths, state_count, cell):
        if isinstance(input, torch.Tensor) and not input.is_nested and input.dim() == 2:
            if lengths is not None:
                raise ValueError("lengths must be None for unbatched 2-D input (one sequence of all its rows)")
            return self._run_unbatched(input, hx, state_count, cell)
        ragged, form = self._to_ragged(input, lengths)
        states = self._initial_states(hx, ragged.batch_size, ragged.values, state_count)
        values, finals = ragged.values, [[] for _ in range(state_count)]
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.num_directions):
                index = layer * self.num_directions + direction
                result = cell(values, ragged.offsets, *self._layer_parameters(layer, direction == 1),
                              *[state[index] for state in states], reverse=direction == 1, backend=self.backend,
                              **self._layer_options(layer, direction == 1))
                outputs.append(result[0])
                for slot, final in zip(finals, result[1:]):
                    slot.append(final)
            values = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                values = F.dropout(values, self.dropout, training=True)
        finals = [torch.stack(slot) for slot in finals]
        return self._from_ragged(ragged.with_values(values), form), finals


class LSTM(_RaggedRNN):
    """Drop-in ``torch.nn.LSTM`` over ragged batches; returns ``(output, (h_n, c_n))``.
    ``proj_size > 0`` is torch.nn's LSTM with projections (``weight_hr_l{k}`` [proj_size,
    hidden_size]; h and the output have proj_size columns per direction, c hidden_size)."""

    GATES = 4

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, device=None, dtype=None, *, backend=None):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, device,
                         dtype, backend=backend, proj_size=proj_size)

    def _layer_options(self, layer: int, reverse: bool) -> dict:
        if not self.proj_size:
            return {}
        return {"w_hr": getattr(self, f"weight_hr_l{layer}{'_reverse' if reverse else ''}")}

    def forward(self, input, hx=None, lengths=None):
        output, (h_n, c_n) = self._run(input, hx, lengths, 2, ops.lstm)
        return output, (h_n, c_n)


class GRU(_RaggedRNN):
    """Drop-in ``torch.nn.GRU`` over ragged batches; returns ``(output, h_n)``."""

    GATES = 3

    def forward(self, input, hx=None, lengths=None):
        output, (h_n,) = self._run(input, hx, lengths, 1, ops.gru)
        return output, h_n


class RNN(_RaggedRNN):
    """Drop-in ``torch.nn.RNN`` (``nonlinearity`` "tanh" or "relu") over ragged batches;
    returns ``(output, h_n)``. Arguments in torch.nn.RNN's order: ``nonlinearity`` comes
    fourth, after ``num_layers``."""

    GATES = 1

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None, *, backend=None, proj_size=None):
        if not isinstance(nonlinearity, str) or nonlinearity not in NONLINEARITIES:
            # torch.nn.RNN's message.
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, device,
                         dtype, backend=backend, proj_size=proj_size)
        self.nonlinearity = nonlinearity

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, nonlinearity={self.nonlinearity!r}"

    def forward(self, input, hx=None, lengths=None):
        cell = functools.partial(ops.rnn, nonlinearity=self.nonlinearity)
        output, (h_n,) = self._run(input, hx, lengths, 1, cell)
        return output, h_n
