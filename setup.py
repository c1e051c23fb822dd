"""Build padkern's C++ CPU extension and, where the toolchain allows, its CUDA extension.

The CUDA extension is built when the installed torch is a CUDA build and nvcc is
found under CUDA_HOME: whether a GPU is present is irrelevant, so CUDA code
compiles and links on a CPU-only machine too.

Supported: torch 2.11 or newer (the lowest, 2.11.0 with triton 3.6.0, is what the GPU
machine runs and is tested in CI as `make test-gpu-stack`), triton 3.6 to 3.9 (optional:
the Triton backend). An older torch stops the build here with that range.

Knobs (environment variables):
  PADKERN_NO_CUDA=1          build the CPU extension only
  PADKERN_CUDA_ARCHS="80;90" compute capabilities to compile for (default 80;90)
"""
import glob
import os
import sys

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

TORCH_MIN = (2, 11)
TRITON_RANGE = "triton>=3.6,<3.10"
if tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2]) < TORCH_MIN:
    sys.exit(f"padkern needs torch >= {TORCH_MIN[0]}.{TORCH_MIN[1]}, found torch {torch.__version__}")

HERE = os.path.dirname(os.path.abspath(__file__))
INCLUDE = [os.path.join(HERE, "csrc", "include")]
# C++ standard left to torch (2.14 needs C++20 for its headers).
# -fno-trapping-math lets the compiler if-convert, and so vectorise, the gate loops.
CXX_FLAGS = ["-O3", "-fopenmp", "-fno-trapping-math"]


def cuda_build_wanted() -> bool:
    if os.environ.get("PADKERN_NO_CUDA", "0") == "1":
        return False
    if torch.version.cuda is None:
        print("padkern: torch is a CPU-only build; building CPU kernels only", file=sys.stderr)
        return False
    if CUDA_HOME is None or not os.path.exists(os.path.join(CUDA_HOME, "bin", "nvcc")):
        print("padkern: nvcc not found under CUDA_HOME; building CPU kernels only", file=sys.stderr)
        return False
    return True


def cuda_arch_flags() -> list:
    archs = os.environ.get("PADKERN_CUDA_ARCHS", "80;90").replace(",", ";").split(";")
    # "90a" and the like keep their suffix; order by the number.
    archs = sorted({a.strip().replace(".", "") for a in archs if a.strip()}, key=lambda a: (int(a.rstrip("af")), a))
    flags = []
    for arch in archs:
        flags += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
    # PTX for the newest arch too: a newer GPU JIT-compiles it instead of failing with
    # "no kernel image is available".
    # Arch-specific PTX ("90a") does not JIT on later GPUs: embed the plain arch's.
    if archs:
        newest = archs[-1].rstrip("af")
        flags += ["-gencode", f"arch=compute_{newest},code=compute_{newest}"]
    return flags


def cuda_toolkit_includes() -> list:
    # A minimal toolkit ships without cuBLAS/cuSPARSE headers that ATen's CUDA
    # headers include; the CUDA build of torch brings them as nvidia-* wheels.
    found = []
    for path in sys.path:
        found += glob.glob(os.path.join(path, "nvidia", "cu*", "include"))
        found += glob.glob(os.path.join(path, "nvidia", "*", "include"))
    return sorted(set(found))


def extensions() -> list:
    exts = [
        CppExtension(
            "padkern._C",
            sorted(glob.glob("csrc/cpu/*.cpp")),
            include_dirs=INCLUDE,
            extra_compile_args={"cxx": CXX_FLAGS},
            extra_link_args=["-fopenmp"],
        )
    ]
    if cuda_build_wanted():
        # Torch's own arch list would otherwise be appended to ours.
        os.environ["TORCH_CUDA_ARCH_LIST"] = ""
        exts.append(
            CUDAExtension(
                "padkern._cuda",
                sorted(glob.glob("csrc/cuda/*.cpp") + glob.glob("csrc/cuda/*.cu")),
                include_dirs=INCLUDE + cuda_toolkit_includes(),
                extra_compile_args={
                    "cxx": ["-O3"],
                    # Spills show in the build log. tests/cuda_resources.py prints registers,
                    # spills and shared memory per kernel, and CI fails on any spill for sm_90;
                    # on sm_80 the float64 GRU forward (1024 threads: 64 registers) spills a
                    # few bytes, so the build itself does not stop on spills.
                    "nvcc": ["-O3", "-std=c++17", "-lineinfo", "-Xptxas=-warn-spills"] + cuda_arch_flags(),
                },
            )
        )
    return exts


setup(
    name="padkern",
    version="0.1.0",
    packages=find_packages(include=["padkern", "padkern.*"]),
    package_data={"padkern": ["auto_table.json"]},
    install_requires=[f"torch>={TORCH_MIN[0]}.{TORCH_MIN[1]}"],
    # numpy below 2.4 for triton 3.6's interpreter (TRITON_INTERPRET=1, how the tests run Triton without a GPU).
    extras_require={"triton": [TRITON_RANGE], "test": ["pytest", "hypothesis", "numpy<2.4"]},
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
