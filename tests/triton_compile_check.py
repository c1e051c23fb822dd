"""Compiles every Triton kernel of padkern for a GPU the way the JIT does before a
launch, on a machine without one: ``python tests/triton_compile_check.py --arch 90``.

Why: CI runs the kernels under the interpreter, which accepts code the compiler
rejects and specialises nothing. On a GPU the JIT specialises each launch on its
arguments: an integer equal to 1 becomes the constexpr 1 (a tensor method such as
``.to()`` on it no longer compiles), and integers and pointers divisible by 16 are
marked so. So this calls each launcher in padkern.triton, forward and backward, on
CPU tensors of representative shapes (one sequence and one token, features 1, 16
and 17, unit strides, an empty sequence), with a stand-in driver that reports the
GPU, and with every launch turned into the JIT's ``warmup``: it binds the real
arguments, specialises and compiles them exactly as before a launch, and runs
nothing.

Run with TRITON_INTERPRET unset (tests/test_triton_compiles.py does). Prints one
line per case; exits 1 on the first failure, or prints ``skipped: <why>`` and exits
0 where this triton lacks what the check needs.
"""
import argparse
import contextlib
import os
import sys
import time

assert os.environ.get("TRITON_INTERPRET", "0") != "1", "compile checks need the real Triton compiler"
# One matmul config (what GPU test runs use) for most cases; autotune_cases compiles them all.
os.environ["PADKERN_TRITON_AUTOTUNE"] = "0"

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
try:  # the driver registry the JIT asks for its target
    from triton.runtime.driver import driver as triton_driver  # noqa: E402
except ImportError:
    triton_driver = None

from padkern.triton import attention, conv, linear, padding, registration, rnn, segment  # noqa: E402

LAUNCHER_MODULES = (attention, conv, linear, padding, rnn, segment)

# (lengths, features): every size and stride the constexpr 1; sizes divisible by 16; neither.
SHAPES = {
    "B=1 L=1 features=1": ([1], 1),
    "B=1 features=16": ([16], 16),
    "B=3 features=17": ([3, 0, 13], 17),
}
FLOATS = (torch.float32, torch.bfloat16, torch.float64)


def missing_api() -> str | None:
    """Why this triton cannot run the check, or None."""
    if triton_driver is None or not hasattr(triton_driver, "set_active"):
        return f"triton {triton.__version__} has no triton.runtime.driver.driver.set_active"
    if not hasattr(triton.runtime.jit.JITFunction, "warmup") or not hasattr(triton.runtime.Autotuner, "warmup"):
        return f"triton {triton.__version__} has no JITFunction.warmup / Autotuner.warmup"
    return None


class CompileOnlyDriver:
    """Stands in for the CUDA driver: reports one GPU of ``arch``, the only things the JIT
    asks for before compiling. The device id is the arch, so each arch gets its own cache."""

    def __init__(self, arch: int):
        self.target = GPUTarget("cuda", arch, 32)

    def get_current_target(self):
        return self.target

    def get_current_device(self):
        return self.target.arch

    def get_current_stream(self, device=None):
        return 0


class CompileOnly:
    """Stands in for torch's ``wrap_triton``: ``kernel[grid](*args)`` becomes
    ``kernel.warmup(*args, grid=grid)``, which specialises, compiles and launches nothing
    (an autotuned kernel compiles every config). Each compiled kernel is kept in
    ``compiled``, for the checks that read its metadata."""

    compiled = []

    def __init__(self, kernel):
        self.kernel = kernel

    def __getitem__(self, grid):
        def warmup(*args, **kwargs):
            result = self.kernel.warmup(*args, grid=grid, **kwargs)
            CompileOnly.compiled.extend(kernel for kernel in (result if isinstance(result, list) else [result])
                                        if kernel is not None)
            return result
        return warmup


# Shared memory a block may use (cudaDevAttrMaxSharedMemoryPerBlockOptin). A kernel over
# it compiles, and only fails at launch with OutOfResources.
SHARED_MEMORY_LIMIT = {80: 166_912, 90: 232_448}


@contextlib.contextmanager
def within_shared_memory():
    """Every kernel compiled inside fits the target's shared memory."""
    first = len(CompileOnly.compiled)
    yield
    arch = triton_driver.active.get_current_target().arch
    for kernel in CompileOnly.compiled[first:]:
        assert kernel.metadata.shared <= SHARED_MEMORY_LIMIT[arch], (
            f"{kernel.metadata.name} uses {kernel.metadata.shared} B of shared memory, "
            f"sm_{arch} has {SHARED_MEMORY_LIMIT[arch]}")


# ----- cases: each calls launchers as the ops do, forward and backward ---------------------
def ragged(lengths, features, dtype, grad=False):
    offsets = torch.tensor([0] + lengths).cumsum(0)
    values = torch.randn(sum(lengths), features).to(dtype)
    return values.requires_grad_(grad), offsets


def pad_cases(lengths, features, dtype):
    values, offsets = ragged(lengths, features, dtype)
    for batch_first in (True, False):
        padded = padding.pad_triton(values, offsets, max(lengths), 0.0, batch_first)
        padding.unpad_triton(padded, offsets, values.shape[0], batch_first)


def grouped_linear_cases(lengths, features, dtype):
    values, offsets = ragged(lengths, features, dtype, grad=True)
    weight = torch.randn(features, features).to(dtype).requires_grad_()
    bias = torch.randn(features).to(dtype).requires_grad_()
    # masked_linear: a padded batch
    padded = torch.randn(len(lengths), max(lengths), features).to(dtype).requires_grad_()
    linear.grouped_linear_triton(padded, offsets, weight, bias, 1, True, values.shape[0])[0].sum().backward()
    # ragged_linear
    linear.grouped_linear_triton(values, offsets, weight, bias, 1, True, values.shape[0])[0].sum().backward()
    # ragged_bmm: one weight per sequence; its weight gradient is ragged_outer_bmm
    weights = torch.randn(len(lengths), features, features).to(dtype).requires_grad_()
    linear.grouped_linear_triton(values, offsets, weights, None, 0, False, values.shape[0])[0].sum().backward()


def activation_cases(lengths, features, dtype):
    values, offsets = ragged(lengths, features, dtype)
    weight = torch.randn(features, features).to(dtype)
    for activation in range(4):
        linear.grouped_linear_triton(values, offsets, weight, None, activation, True, values.shape[0])


@contextlib.contextmanager
def autotune_configs():
    """The matmul autotunes over every config it would on a GPU without PADKERN_TRITON_AUTOTUNE=0."""
    kernel = linear._grouped_linear_kernel
    test_configs, kernel.configs = kernel.configs, linear.AUTOTUNE_CONFIGS
    try:
        yield
    finally:
        kernel.configs = test_configs


def autotune_cases(lengths, features, dtype):
    values, offsets = ragged(lengths, features, dtype)
    weight = torch.randn(features, features).to(dtype)
    with autotune_configs():
        linear.grouped_linear_triton(values, offsets, weight, None, 0, False, values.shape[0])


def segment_cases(lengths, features, dtype):
    values, offsets = ragged(lengths, features, dtype)
    for mode in range(3):
        segment.segment_reduce_triton(values, offsets, mode)
    segment.segment_softmax_triton(values, offsets)


def conv_cases(lengths, features, dtype):
    values, offsets = ragged(lengths, features, dtype)
    # groups 1 (per-tap tl.dot) and depthwise (elementwise), forward and backward.
    for groups, channels_out in ((1, features + 1), (features, features)):
        weight = torch.randn(channels_out, features // groups, 3).to(dtype)
        bias = torch.randn(channels_out).to(dtype)
        conv.ragged_conv1d_triton(values, offsets, weight, bias, 1, 2, groups)
        grad = torch.randn(values.shape[0], channels_out).to(dtype)
        conv.ragged_conv1d_backward_triton(grad, values, offsets, weight, 1, 2, groups, [True, True, True])


def rnn_cases(lengths, hidden, dtype, directions=(False,)):
    batch = len(lengths)
    for gates, forward in ((4, rnn.lstm_recurrence_triton), (3, rnn.gru_recurrence_triton)):
        gates_x, offsets = ragged(lengths, gates * hidden, dtype, grad=True)
        w_hh = torch.randn(gates * hidden, hidden).to(dtype).requires_grad_()
        h0 = torch.randn(batch, hidden).to(dtype).requires_grad_()
        states = (h0, torch.randn(batch, hidden).to(dtype)) if gates == 4 else (torch.zeros(gates * hidden).to(dtype), h0)
        for reverse in directions:
            forward(gates_x, offsets, w_hh, *states, reverse, True)[0].sum().backward()
    gates_x, offsets = ragged(lengths, hidden, dtype, grad=True)
    w_hh = torch.randn(hidden, hidden).to(dtype).requires_grad_()
    h0 = torch.randn(batch, hidden).to(dtype).requires_grad_()
    for nonlinearity in (0, 1):  # tanh, relu
        for reverse in directions:
            rnn.rnn_recurrence_triton(gates_x, offsets, w_hh, h0, nonlinearity, reverse)[0].sum().backward()


def attention_cases(lengths, head_dim, dtype, variants=((2, 1, True, None), (2, 1, False, None), (1, 1, False, 2))):
    """Self-attention (causal and not) with two query heads per kv head, and cross-attention
    with one head each (Hq, Hkv and the row strides the constexpr 1 where head_dim is 1),
    each kernel within the target's shared memory."""
    offsets = torch.tensor([0] + lengths).cumsum(0)
    for heads, kv_heads, causal, kv_length in variants:
        kv_lengths = lengths if kv_length is None else [kv_length] * len(lengths)
        kv_offsets = torch.tensor([0] + kv_lengths).cumsum(0)
        q = torch.randn(sum(lengths), heads, head_dim).to(dtype)
        k, v = (torch.randn(sum(kv_lengths), kv_heads, head_dim).to(dtype) for _ in range(2))
        with within_shared_memory():
            out, lse = attention.ragged_attention_triton(q, k, v, offsets, kv_offsets, causal, 0.125)
            attention.ragged_attention_backward_triton(q, q, k, v, q, lse, offsets, kv_offsets, causal, 0.125)


def wide_attention_cases(lengths, head_dim, dtype):
    """Causal self-attention only: tiles shrink with the row size (dtype x head_dim)."""
    attention_cases(lengths, head_dim, dtype, variants=((2, 1, True, None),))


def attention_autotune_cases(lengths, head_dim, dtype):
    """Every config the autotuner would time on a GPU (the check runs with one)."""
    untuned = os.environ["PADKERN_TRITON_AUTOTUNE"]
    os.environ["PADKERN_TRITON_AUTOTUNE"] = "1"
    attention._autotuned.cache_clear()
    try:
        attention_cases(lengths, head_dim, dtype)
    finally:
        os.environ["PADKERN_TRITON_AUTOTUNE"] = untuned
        attention._autotuned.cache_clear()


def rnn_reverse_cases(lengths, hidden, dtype):
    rnn_cases(lengths, hidden, dtype, directions=(True,))


def cases():
    """(name, function, args): every kernel on every shape in float32 and on the last
    shape in every dtype, as pairs of (shape, dtype) cover each of both at least once."""
    odd = list(SHAPES)[-1]
    families = {"pad/unpad": (pad_cases, FLOATS + (torch.float16, torch.int64)),
                "grouped_linear/ragged_outer_bmm": (grouped_linear_cases, FLOATS),
                "segment reduce/softmax": (segment_cases, FLOATS),
                "ragged_conv1d forward/backward": (conv_cases, FLOATS),
                "lstm/gru/rnn forward/backward": (rnn_cases, FLOATS),
                "ragged_attention forward/backward": (attention_cases, FLOATS + (torch.float16,))}
    for family, (function, dtypes) in families.items():
        for shape, dtype in [(shape, torch.float32) for shape in SHAPES] + [(odd, d) for d in dtypes[1:]]:
            yield f"{family} {dtype} {shape}", function, SHAPES[shape] + (dtype,)
    yield f"grouped_linear activations {odd}", activation_cases, SHAPES[odd] + (torch.float32,)
    for dtype in FLOATS:
        yield f"grouped_linear autotune configs {dtype} {odd}", autotune_cases, SHAPES[odd] + (dtype,)
    # bfloat16 only: exact float32 tiles compile to FMA loops, ~100 s a config set.
    yield "ragged_attention autotune configs bfloat16 head_dim=64", attention_autotune_cases, ([3, 0, 70], 64,
                                                                                               torch.bfloat16)
    # Past 64 features the tiles shrink with the row size (dtype x head_dim), to stay
    # within shared memory; float32 at D=256 takes ~15 s (FMA loops), the others ~5 s.
    for dtype, head_dim in ((torch.bfloat16, 128), (torch.bfloat16, 256), (torch.float32, 256), (torch.float64, 128),
                            (torch.float64, 256)):
        yield (f"ragged_attention causal {dtype} head_dim={head_dim}", wide_attention_cases,
               ([3, 0, 70], head_dim, dtype))
    yield f"lstm/gru/rnn reverse {odd}", rnn_reverse_cases, SHAPES[odd] + (torch.float32,)
    # Past 256 hidden units a program runs 8 warps over 8-row weight tiles.
    yield "lstm/gru/rnn forward/backward B=1 hidden=300", rnn_cases, ([3], 300, torch.float32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, nargs="+", default=[80, 90], help="compute capabilities, e.g. 90")
    arches = parser.parse_args().arch
    reason = missing_api()
    if reason:
        print(f"skipped: {reason}")
        return 0
    # Launchers reach wrap_triton through registration.launchable, or import it themselves.
    for module in LAUNCHER_MODULES + (registration,):
        module.wrap_triton = CompileOnly
    count = 0
    for arch in arches:
        triton_driver.set_active(CompileOnlyDriver(arch))
        for name, function, args in cases():
            start = time.perf_counter()
            try:
                function(*args)
            except Exception as error:  # report which case, then fail
                print(f"FAILED sm_{arch} {name}: {type(error).__name__}: {error}")
                return 1
            print(f"ok sm_{arch} {name} ({time.perf_counter() - start:.1f} s)", flush=True)
            count += 1
    print(f"compiled {count} cases for {' '.join(f'sm_{a}' for a in arches)} with triton {triton.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
