"""Every CUDA kernel instantiation compiles for sm_90 without register spills and
within the shared memory one block may use (tests/cuda_resources.py prints the table)."""
import os

import pytest
import torch

import cuda_resources

pytestmark = [
    pytest.mark.skipif(torch.version.cuda is None, reason="a CPU-only torch has no CUDA headers to build against"),
    pytest.mark.skipif(cuda_resources.nvcc_path() is None, reason="needs nvcc"),
    pytest.mark.skipif(os.environ.get("PADKERN_NO_CUDA") == "1", reason="CUDA build disabled"),
]


def test_sm90_kernels_do_not_spill_and_fit_shared_memory():
    kernels = cuda_resources.report("90")
    names = [k["name"] for k in kernels]
    # The report must have seen the kernels, or it checks nothing.
    for expected in ("grouped_linear_mma_kernel", "ragged_outer_bmm_mma_kernel", "persistent_forward_kernel", "lstm_forward_kernel", "pad_kernel"):
        assert any(expected in name for name in names), expected
    assert cuda_resources.problems(kernels, "90") == []
