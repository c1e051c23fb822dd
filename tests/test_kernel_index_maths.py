"""The index maths of the GPU kernels, checked on the CPU by
tests/cpp/kernel_index_maths_test.cpp: the tensor-core main loop's shared-memory layout and
fragment addressing (mma_tile_layout.h) against the PTX ISA's definitions of ldmatrix and
mma.sync, the grouped block order (tile_order.h), and the persistent recurrences' running
prefix and gate epilogue (persistent_rnn_plan.h)."""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs a C++ compiler")
def test_fragment_layout_matches_ptx(tmp_path):
    binary = tmp_path / "kernel_index_maths_test"
    subprocess.run(["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-O1", "-I", os.path.join(ROOT, "csrc", "include"),
                    os.path.join(ROOT, "tests", "cpp", "kernel_index_maths_test.cpp"), "-o", str(binary)], check=True)
    done = subprocess.run([str(binary)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
