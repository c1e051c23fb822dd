"""Drop-in replacements for torch.nn modules that compute on real tokens only."""
from .conv import Conv1d
from .attention import MultiheadAttention
from .rnn import GRU, LSTM, RNN

__all__ = ["Conv1d", "GRU", "LSTM", "MultiheadAttention", "RNN"]
