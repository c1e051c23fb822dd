"""``grad^T @ rows``: the weight gradient of a layer shared by every token (the linear
layers, a recurrence's input and recurrent weights), one GEMM over all L tokens.

On an AVX-512 CPU, float32, this goes through oneDNN's linear where torch has it, as the
C++ linear kernels' forward GEMMs do (csrc/cpu/linear_gemm.h). oneDNN's linear reduces over
the operands' contiguous axis, here L, the outer one of both, so each chunk of rows is
transposed first; a chunk stays in the L2, where the whole tensors' transposes cost what
oneDNN saved. [1024, 8300] x [8300, 256], one thread: at::mm 39 ms, oneDNN 22-24 ms in
chunks of 256 rows on a Zen 5 core; [4096, 4000] x [4000, 1024] (an LSTM at H = 1024) 285
against 177 ms. With AVX2 only (the same core, torch held to AVX2) both engines ran it in
42 ms, and the transposes made the recurrences' backward 2-5% slower: there it stays
at::mm.
"""
import torch

# Rows per transposed chunk: [N, 256] and [K, 256] float32 fit the L2 for N, K up to 1024.
CHUNK_ROWS = 256
# Below this many multiply-adds oneDNN's per-call cost outweighs its faster kernel (the C++
# kernels' threshold, kOneDnnMinimumMacs in csrc/cpu/linear_gemm.h).
ONEDNN_MINIMUM_MACS = 1 << 21


def _traced(*tensors) -> bool:
    """Under torch.compile's tracing: keep one matmul in the graph (a loop over L's chunks
    would specialise the graph on L)."""
    return torch.compiler.is_compiling() or torch._guards.detect_fake_mode(tensors) is not None


def onednn_linear_available() -> bool:
    """Whether this torch reaches oneDNN's linear (mkldnn::_linear_pointwise) on the CPU."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def onednn_pays() -> bool:
    """Whether the host runs oneDNN's GEMM faster than at::mm's: AVX-512 (see above)."""
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def uses_onednn(grad: torch.Tensor, rows: torch.Tensor) -> bool:
    """Whether weight_gradient(grad, rows) takes the chunked oneDNN route."""
    if grad.device.type != "cpu" or grad.dtype != torch.float32 or rows.dtype != torch.float32:
        return False
    if not onednn_linear_available():
        return False
    if not torch.backends.mkldnn.enabled:  # the user turned oneDNN off
        return False
    if grad.shape[0] != rows.shape[0]:  # at::mm raises the error
        return False
    if not onednn_pays():
        return False
    # Differentiable only as a matmul: under create_graph (double backward) autograd records it.
    if torch.is_grad_enabled() and (grad.requires_grad or rows.requires_grad):
        return False
    if _traced(grad, rows):
        return False
    return grad.shape[0] * grad.shape[1] * rows.shape[1] >= ONEDNN_MINIMUM_MACS


def weight_gradient(grad: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """grad [L, N], rows [L, K] -> grad^T @ rows [N, K]."""
    if not uses_onednn(grad, rows):
        return grad.t() @ rows
    linear = torch.ops.mkldnn._linear_pointwise
    total = None
    for start in range(0, grad.shape[0], CHUNK_ROWS):
        # linear(a, w) = a @ w^T: a = grad_chunk^T [N, R], w = rows_chunk^T [K, R].
        part = linear(grad[start:start + CHUNK_ROWS].t().contiguous(), rows[start:start + CHUNK_ROWS].t().contiguous(),
                      None, "none", [], "")
        total = part if total is None else total.add_(part)
    return total
