"""Drop-in replacements for torch.nn modules that compute on real tokens only."""
from .rnn import GRU, LSTM, RNN

__all__ = ["GRU", "LSTM", "RNN"]
