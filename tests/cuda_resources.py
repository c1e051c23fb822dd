"""Registers, spills, stack and static shared memory of every CUDA kernel instantiation.

Compiles each ``csrc/cuda/*.cu`` to a cubin for one architecture with ``ptxas -v`` and
prints one row per kernel. No GPU is needed, only nvcc. A kernel that spills, or whose
static shared memory exceeds the 48 KB a block may declare statically (more needs the
dynamic opt-in, up to 227 KB on sm_90, which a launch asks for), is a defect:
``tests/test_cuda_resources.py`` checks both for sm_90 in CI (the build itself prints
ptxas's spill warnings: setup.py passes ``-warn-spills``).

    python tests/cuda_resources.py [--arch 90]
"""
import argparse
import concurrent.futures
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Static shared memory one block may declare (ptxas reports only the static part).
STATIC_SHARED_LIMIT_BYTES = 48 * 1024

_ENTRY = re.compile(r"Compiling entry function '([^']+)' for 'sm_(\w+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(?:, used \d+ barriers)?(?:, (\d+) bytes smem)?")


def nvcc_path():
    home = os.environ.get("CUDA_HOME") or "/usr/local/cuda"
    path = os.path.join(home, "bin", "nvcc")
    return path if os.path.exists(path) else shutil.which("nvcc")


def include_dirs():
    """padkern's headers and the CUDA headers a minimal toolkit lacks (from torch's nvidia wheels)."""
    found = [os.path.join(ROOT, "csrc", "include")]
    for path in sys.path:
        found += sorted(glob.glob(os.path.join(path, "nvidia", "cu*", "include")))
    return found


def parse(ptxas_output: str):
    """One dict per entry function, in the order ptxas reports them."""
    kernels, current = [], None
    for line in ptxas_output.splitlines():
        if m := _ENTRY.search(line):
            current = {"mangled": m.group(1), "registers": 0, "stack": 0, "spill_stores": 0, "spill_loads": 0,
                       "shared": 0}
            kernels.append(current)
        elif current is not None and (m := _FRAME.search(line)):
            current["stack"], current["spill_stores"], current["spill_loads"] = map(int, m.groups())
        elif current is not None and (m := _USED.search(line)):
            current["registers"] = int(m.group(1))
            current["shared"] = int(m.group(2) or 0)
    return kernels


def demangle(names):
    tool = shutil.which("c++filt")
    if tool is None:
        return list(names)
    out = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    return out.splitlines()


def compile_report(source: str, arch: str, workdir: str):
    nvcc = nvcc_path()
    cubin = os.path.join(workdir, os.path.basename(source) + ".cubin")
    # The flags torch's extension build and setup.py give nvcc, so the code compiled is the
    # code shipped.
    from torch.utils.cpp_extension import COMMON_NVCC_FLAGS

    cmd = [nvcc, "-std=c++17", "-O3", "-lineinfo", *COMMON_NVCC_FLAGS, f"-arch=sm_{arch}", "-cubin", "-Xptxas=-v",
           "-o", cubin, source]
    for inc in include_dirs():
        cmd += ["-I", inc]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"nvcc failed on {source}:\n{done.stderr[-4000:]}")
    kernels = parse(done.stderr + done.stdout)
    for kernel, name in zip(kernels, demangle([k["mangled"] for k in kernels])):
        kernel["name"], kernel["source"] = name, os.path.relpath(source, ROOT)
    return kernels


def report(arch: str = "90", jobs: int = 2):
    sources = sorted(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")))
    with tempfile.TemporaryDirectory() as workdir, concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        results = pool.map(lambda s: compile_report(s, arch, workdir), sources)
        return [k for kernels in results for k in kernels]


def problems(kernels, arch: str):
    limit = STATIC_SHARED_LIMIT_BYTES
    found = []
    for k in kernels:
        if k["spill_stores"] or k["spill_loads"]:
            found.append(f"{k['name']}: spills {k['spill_stores']} B stored / {k['spill_loads']} B loaded")
        if k["shared"] > limit:
            found.append(f"{k['name']}: {k['shared']} B static shared memory > {limit} B")
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="90")
    args = parser.parse_args()
    kernels = report(args.arch)
    print(f"{'regs':>5} {'spill st/ld':>11} {'stack':>6} {'smem':>7}  kernel (sm_{args.arch})")
    for k in kernels:
        name = k["name"] if len(k["name"]) < 140 else k["name"][:137] + "..."
        print(f"{k['registers']:>5} {k['spill_stores']:>5}/{k['spill_loads']:<5} {k['stack']:>6} {k['shared']:>7}  {name}")
    found = problems(kernels, args.arch)
    for line in found:
        print("PROBLEM:", line)
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
