"""The CPU kernels' shared scalar maths (csrc/include/padkern/scalar_math.h, rnn_cells.h),
compiled on its own: host exp and the normal CDF against libm (tests/cpp/scalar_math_test.cpp)
at each x86-64 level the clones are built for; the recurrences' gate loops vectorised in every
target clone (tests/cpp/gate_loop_vectorises.cpp), read from gcc's vectoriser report with the
extension's own compiler flags; the attention's softmax rows (softmax_rows.h), the matmuls'
epilogue (epilogue_rows.h) and the segment softmax's columns (segment_columns.h) read from the
clones' machine code; the block transpose (transpose_rows.h) at each level."""
import ast
import os
import platform
import re
import shutil
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


def cpu_flags():
    try:
        return set(next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split())
    except (OSError, StopIteration):
        return set()


# The x86-64 levels the extension's clones are built for (vector_clones.h): the same maths
# contracted into FMAs there, so checked there too where this CPU can run it.
LEVELS = {"x86-64": set(), "x86-64-v3": {"avx2", "fma"}, "x86-64-v4": {"avx512f", "avx512bw", "avx512vl", "avx512dq"}}


@needs_gxx
@pytest.mark.parametrize("level", LEVELS)
def test_host_exp_and_normal_cdf_against_libm(tmp_path, level):
    if platform.machine() != "x86_64":
        pytest.skip("the x86-64 levels need an x86-64 CPU")
    if not LEVELS[level] <= cpu_flags():
        pytest.skip(f"this CPU cannot run {level} code")
    run_cpp_check("scalar_math_test", tmp_path, "-O2", f"-march={level}")


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


@needs_gxx
@pytest.mark.skipif(shutil.which("objdump") is None, reason="needs objdump")
def test_row_loops_vectorise_in_every_clone(tmp_path):
    """The softmax rows', the matmul epilogue's and the segment softmax's loops run on vector
    registers in the AVX-512 and AVX2 clones. Read from the machine code, as gcc's report also
    counts loop versions that never run: it said "vectorized" while a select on the input kept
    these clones scalar (a third of the attention forward's time); libm's erf and exp kept the
    gelu epilogue and the segment softmax scalar, a branch segment_max."""
    source = tmp_path / "rows.cpp"
    source.write_text('#include "padkern/softmax_rows.h"\n'
                      '#include "padkern/epilogue_rows.h"\n'
                      "template float padkern::row_peak<float>(const float*, int64_t);\n"
                      "template float padkern::exp_shifted_row<float>(float*, int64_t, float);\n"
                      "template void padkern::score_gradient_row<float>(const float*, float*, int64_t, float, "
                      "float);\n"
                      "template float padkern::row_dot<float>(const float*, const float*, int64_t);\n"
                      "template void padkern::epilogue_row<float, padkern::kGelu, true, true, float>(float*, float*, "
                      "const float*, int64_t);\n"
                      "template void padkern::epilogue_row<float, padkern::kSilu, false, false, float>(float*, float*, "
                      "const float*, int64_t);\n"
                      '#include "padkern/segment_columns.h"\n'
                      "template void padkern::column_peaks<float, float>(const float*, int64_t, float*, int64_t);\n"
                      "template void padkern::column_exps<float, float>(const float*, int64_t, const float*, float*, "
                      "float*, int64_t);\n"
                      "template void padkern::divide_columns<float, float>(float*, int64_t, const float*, int64_t);\n"
                      "template void padkern::column_maxima<float, float>(const float*, int64_t, int64_t, float*, "
                      "int64_t*, int64_t);\n")
    subprocess.run(["g++", "-std=c++17", *extension_cxx_flags(), "-I", INCLUDE, "-c", str(source),
                    "-o", str(tmp_path / "rows.o")], check=True)
    listing = subprocess.run(["objdump", "-d", "-C", "--no-show-raw-insn", str(tmp_path / "rows.o")],
                             capture_output=True, text=True, check=True).stdout
    functions = {block.splitlines()[0]: block for block in listing.split("\n\n") if block.strip()}
    # The loop's own work on full vector registers: the max, exp's polynomial (6 FMAs), the
    # score gradient's subtraction, delta's dot product; gelu's normal CDF (a 9-term polynomial and an exp), silu's
    # exp; the segment softmax's column max, exp and division; segment_max's comparisons (value
    # above the best, NaN tests).
    # Some vector code appears around a scalar loop too, so presence alone proves nothing.
    for name, instruction, least in (("row_peak<float>", "vmaxps", 1), ("exp_shifted_row<float>", "vfmadd", 6),
                                     ("score_gradient_row<float>", "vsubps", 1), ("row_dot<float>", "vfmadd", 1),
                                     ("epilogue_row<float, 2, true, true, float>", "vfmadd", 15),
                                     ("epilogue_row<float, 3, false, false, float>", "vfmadd", 6),
                                     ("column_peaks<float, float>", "vmaxps", 1),
                                     ("column_exps<float, float>", "vfmadd", 6),
                                     ("divide_columns<float, float>", "vdivps", 1),
                                     ("column_maxima<float, float>", "vcmp", 3)):
        for clone, register in (("arch_x86_64_v4", "%zmm"), ("arch_x86_64_v3", "%ymm")):
            bodies = [body for head, body in functions.items() if name in head and clone in head]
            if not bodies:
                pytest.skip(f"this compiler made no {clone} clone")
            found = sum(instruction in line and register in line for line in bodies[0].splitlines())
            assert found >= least, f"the {clone} clone of {name} runs its loop scalar ({found} {instruction} on {register})"


@needs_gxx
@pytest.mark.parametrize("level", LEVELS)
def test_block_transpose_at_each_level(tmp_path, level):
    """transpose_rows.h's shuffles, compiled for each level its clones are built for, against an
    element loop at every edge of its 8 x 8 blocks."""
    if platform.machine() != "x86_64":
        pytest.skip("the x86-64 levels need an x86-64 CPU")
    if not LEVELS[level] <= cpu_flags():
        pytest.skip(f"this CPU cannot run {level} code")
    run_cpp_check("transpose_rows_test", tmp_path, "-O2", f"-march={level}")
