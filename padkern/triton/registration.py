"""How padkern's Triton kernels become torch ops.

On a GPU they are ``torch.library.triton_op``s, so torch.compile traces into the
kernels through ``wrap_triton``. Under ``TRITON_INTERPRET=1`` a kernel is a plain
Python function that runs eagerly on whatever tensors it gets (fake ones included),
so there the same function is registered as an opaque ``custom_op`` instead; its
shapes come from the fake function registered beside its native twin.
"""
import torch
from torch.library import triton_op, wrap_triton

from .._backend import triton_interpreted


def triton_kernel_op(name: str):
    if triton_interpreted():
        return torch.library.custom_op(name, mutates_args=())
    return triton_op(name, mutates_args=())


def launchable(kernel):
    """``kernel`` (a ``triton.jit`` or ``triton.autotune`` function), ready for ``[grid](...)``
    inside a ``triton_kernel_op``.

    Compiled, it goes through ``wrap_triton`` so torch.compile can trace the launch.
    Interpreted, the op around it is opaque and nothing traces it, so it is launched as
    it is: ``wrap_triton`` has nothing to add there, and torch 2.11 rejects triton 3.6's
    interpreted kernels ("wrap_triton only works on functions annotated with triton.jit
    or triton.autotune"; torch 2.12 accepts them).
    """
    return kernel if triton_interpreted() else wrap_triton(kernel)
