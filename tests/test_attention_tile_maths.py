"""The per-row maths of the CUDA ragged attention kernel (csrc/include/padkern/attention_tile.h),
compiled for the CPU and checked by tests/cpp/attention_tile_test.cpp: online softmax,
score gradients from lse, causal key ranges and the tile schedule."""
from cpp_checks import needs_gxx, run_cpp_check


@needs_gxx
def test_attention_tile_maths(tmp_path):
    run_cpp_check("attention_tile_test", tmp_path)
