"""padkern: compute on ragged batches (values + offsets) instead of padded tensors.

See README.md for the ragged convention, the backends and the build knobs.
"""
from . import _extension  # noqa: F401  (loads the compiled kernels)
from ._backend import BACKENDS, BackendUnavailableError, use_backend
from ._validate import set_debug
from . import ops
from .ragged import Ragged
from ._collate import collate
from . import nn  # noqa: E402  (needs Ragged)

__all__ = ["BACKENDS", "BackendUnavailableError", "Ragged", "collate", "nn", "ops", "set_debug", "use_backend"]
__version__ = "0.1.0"
