"""Backend choice: explicit, never a silent fallback.

``auto`` picks the fastest backend built for the tensors' device. On a GPU that is the
order measured for the op and dtype on that GPU's architecture (padkern/auto_table.json,
see ``_auto_table``), else ``cuda`` then ``triton`` then ``reference``; on the CPU,
``cpu`` then ``reference``.
A backend that was asked for by name (per call or through ``use_backend``) and
cannot run raises :class:`BackendUnavailableError` saying what is missing.
"""
import contextlib
import os

import torch

from . import _auto_table, _extension

BACKENDS = ("auto", "cuda", "triton", "cpu", "reference")

# A plain list (not a contextvar) so torch.compile can read and guard on it.
_forced: list = []


class BackendUnavailableError(RuntimeError):
    pass


def _check_name(name: str) -> None:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")


@contextlib.contextmanager
def use_backend(name: str):
    """Run every padkern op inside the block on backend ``name``."""
    _check_name(name)
    _forced.append(name)
    try:
        yield
    finally:
        _forced.pop()


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def why_unavailable(name: str, device: torch.device):
    """None when ``name`` can run on ``device``, else the reason it cannot."""
    if name == "reference":
        return None
    if name == "cpu":
        if device.type != "cpu":
            return f"the cpu backend runs on CPU tensors, got tensors on {device}"
        if _extension.CPU_MISSING:
            return f"padkern's C++ extension is not built ({_extension.CPU_MISSING})"
        return None
    if name == "cuda":
        if device.type != "cuda":
            return f"the cuda backend runs on CUDA tensors, got tensors on {device}"
        if _extension.CUDA_MISSING:
            return f"padkern's CUDA extension is not built ({_extension.CUDA_MISSING})"
        return None
    if name == "triton":
        if _extension.TRITON_MISSING:
            return f"triton is not installed ({_extension.TRITON_MISSING})"
        if device.type == "cpu" and not triton_interpreted():
            return "triton runs on CPU tensors only under TRITON_INTERPRET=1"
        if device.type not in ("cpu", "cuda"):
            return f"triton does not run on {device}"
        return None
    raise AssertionError(name)


def requested_name(requested) -> str:
    """The backend asked for: the per-call choice, else ``use_backend``'s, else "auto"."""
    return requested if requested is not None else (_forced[-1] if _forced else "auto")


def resolve(requested, device: torch.device, op: str = None, dtype: torch.dtype = None) -> str:
    """The backend an op runs on: the per-call choice, else ``use_backend``'s, else auto
    (for ``op`` on ``dtype``: the public op's name, e.g. "masked_linear")."""
    name = requested_name(requested)
    _check_name(name)
    if name == "auto":
        if device.type != "cuda":
            order = ("cpu", "reference")
        else:
            order = ("cuda", "triton", "reference")
            if op is not None and dtype is not None:
                measured = _auto_table.measured_order(op, str(dtype).replace("torch.", ""),
                                                      -1 if device.index is None else device.index)
                order = _auto_table.merged_order(measured, order)
        return next(n for n in order if why_unavailable(n, device) is None)
    reason = why_unavailable(name, device)
    if reason is not None:
        raise BackendUnavailableError(f"backend {name!r} was requested but is unavailable: {reason}")
    return name
