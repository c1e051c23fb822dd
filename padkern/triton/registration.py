"""How padkern's Triton kernels become torch ops.

On a GPU they are ``torch.library.triton_op``s, so torch.compile traces into the
kernels through ``wrap_triton``. Under ``TRITON_INTERPRET=1`` a kernel is a plain
Python function that runs eagerly on whatever tensors it gets (fake ones included),
so there the same function is registered as an opaque ``custom_op`` instead; its
shapes come from the fake function registered beside its native twin.
"""
import torch
from torch.library import triton_op

from .._backend import triton_interpreted


def triton_kernel_op(name: str):
    if triton_interpreted():
        return torch.library.custom_op(name, mutates_args=())
    return triton_op(name, mutates_args=())
