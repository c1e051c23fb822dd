"""The C++ checks in tests/cpp: each compiles a shared kernel header for the CPU and exits
non-zero, with a message, on the first wrong result. One way to build and run them."""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INCLUDE = os.path.join(ROOT, "csrc", "include")
CPP = os.path.join(ROOT, "tests", "cpp")

needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="needs a C++ compiler")


def run_cpp_check(name: str, tmp_path, optimisation: str = "-O1", *flags: str) -> None:
    """Compile tests/cpp/<name>.cpp (warnings are errors; `flags` added) and assert that it
    exits 0."""
    binary = tmp_path / name
    subprocess.run(["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", optimisation, *flags, "-I", INCLUDE,
                    os.path.join(CPP, f"{name}.cpp"), "-o", str(binary)], check=True)
    done = subprocess.run([str(binary)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
