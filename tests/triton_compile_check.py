"""Compiles every Triton kernel of padkern to a cubin for sm_80 and sm_90 — no GPU needed.

The interpreter (how CI runs the kernels) accepts code the compiler rejects; this
catches that here. Run as a script with TRITON_INTERPRET unset (tests/test_triton_compiles.py
does). Prints one line per kernel variant and exits non-zero on the first failure.
"""
import os
import sys

assert os.environ.get("TRITON_INTERPRET", "0") != "1", "compile checks need the real Triton compiler"

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from padkern.triton import linear, padding, rnn, segment  # noqa: E402

DATA = {"fp32": ("fp32", tl.float32), "bf16": ("bf16", tl.float32), "fp64": ("fp64", tl.float64)}


def compile_kernel(kernel, types: dict, constexprs: dict, target: GPUTarget) -> None:
    fn = kernel if isinstance(kernel, triton.runtime.jit.JITFunction) else kernel.fn  # autotuned: unwrap
    signature = {}
    for name in fn.arg_names:
        signature[name] = "constexpr" if name in constexprs else types[name]
    triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs), target=target)


def variants():
    for data, (ty, acc) in DATA.items():
        ptr, state = f"*{ty}", "*fp64" if acc == tl.float64 else "*fp32"
        i64, off = "i64", "*i64"
        yield f"pad {data}", padding._pad_kernel, dict(
            p_values=ptr, p_offsets=off, p_padded=ptr, T=i64, D=i64, stride_values=i64, stride_batch=i64,
            stride_time=i64, padding_value="fp32"), dict(BLOCK_T=16, BLOCK_D=64)
        yield f"unpad {data}", padding._unpad_kernel, dict(
            p_padded=ptr, p_offsets=off, p_values=ptr, D=i64, stride_values=i64, stride_batch=i64, stride_time=i64), \
            dict(BLOCK_T=16, BLOCK_D=64)
        blocks = dict(BLOCK_H=128, BLOCK_K=32)
        for reverse in (False, True):
            yield f"lstm forward {data} reverse={reverse}", rnn._lstm_forward_kernel, dict(
                p_gates_x=ptr, p_offsets=off, p_w_t=ptr, p_h=state, p_c=state, p_out=ptr, p_saved_gates=ptr,
                p_saved_cell=ptr, H=i64), dict(REVERSE=reverse, SAVE=True, **blocks)
            yield f"lstm backward {data} reverse={reverse}", rnn._lstm_backward_kernel, dict(
                p_grad_out=ptr, p_saved_gates=ptr, p_saved_cell=ptr, p_c0=ptr, p_offsets=off, p_w=ptr, p_dh=state,
                p_dc=state, p_grad_gates=ptr, H=i64), dict(REVERSE=reverse, **blocks)
            yield f"gru forward {data} reverse={reverse}", rnn._gru_forward_kernel, dict(
                p_gates_x=ptr, p_offsets=off, p_w_t=ptr, p_b_hh=ptr, p_h=state, p_out=ptr, p_saved_gates=ptr,
                p_saved_hh_n=ptr, H=i64), dict(REVERSE=reverse, SAVE=False, **blocks)
            yield f"gru backward {data} reverse={reverse}", rnn._gru_backward_kernel, dict(
                p_grad_out=ptr, p_saved_gates=ptr, p_saved_hh_n=ptr, p_out=ptr, p_h0=ptr, p_offsets=off, p_w=ptr,
                p_dh=state, p_grad_x=ptr, p_grad_hh=ptr, H=i64), dict(REVERSE=reverse, **blocks)
        for padded in (False, True):
            for activation in range(4):
                yield f"grouped_linear {data} padded={padded} act={activation}", linear._grouped_linear_kernel, dict(
                    p_in=ptr, p_offsets=off, p_starts=off, p_w=ptr, p_bias=ptr, p_out=ptr, p_pre=ptr, B=i64, N=i64,
                    K=i64, stride_in_b=i64, stride_in_t=i64, stride_in_k=i64, stride_out_b=i64, stride_out_t=i64,
                    stride_wb=i64, stride_wk=i64, stride_wn=i64), dict(
                    PADDED=padded, HAS_BIAS=True, ACT=activation, SAVE=activation != 0, PRECISION="ieee", ACC=acc,
                    BLOCK_M=linear.BLOCK_M, BLOCK_N=64, BLOCK_K=32)
        yield f"ragged_outer_bmm {data}", linear._ragged_outer_bmm_kernel, dict(
            p_x=ptr, p_y=ptr, p_offsets=off, p_out=ptr, M=i64, N=i64, stride_x=i64, stride_y=i64, stride_ob=i64,
            stride_om=i64), dict(PRECISION="ieee", ACC=acc, BLOCK_M=64, BLOCK_N=64, BLOCK_T=32)
        for mode in range(3):
            yield f"segment_reduce {data} mode={mode}", segment._segment_reduce_kernel, dict(
                p_values=ptr, p_offsets=off, p_out=ptr, p_argmax=off, D=i64), dict(
                MODE=mode, ACC=acc, BLOCK_T=32, BLOCK_D=64)
        yield f"segment_softmax {data}", segment._segment_softmax_kernel, dict(
            p_values=ptr, p_offsets=off, p_out=ptr, D=i64), dict(ACC=acc, BLOCK_T=32, BLOCK_D=64)


def main() -> int:
    targets = [GPUTarget("cuda", arch, 32) for arch in (80, 90)]
    count = 0
    for name, kernel, types, constexprs in variants():
        for target in targets:
            try:
                compile_kernel(kernel, types, constexprs, target)
            except Exception as error:  # report which kernel, then fail
                print(f"FAILED {name} sm_{target.arch}: {type(error).__name__}: {error}")
                return 1
            count += 1
    print(f"compiled {count} kernel variants")
    return 0


if __name__ == "__main__":
    sys.exit(main())
