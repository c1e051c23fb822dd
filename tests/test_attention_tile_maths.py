"""The per-row maths of the CUDA ragged attention kernel (csrc/include/padkern/attention_tile.h),
compiled for the CPU and checked by tests/cpp/attention_tile_test.cpp: online softmax,
score gradients from lse, causal key ranges and the tile schedule."""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs a C++ compiler")
def test_attention_tile_maths(tmp_path):
    binary = tmp_path / "attention_tile_test"
    subprocess.run(["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-O1", "-I", os.path.join(ROOT, "csrc", "include"),
                    os.path.join(ROOT, "tests", "cpp", "attention_tile_test.cpp"), "-o", str(binary)], check=True)
    done = subprocess.run([str(binary)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
