"""padkern's ops. Each validates once at the boundary and runs on the backend chosen by
``backend=`` (per call), ``padkern.use_backend`` (per block), or ``auto``."""
from .attention import ragged_attention
from .conv import ragged_conv1d
from .linear import masked_linear, ragged_bmm, ragged_linear, ragged_outer_bmm
from .padding import pad, unpad
from .rnn import GRUOutput, LSTMOutput, RNNOutput, gru, lstm, rnn
from .segment import segment_max, segment_mean, segment_softmax, segment_sum
from . import _autocast
from .._extension import TRITON_MISSING

_autocast.register_all(triton_available=TRITON_MISSING is None)

__all__ = ["GRUOutput", "LSTMOutput", "RNNOutput", "gru", "lstm", "masked_linear", "pad", "ragged_attention", "ragged_bmm",
           "ragged_conv1d", "ragged_linear", "ragged_outer_bmm", "rnn", "segment_max", "segment_mean", "segment_softmax", "segment_sum", "unpad"]
