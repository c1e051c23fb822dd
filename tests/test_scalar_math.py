"""The CPU kernels' shared scalar maths (csrc/include/padkern/scalar_math.h, rnn_cells.h),
compiled on its own: host exp against libm (tests/cpp/scalar_math_test.cpp), and the
recurrences' gate loops vectorised in every target clone (tests/cpp/gate_loop_vectorises.cpp),
read from gcc's vectoriser report with the extension's own compiler flags."""
import ast
import os
import re
import subprocess

import pytest

from cpp_checks import CPP, INCLUDE, ROOT, needs_gxx, run_cpp_check


def extension_cxx_flags():
    """setup.py's CXX_FLAGS, read without running setup.py."""
    tree = ast.parse(open(os.path.join(ROOT, "setup.py")).read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "CXX_FLAGS":
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py no longer defines CXX_FLAGS")


@needs_gxx
def test_host_exp_against_libm(tmp_path):
    run_cpp_check("scalar_math_test", tmp_path, optimisation="-O2")


@needs_gxx
def test_gate_loops_vectorise_in_every_clone(tmp_path):
    source = os.path.join(CPP, "gate_loop_vectorises.cpp")
    done = subprocess.run(["g++", "-std=c++17", *extension_cxx_flags(), "-I", INCLUDE, "-c", source,
                           "-o", str(tmp_path / "loops.o"), "-fopt-info-vec-optimized"],
                          capture_output=True, text=True, check=True)
    if "vectorized" not in done.stderr:
        pytest.skip("this compiler gives no vectoriser report")
    markers = [(number, line.split("// LOOP ")[1].strip())
               for number, line in enumerate(open(source).read().splitlines(), start=1) if "// LOOP " in line]
    widths = {name: set() for _, name in markers}
    for line, width in re.findall(r"gate_loop_vectorises\.cpp:(\d+):\d+: optimized: loop vectorized using (\d+) byte",
                                  done.stderr):
        name = [n for start, n in markers if start <= int(line)][-1]
        widths[name].add(int(width))
    for name, seen in widths.items():
        # 64-byte vectors: the AVX-512 clone; 32: AVX2; 16: the default (SSE) clone.
        assert {64, 32, 16} <= seen, f"the {name} gate loop is scalar in some clone (vector widths seen: {sorted(seen)})"
