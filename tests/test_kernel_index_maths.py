"""The index maths of the GPU kernels, checked on the CPU by
tests/cpp/kernel_index_maths_test.cpp: the tensor-core main loop's shared-memory layout and
fragment addressing (mma_tile_layout.h) against the PTX ISA's definitions of ldmatrix and
mma.sync, the grouped block order (tile_order.h), and the persistent recurrences' running
prefix and gate epilogue (persistent_rnn_plan.h)."""
from cpp_checks import needs_gxx, run_cpp_check


@needs_gxx
def test_fragment_layout_matches_ptx(tmp_path):
    run_cpp_check("kernel_index_maths_test", tmp_path)
