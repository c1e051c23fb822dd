"""padkern::step_gemm, the CPU recurrences' per-step GEMM (csrc/cpu/step_gemm.h): float32
through oneDNN's brgemm micro-kernel on the weight laid out in column panels, float64 through
at::mm. Against a float64 truth at the edges of its 64-row blocks and 128-column panels, with
and without accumulation, on any thread count, and with oneDNN switched off (torch's brgemm
then falls back to its BLAS)."""
import pytest
import torch

import padkern.ops  # noqa: F401  (loads the extension)
from error_bounds import assert_within, sum_bound

ROW_BLOCK, PANEL = 64, 128
step_gemm = torch.ops.padkern.step_gemm


def truth_and_bound(rows, weight, accumulate):
    """rows @ weight^T (+ accumulate) in float64 and its bound: a sum of K products, plus one
    more term when accumulating."""
    r, w = rows.double(), weight.double()
    truth = r @ w.t()
    magnitude = r.abs() @ w.abs().t()
    terms = rows.shape[1]
    if accumulate is not None:
        truth = truth + accumulate.double()
        magnitude = magnitude + accumulate.double().abs()
        terms += 1
    return truth, sum_bound(magnitude, terms, rows.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("m", [1, ROW_BLOCK - 1, ROW_BLOCK, ROW_BLOCK + 1, 2 * ROW_BLOCK + 3])
@pytest.mark.parametrize("n", [1, PANEL - 1, PANEL, PANEL + 1, 3 * PANEL + 17])
@pytest.mark.parametrize("accumulating", [False, True])
def test_within_bound_at_block_and_panel_edges(dtype, m, n, accumulating):
    g = torch.Generator().manual_seed(1000 * m + n)
    k = 37  # not a multiple of any vector width
    rows, weight = torch.randn(m, k, generator=g, dtype=dtype), torch.randn(n, k, generator=g, dtype=dtype)
    accumulate = torch.randn(m, n, generator=g, dtype=dtype) if accumulating else None
    truth, bound = truth_and_bound(rows, weight, accumulate)
    got = step_gemm(rows, weight, accumulate)
    assert got.dtype == dtype
    assert_within(got, truth, bound, f"M={m} N={n} accumulate={accumulating}")


@pytest.mark.parametrize("k", [1, 256, 1024])
def test_recurrence_shapes(k):
    """Hidden sizes a recurrence meets: w_hh^T forward ([4H, H]) and w_hh backward ([H, 4H])."""
    g = torch.Generator().manual_seed(k)
    for n, inner in ((4 * k, k), (k, 4 * k)):
        rows, weight = torch.randn(33, inner, generator=g), torch.randn(n, inner, generator=g)
        truth, bound = truth_and_bound(rows, weight, None)
        assert_within(step_gemm(rows, weight, None), truth, bound, f"[{n}, {inner}]")


def test_empty_operands():
    assert step_gemm(torch.zeros(0, 8), torch.ones(5, 8), None).shape == (0, 5)
    assert step_gemm(torch.ones(3, 8), torch.ones(0, 8), None).shape == (3, 0)
    # K = 0: a sum of no terms, so the result is the accumulator (or zeros).
    torch.testing.assert_close(step_gemm(torch.ones(3, 0), torch.ones(5, 0), None), torch.zeros(3, 5))
    base = torch.randn(3, 5)
    torch.testing.assert_close(step_gemm(torch.ones(3, 0), torch.ones(5, 0), base), base)


def test_accumulate_is_not_written():
    rows, weight, base = torch.randn(70, 16), torch.randn(130, 16), torch.randn(70, 130)
    before = base.clone()
    step_gemm(rows, weight, base)
    assert torch.equal(base, before), "the op returns a new tensor; its accumulate argument is read only"


def test_strided_inputs():
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(48, 90, generator=g).t()  # [90, 48], column-major
    weight = torch.randn(200, 48 * 2, generator=g)[:, ::2]  # every other column
    accumulate = torch.randn(200, 90, generator=g).t()  # [90, 200], column-major
    truth, bound = truth_and_bound(rows, weight, accumulate)
    assert_within(step_gemm(rows, weight, accumulate), truth, bound)


@pytest.mark.parametrize("m, n", [(150, 1000), (3, 130), (1, 70)])
def test_any_thread_count(m, n):
    """Every block computed once whichever thread runs it, including a few blocks split into
    column parts for more threads (130 columns: the parts of the second panel past column 160
    lie wholly in its zero padding and are skipped)."""
    g = torch.Generator().manual_seed(m)
    rows, weight, base = (torch.randn(m, 256, generator=g), torch.randn(n, 256, generator=g),
                          torch.randn(m, n, generator=g))
    truth, bound = truth_and_bound(rows, weight, base)
    threads = torch.get_num_threads()
    try:
        for count in (1, 2, 3, 8):
            torch.set_num_threads(count)
            assert_within(step_gemm(rows, weight, base), truth, bound, f"{count} threads")
            assert_within(step_gemm(rows, weight, None), *truth_and_bound(rows, weight, None), f"{count} threads")
    finally:
        torch.set_num_threads(threads)


def test_opcheck():
    rows, weight = torch.randn(70, 12), torch.randn(130, 12)
    torch.library.opcheck(step_gemm, (rows, weight, None))
    torch.library.opcheck(step_gemm, (rows, weight, torch.randn(70, 130)))


def test_with_onednn_disabled():
    """torch.backends.mkldnn off: torch's brgemm falls back to its BLAS, same contract."""
    g = torch.Generator().manual_seed(2)
    rows, weight, base = torch.randn(70, 40, generator=g), torch.randn(130, 40, generator=g), torch.randn(70, 130)
    truth, bound = truth_and_bound(rows, weight, base)
    with torch.backends.mkldnn.flags(enabled=False):
        got = step_gemm(rows, weight, base)
    assert_within(got, truth, bound)


@pytest.mark.parametrize("rows, weight, accumulate, message", [
    (torch.ones(3, 4), torch.ones(5, 6), None, "rows \\[M, K\\] and weight \\[N, K\\]"),
    (torch.ones(3, 4, 1), torch.ones(5, 4), None, "rows \\[M, K\\] and weight \\[N, K\\]"),
    (torch.ones(3, 4, dtype=torch.int64), torch.ones(5, 4, dtype=torch.int64), None, "float32 or float64"),
    (torch.ones(3, 4), torch.ones(5, 4, dtype=torch.float64), None, "weight must be"),
    (torch.ones(3, 4), torch.ones(5, 4), torch.ones(3, 6), "accumulate must have shape"),
    (torch.ones(3, 4), torch.ones(5, 4), torch.ones(3, 5, dtype=torch.float64), "accumulate must be"),
])
def test_bad_input_names_the_argument(rows, weight, accumulate, message):
    with pytest.raises(RuntimeError, match=message):
        step_gemm(rows, weight, accumulate)
