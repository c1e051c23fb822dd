"""What keeps every Triton kernel inside its tensors, whatever it is given.

Two halves. In the launchers (the Python functions that call kernels), checks that
each tensor passed by pointer has the layout, dtype, device and size the kernel
assumes: a caller that skips the public boundary (padkern/_validate.py) gets a
RuntimeError naming the argument instead of memory corruption. In the kernels,
sequence bounds clamped into the tensors: the offsets' *contents* are unchecked on a
GPU outside debug mode (one device-to-host copy per op), so offsets that break the
contract give unspecified values, never an access outside a tensor.
"""
import torch
import triton
import triton.language as tl


# A CUDA grid holds at most 65535 programs along y and z. pad and unpad (time blocks) and the
# segment ops (feature blocks) cap their y with grid_y and loop over the blocks past it; the
# other grids' y and z count blocks of feature dimensions, which stay far below the limit.
MAX_GRID_Y = 65535


def grid_y(blocks: int) -> int:
    """Programs along y for ``blocks`` blocks: each program takes every grid_y-th block."""
    return max(1, min(blocks, MAX_GRID_Y))


def _fail(op: str, name: str, expected: str, tensor: torch.Tensor) -> None:
    raise RuntimeError(f"{op}: {name} must be {expected}, got a {tensor.dtype} tensor of shape "
                       f"{tuple(tensor.shape)} and strides {tensor.stride()} on {tensor.device}")


def check_tensor(op: str, name: str, tensor: torch.Tensor, device: torch.device, shape=None, dtype=None) -> None:
    """``tensor`` is on ``device``, and of ``shape`` / ``dtype`` where given."""
    if tensor.device != device or (dtype is not None and tensor.dtype != dtype):
        _fail(op, name, f"a {dtype or 'tensor'} on {device}", tensor)
    if shape is not None and tuple(tensor.shape) != tuple(shape):
        _fail(op, name, f"of shape {tuple(shape)}", tensor)


def check_dense(op: str, name: str, tensor: torch.Tensor, device: torch.device, shape=None, dtype=None) -> None:
    """As :func:`check_tensor`, and row-major: the kernel computes its addresses from its shape."""
    check_tensor(op, name, tensor, device, shape, dtype)
    if not tensor.is_contiguous():
        _fail(op, name, "contiguous (row-major)", tensor)


def check_unit_feature_stride(op: str, name: str, tensor: torch.Tensor, device: torch.device, dim: int) -> None:
    """A ``dim``-D tensor on ``device`` whose last dimension has stride 1 (other strides are passed)."""
    if tensor.device != device or tensor.dim() != dim:
        _fail(op, name, f"a {dim}-D tensor on {device}", tensor)
    if tensor.shape[-1] > 1 and tensor.stride(-1) != 1:
        _fail(op, name, "of unit stride along its last (feature) dimension", tensor)


def check_element_type(op: str, name: str, tensor: torch.Tensor) -> None:
    """A dtype Triton can point at: it has no complex element types."""
    if tensor.dtype.is_complex:
        raise TypeError(f"{op}: {name} is {tensor.dtype}, which the triton backend does not support; "
                        "use backend='cpu', 'cuda' or 'reference'")


def check_offsets(op: str, offsets: torch.Tensor, device: torch.device, batch: int | None = None) -> None:
    """int64, contiguous, 1-D, on ``device``, with ``batch + 1`` entries where ``batch`` is given."""
    if offsets.dim() != 1 or offsets.numel() < 1:
        _fail(op, "offsets", "1-D with B+1 >= 1 entries", offsets)
    check_dense(op, "offsets", offsets, device, None if batch is None else (batch + 1,), torch.int64)


@triton.jit
def sequence_bounds(p_offsets, i_b, L):
    """Rows [bos, eos) of sequence ``i_b`` of a ragged tensor of L rows, int64, clamped
    so that 0 <= bos <= eos <= L."""
    bos = tl.load(p_offsets + i_b).to(tl.int64)
    eos = tl.load(p_offsets + i_b + 1).to(tl.int64)
    bos = tl.minimum(tl.maximum(bos, 0), L)
    eos = tl.minimum(tl.maximum(eos, bos), L)
    return bos, eos


@triton.jit
def padded_length(p_offsets, i_b, T):
    """Length of sequence ``i_b`` of a padded tensor of T steps, int64, clamped into
    [0, T]: steps past T do not exist in the padded tensor."""
    length = tl.load(p_offsets + i_b + 1).to(tl.int64) - tl.load(p_offsets + i_b).to(tl.int64)
    return tl.minimum(tl.maximum(length, 0), T)
