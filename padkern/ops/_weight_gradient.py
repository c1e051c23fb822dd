"""``grad^T @ rows``: the weight gradient of a layer shared by every token (the linear
layers, a recurrence's input and recurrent weights), one GEMM over all L tokens.

On the CPU in float32 it runs as ``padkern::ragged_outer_bmm`` over one sequence of all L rows:
oneDNN's brgemm micro-kernel over chunks of 64 tokens, each chunk of ``grad`` transposed into
a small buffer (csrc/cpu/brgemm_blocks.h), threads splitting the output into blocks. The product
reduces over L, the outer axis of both operands, which neither at::mm (MKL takes no AVX-512
path on AMD) nor oneDNN's linear (after transposing chunks of both operands) runs at the GEMM
rate. One thread on a Zen 5 core: [L=4243, 512]^T [4243, 512] 10.0 ms against 12.6 through
oneDNN's linear in chunks and 20.8 through at::mm (a forward GEMM of the same FLOPs 9.5);
[8300, 1024]^T [8300, 256] 20.4 against 25.2 and 43.1 (forward 18.3); with torch held to AVX2
18.6 against at::mm's 20.8.
"""
import platform

import torch

from .. import _extension

# Below this many multiply-adds brgemm's per-chunk calls outweigh at::mm's one (the C++
# kernels' threshold for their own GEMM engine, kOneDnnMinimumMacs in csrc/cpu/linear_gemm.h).
BRGEMM_MINIMUM_MACS = 1 << 21


def _traced(*tensors) -> bool:
    """Under torch.compile's tracing: keep one matmul in the graph, as Inductor can fuse and
    plan it (the route below is an opaque op with L's rows as one sequence)."""
    return torch.compiler.is_compiling() or torch._guards.detect_fake_mode(tensors) is not None


def brgemm_available() -> bool:
    """Whether torch's CPU brgemm reaches oneDNN's float32 micro-kernel: x86-64 with AVX2 or
    AVX-512 (torch builds the micro-kernel for x86 only), oneDNN built in and turned on.
    Elsewhere torch's brgemm calls its BLAS per 64-row block, slower than one at::mm."""
    return (platform.machine().lower() in ("x86_64", "amd64")
            and torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
            and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)


def uses_brgemm(grad: torch.Tensor, rows: torch.Tensor) -> bool:
    """Whether weight_gradient(grad, rows) takes the brgemm route."""
    if grad.device.type != "cpu" or grad.dtype != torch.float32 or rows.dtype != torch.float32:
        return False
    if grad.dim() != 2 or rows.dim() != 2 or grad.shape[0] != rows.shape[0]:  # at::mm raises the error
        return False
    if grad.device != rows.device or _extension.CPU_MISSING is not None or not brgemm_available():
        return False
    # Under create_graph (double backward) autograd records this product: keep it a matmul, whose
    # derivatives need nothing of padkern's.
    if torch.is_grad_enabled() and (grad.requires_grad or rows.requires_grad):
        return False
    if _traced(grad, rows):
        return False
    return grad.shape[0] * grad.shape[1] * rows.shape[1] >= BRGEMM_MINIMUM_MACS


def weight_gradient(grad: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """grad [L, N], rows [L, K] -> grad^T @ rows [N, K]."""
    if not uses_brgemm(grad, rows):
        return grad.t() @ rows
    whole = torch.tensor([0, grad.shape[0]], dtype=torch.long, device=grad.device)
    return torch.ops.padkern.ragged_outer_bmm(grad, rows, whole)[0]
