"""One registration path for every op family: the native ops (C++ on CPU, CUDA on GPU)
and their Triton twins get the same fake functions and the same autograd formulas."""
import torch

from .. import _backend


def register_family(native, triton, fakes, register_autograd) -> None:
    """`native`/`triton`: the family's ops in one order (`triton` None without triton);
    `fakes`: their shape functions in that order; `register_autograd(*ops)`: registers
    the family's backward formulas on one flavour of the ops."""
    for op, fake in zip(native, fakes):
        torch.library.register_fake(op, fake)
    register_autograd(*native)
    if triton is None:
        return
    if _backend.triton_interpreted():
        # Interpreted Triton kernels run eagerly even on fake tensors; give shapes instead.
        for op, fake in zip(triton, fakes):
            op.register_fake(fake)
    register_autograd(*triton)


def needs_grad(*tensors) -> bool:
    """Whether a call must save what its backward needs (kernels skip those writes otherwise)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
