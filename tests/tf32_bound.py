"""How far a float32 matmul may be from the float64 truth when TF32 is allowed.

With TF32, tensor cores read each float32 operand with 10 of its 23 explicit mantissa bits:
rounded to nearest that errs by at most 2^-11 of the value, truncated (what the hardware does
to an operand nobody converted) by less than 2^-10. The bound takes truncation, so it holds
whichever kernel cuBLAS or padkern picks, and for exact float32 kernels too (cuBLAS computes
tiny shapes such as K = N = 1 in exact float32, so PyTorch's own error there is no yardstick).

For one output, a sum of ``depth`` products a*b plus a bias, each product of TF32 operands is
off by less than (2u + u^2)|a||b| (u = 2^-10), and float32 accumulation of the terms, the bias
add and the final rounding add at most (depth + 2) * 2^-24 of the terms' magnitudes summed.
An activation after it moves the error by at most its steepest slope (gelu's 1.129).
"""
import torch

TF32_MANTISSA_BITS = 10
OPERAND_ERROR = 2.0 ** -TF32_MANTISSA_BITS
FLOAT32_UNIT_ROUNDOFF = 2.0 ** -24
# Largest |d act/dz|: gelu 1.129, silu 1.0998, relu 1.
STEEPEST_ACTIVATION = 1.13


def tf32_error_bound(magnitude: torch.Tensor, depth: int, activation: bool = False) -> torch.Tensor:
    """Per-element bound on |float32-with-TF32 result - float64 truth|. ``magnitude`` is, per
    output element, the sum of |a||b| over its products plus |bias| (the same computation in
    float64 on the inputs' absolute values); ``depth`` the most products summed into one."""
    per_unit = 2 * OPERAND_ERROR + OPERAND_ERROR ** 2 + (depth + 2) * FLOAT32_UNIT_ROUNDOFF
    return per_unit * (STEEPEST_ACTIVATION if activation else 1.0) * magnitude


def to_tf32(x: torch.Tensor, rounding: str = "truncate") -> torch.Tensor:
    """float32 ``x`` with only TF32's 10 explicit mantissa bits kept (``truncate`` or ``nearest``):
    what a tensor core multiplies, for checking the bound without one."""
    bits = x.float().contiguous().view(torch.int32)
    dropped = 23 - TF32_MANTISSA_BITS
    if rounding == "nearest":
        bits = bits + (1 << (dropped - 1))  # carries into the exponent where it should
    elif rounding != "truncate":
        raise ValueError(f"rounding must be 'truncate' or 'nearest', got {rounding!r}")
    return (bits & ~((1 << dropped) - 1)).view(torch.float32)


def assert_within_tf32_bound(ours: torch.Tensor, truth: torch.Tensor, magnitude: torch.Tensor, depth: int,
                             activation: bool = False) -> None:
    error = (ours.double() - truth).abs()
    bound = tf32_error_bound(magnitude, depth, activation)
    assert not torch.isnan(error).any(), "NaN in the result"
    worst = (error - bound).argmax()
    assert error.flatten()[worst] <= bound.flatten()[worst], (
        f"error {error.flatten()[worst].item():.3e} past the TF32 bound {bound.flatten()[worst].item():.3e} "
        f"at flat index {worst.item()} (depth {depth})")
