"""The tensor-core main loop's shared-memory layout and fragment addressing
(csrc/include/padkern/mma_tile_layout.h), checked on the CPU against the PTX ISA's
definitions of ldmatrix and mma.sync by tests/cpp/mma_layout_test.cpp."""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs a C++ compiler")
def test_fragment_layout_matches_ptx(tmp_path):
    binary = tmp_path / "mma_layout_test"
    subprocess.run(["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-O1", "-I", os.path.join(ROOT, "csrc", "include"),
                    os.path.join(ROOT, "tests", "cpp", "mma_layout_test.cpp"), "-o", str(binary)], check=True)
    done = subprocess.run([str(binary)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
