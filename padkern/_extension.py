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


def require_all() -> None:
    """Raise ImportError with each compiled extension's own load error if either is missing.

    A missing extension only drops its backend's tests (tests/conftest.py parametrises over
    the backends that load), so a GPU run whose CUDA extension fails at load (an undefined
    symbol shows only there) would pass without a single cuda-backend case. The GPU run
    (benchmarks/gpu_check.sh, PADKERN_REQUIRE_EXTENSIONS=1) calls this first.
    """
    missing = [f"{name} failed to load: {why}" for name, why in (("padkern._C", CPU_MISSING),
                                                                 ("padkern._cuda", CUDA_MISSING)) if why]
    if missing:
        raise ImportError("\n".join(missing))
