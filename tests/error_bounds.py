"""Error bounds for a kernel's floating-point result against a float64 truth, derived from
the dtype's unit roundoff u and the magnitudes summed, so a comparison holds for any data
(a constant atol held float32 segment_sum to 1e-6 and failed on 0.13% of random draws).

The truth is computed in float64 from the inputs as the kernel saw them (already rounded to
the kernel's dtype), so only the kernel's own arithmetic is bounded:

- a sum of n terms, in any order, blocked or pairwise, with or without FMA, then rounded to
  the dtype: |error| <= gamma(n + 1) * sum |terms| (Higham, "Accuracy and Stability of
  Numerical Algorithms", 3.1), gamma(n) = n u / (1 - n u);
- an activation f with |f'| <= lipschitz evaluated on an argument off by e: at most
  lipschitz * e, plus a few u of the argument and of the result for f's own evaluation.
"""
import torch

# The steepest slope of each epilogue activation: relu 1, gelu (erf) 1.129, silu 1.100.
ACTIVATION_LIPSCHITZ = {None: 1.0, "relu": 1.0, "gelu": 1.13, "silu": 1.1}


def unit_roundoff(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps / 2


def gamma(n, dtype: torch.dtype):
    """n u / (1 - n u), elementwise when n is a tensor."""
    u = unit_roundoff(dtype)
    return n * u / (1 - n * u)


def sum_bound(abs_sum, count, dtype):
    """Bound on a computed sum of `count` terms whose absolute values add up to `abs_sum`."""
    return gamma(count + 1, dtype) * abs_sum


def activation_bound(preactivation_bound, preactivation, activation, dtype):
    """Bound after an epilogue activation, from the bound on its argument and the true argument."""
    if activation is None:
        return preactivation_bound
    evaluation = 0.0 if activation == "relu" else 8 * unit_roundoff(dtype) * (preactivation.abs() + preactivation_bound)
    return ACTIVATION_LIPSCHITZ[activation] * preactivation_bound + evaluation


def assert_within(got, truth, bound, what=""):
    """|got - truth| <= bound everywhere (NaN and inf where the truth has them); on failure,
    the worst element's error and bound."""
    got = got.double()
    bound = torch.as_tensor(bound, dtype=torch.float64, device=truth.device).expand_as(truth)
    assert got.shape == truth.shape, f"{what}: shape {tuple(got.shape)} != {tuple(truth.shape)}"
    special = ~torch.isfinite(truth)
    torch.testing.assert_close(got[special], truth[special], rtol=0, atol=0, equal_nan=True, msg=what)
    error = torch.where(special, torch.zeros_like(truth), (got - truth).abs())
    excess = torch.nan_to_num(error - bound, nan=float("inf"))
    if (excess > 0).any():
        worst = int(excess.flatten().argmax())
        raise AssertionError(f"{what}: error {error.flatten()[worst].item():.3g} exceeds its bound "
                             f"{bound.flatten()[worst].item():.3g} at flat index {worst} "
                             f"(got {got.flatten()[worst].item():.17g}, truth {truth.flatten()[worst].item():.17g})")


def assert_within_twice_reference_error(got, reference, truth, dtype, what=""):
    """For computations whose error has no short closed-form bound (recurrences): `got` no
    further from the float64 truth than twice PyTorch's own `reference` computation in the
    same dtype, plus a few roundings at the computation's scale, for where the reference
    happens to land almost exactly: 8 u max(1, |truth|max), the 1 because gates in [0, 1] and
    tanh in [-1, 1] keep a recurrence's intermediates O(1) however small its output."""
    reference_error = (reference.double() - truth).abs().max() if truth.numel() else 0.0
    floor = 8 * unit_roundoff(dtype) * max(1.0, truth.abs().max().item() if truth.numel() else 0.0)
    assert_within(got, truth, 2 * reference_error + floor, what)
