"""padkern's ops. Each validates once at the boundary and runs on the backend chosen by
``backend=`` (per call), ``padkern.use_backend`` (per block), or ``auto``."""
from .padding import pad, unpad
from .rnn import GRUOutput, LSTMOutput, gru, lstm

__all__ = ["GRUOutput", "LSTMOutput", "gru", "lstm", "pad", "unpad"]
