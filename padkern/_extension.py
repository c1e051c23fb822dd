"""Loads the compiled kernels, remembering why one is missing so errors can say so."""
import importlib

import torch

from . import _schemas  # noqa: F401  (schemas must exist before the kernels register against them)


def _load(module: str):
    try:
        importlib.import_module(module)
        return None
    except ImportError as error:
        return str(error)


CPU_MISSING = _load("padkern._C")
CUDA_MISSING = _load("padkern._cuda") if torch.version.cuda is not None else "torch is a CPU-only build"

try:
    import triton  # noqa: F401

    TRITON_MISSING = None
except ImportError as error:
    TRITON_MISSING = str(error)
