"""The GPU run's plan (benchmarks/gpu_check.sh): which tests run on the GPU, which run under
compute-sanitizer, and how long each stage is expected to take, so that every stage fits one
call of the GPU machine (10 minutes a call, 15 minutes of device time in all, the machine's
start included; 8 result files back per call).

    python -m benchmarks.gpu_plan COLLECTED [--write DIR] [--stages build,tests,...] [--env-out FILE]
    python -m benchmarks.gpu_plan --env     (the stage limits as shell exports, no collection)

COLLECTED is the output of ``pytest --collect-only -q tests`` (on a machine without a GPU,
with PADKERN_COLLECT_AS_GPU=1, which parametrises over the cuda device as if one were there).
With --write, DIR receives selection.txt (the node ids the tests stage runs), memcheck.txt
and racecheck.txt (those the sanitizers run). Prints the selection's size per file and per
backend, and each stage's expected time next to its hard limit.
"""
import argparse
import fnmatch
import os
import re
import sys
from collections import Counter

# ----- the selection -------------------------------------------------------------------------------
# Work that needs no GPU and that CI already does: compiling every .cu with ptxas -v and every
# Triton kernel for sm_80/sm_90 (about 50 s for sm_90 alone on a CPU).
EXCLUDED_FILES = ("test_cuda_resources.py", "test_triton_compiles.py")
# Whole files: GPU-only tests (new tests/test_gpu_*.py files join by their name), and the
# Triton bounds guards, which run on the GPU when there is one but whose ids name no device.
WHOLE_FILES = ("test_gpu*.py", "test_triton_guards.py")
# Anywhere else: a node id naming the GPU (cuda-cuda, cuda-triton, cuda-reference, [cuda],
# test_..._gpu_...) or half precision (tests that skip without a GPU).
KEYWORDS = ("cuda", "gpu", "half")


def selected(nodeid: str) -> bool:
    """Whether the GPU run's tests stage runs this test."""
    name = os.path.basename(nodeid.split("::")[0])
    if name in EXCLUDED_FILES:
        return False
    if any(fnmatch.fnmatch(name, pattern) for pattern in WHOLE_FILES):
        return True
    return any(word in nodeid.lower() for word in KEYWORDS)


# ----- the sanitizers --------------------------------------------------------------------------------
# memcheck (PYTORCH_NO_CUDA_MEMORY_CACHING=1, so an access past a tensor is past an allocation):
# one small test per kernel family, each at that family's edges. Not gradcheck or double
# backward: hundreds of launches each, and no edge that the cases below miss.
MEMCHECK = [
    # pad/unpad: every fifth sequence empty, batch-first.
    "tests/test_padding.py::test_pad_unpad_edge_cases[cuda-cuda-True-every_fifth_empty]",
    # unpad and masked_linear with lengths past the padded length T (clamped, unchecked on a GPU).
    "tests/test_gpu.py::test_lengths_past_padded_length_stay_in_bounds[cuda]",
    # segment, pad, LSTM, GRU, RNN forward with offsets past the values (clamped).
    "tests/test_gpu.py::test_cuda_kernels_clamp_offsets_into_their_tensors",
    # segment softmax over one long sequence (several chunks) beside short ones.
    "tests/test_segment.py::test_matches_per_sequence[cuda-cuda-one_long-segment_softmax]",
    # per-sequence LSTM and GRU forward and backward through time, an empty sequence, reversed.
    "tests/test_rnn_ops.py::test_gradients_match_reference[cuda-cuda-True-lstm]",
    "tests/test_rnn_ops.py::test_gradients_match_reference[cuda-cuda-False-gru]",
    # hidden sizes past one block's units.
    "tests/test_rnn_ops.py::test_large_hidden[cuda-cuda-512-rnn_tanh]",
    # tensor-core masked_linear: tiles straddling 64/128-row edges, K and N tails.
    "tests/test_gpu_matmul.py::test_masked_linear_any_k_n[tf32_on-gelu-72-200-bfloat16]",
    # ragged_bmm and ragged_outer_bmm with K, N tails; float64 through the SIMT tile GEMM.
    "tests/test_gpu_matmul.py::test_bmm_and_outer_any_k_n[tf32_off-72-136-float64]",
    # operands off 16-byte alignment: the element-wise copy path.
    "tests/test_gpu_matmul.py::test_operands_off_16_byte_alignment[kernel-tf32_on-float16]",
    # backward's transposed operands on tensor cores.
    "tests/test_gpu_matmul.py::test_backward_on_tensor_cores[kernel-ragged_outer_bmm-bfloat16]",
    # the persistent recurrence with offsets past the tokens.
    "tests/test_gpu_persistent_rnn.py::test_offsets_past_the_tokens_stay_in_bounds",
]
# racecheck and synccheck: the kernels that share memory between threads (the cp.async +
# ldmatrix pipeline, the outer-product tiles, the persistent recurrence's resident weights
# and grid barrier), a few small cases; both tools run each kernel many times slower.
RACECHECK = [
    "tests/test_gpu_matmul.py::test_masked_linear_any_k_n[tf32_on-gelu-72-200-bfloat16]",
    "tests/test_gpu_matmul.py::test_bmm_and_outer_any_k_n[tf32_off-72-136-bfloat16]",
    "tests/test_gpu_persistent_rnn.py::test_empty_sequences_return_their_initial_state[lstm]",
    "tests/test_gpu_persistent_rnn.py::test_sixteen_units_per_block",
]
# Kernel families whose tests are still changing, found by file and test name: the first
# collected cuda-cuda case of that test (else of that file); none while the family has none.
# (file, test name, also under racecheck and synccheck: its kernels share memory)
FAMILIES = [
    # attention: queries with no keys, empty sequences, gradients (tiles of K/V in shared memory)
    ("test_attention.py", "test_no_keys_gives_zero_and_zero_gradients", True),
    # conv1d: taps at sequence boundaries never read the neighbour
    ("test_conv1d.py", "test_sequences_never_read_each_other", False),
]
# GPU-only files of those families, if they come, lend their first test with a cuda id the
# same way: {file pattern: also under racecheck and synccheck}.
FAMILY_FILES = {"test_gpu_attention*.py": True, "test_gpu_conv*.py": False}


def _family_case(nodeids, filename, test):
    in_file = [n for n in nodeids if os.path.basename(n.split("::")[0]) == filename and "cuda-cuda" in n]
    named = [n for n in in_file if n.split("::")[-1].split("[")[0] == test]
    return (named or in_file or [None])[0]


def _first_cuda_test(nodeids, filename):
    in_file = [n for n in nodeids if os.path.basename(n.split("::")[0]) == filename]
    return next((n for n in in_file if "cuda" in n.split("::")[-1]), in_file[0] if in_file else None)


def sanitizer_cases(nodeids):
    """(memcheck ids, racecheck ids, ids named above that were not collected)."""
    present = set(nodeids)
    memcheck = [n for n in MEMCHECK if n in present]
    racecheck = [n for n in RACECHECK if n in present]
    missing = [n for n in dict.fromkeys(MEMCHECK + RACECHECK) if n not in present]
    for filename, test, shares_memory in FAMILIES:
        case = _family_case(nodeids, filename, test)
        if case:
            memcheck.append(case)
            if shares_memory:
                racecheck.append(case)
    gpu_files = sorted({os.path.basename(n.split("::")[0]) for n in nodeids
                        if fnmatch.fnmatch(os.path.basename(n.split("::")[0]), "test_gpu*.py")})
    for filename in gpu_files:
        first = _first_cuda_test(nodeids, filename)
        shares_memory = [shares for pattern, shares in FAMILY_FILES.items() if fnmatch.fnmatch(filename, pattern)]
        if first and shares_memory:
            memcheck.append(first)
            if shares_memory[0]:
                racecheck.append(first)
    return list(dict.fromkeys(memcheck)), list(dict.fromkeys(racecheck)), missing


# ----- the time each stage takes ---------------------------------------------------------------------
CALL_LIMIT_S = 600  # one call of the GPU machine
CALL_BUDGET_S = 570  # what the stages of one call may spend, leaving time to pack and send back
# Each stage's hard limit (gpu_check.sh runs it under `timeout`): the default run (all stages)
# adds up to CALL_BUDGET_S. PADKERN_GPU_BUDGET_<STAGE> overrides one (seconds).
BUDGET_S = {"build": 120, "tests": 220, "memcheck": 75, "racecheck": 42, "synccheck": 42, "bench": 70}
STAGES = tuple(BUDGET_S)
WORKERS = 8  # pytest -n 8 (pytest-xdist) on the GPU machine's 16 cores
# Estimates, not measurements (no GPU run has been made; the first run's per-test times,
# in tests-outcomes.tsv, replace them):
# - build: sm_90 only on 16 cores. Measured on a 2-core CPU host (2026-12-04): the slowest
#   translation unit, grouped_linear.cu, compiles for sm_90 in 27 s, the C++ ones in 15-25 s;
#   about 25 of them on 16 cores make two waves, plus linking: ~60 s;
# - a test: ~0.15 s (small tensors; CUDA launches are microseconds, Python dominates);
# - a cuda-triton test: ~0.5 s more, the JIT's share (about 1,220 such items need 300-500
#   distinct specialisations of ~1.5 s each);
# - each worker: ~20 s to import torch, padkern and start CUDA, in parallel;
# - under a sanitizer ~3 s a test (small tensors: the tools slow kernels 10-100x, but these
#   kernels take microseconds), plus ~20 s to start torch and CUDA under it;
# - the benchmarks: benchmarks/run.py's GPU_QUICK says why each takes what it does.
BUILD_S = 60
TEST_S, TRITON_JIT_S, WORKER_START_S = 0.15, 0.5, 20
SANITIZER_TEST_S = {"memcheck": 3, "racecheck": 3.5, "synccheck": 3.5}
SANITIZER_START_S = 20


def bench_seconds() -> float:
    from .run import GPU_QUICK  # imports torch: only where the plan is made

    return sum(seconds for _, seconds in GPU_QUICK.values())


def budgets(environ=os.environ):
    return {stage: int(environ.get(f"PADKERN_GPU_BUDGET_{stage.upper()}", seconds))
            for stage, seconds in BUDGET_S.items()}


def expected_seconds(selection, memcheck, racecheck, bench_s, workers=WORKERS):
    triton = sum(1 for n in selection if "triton" in n.split("::")[-1])
    tests = WORKER_START_S + (len(selection) * TEST_S + triton * TRITON_JIT_S) / max(1, workers)
    return {"build": BUILD_S, "tests": tests,
            "memcheck": SANITIZER_START_S + len(memcheck) * SANITIZER_TEST_S["memcheck"],
            "racecheck": SANITIZER_START_S + len(racecheck) * SANITIZER_TEST_S["racecheck"],
            "synccheck": SANITIZER_START_S + len(racecheck) * SANITIZER_TEST_S["synccheck"],
            "bench": bench_s}


_BACKEND = re.compile(r"\[(?:[^\]]*-)?(cuda-(?:cuda|triton|reference))(?:-[^\]]*)?\]")


def backend_of(nodeid: str) -> str:
    match = _BACKEND.search(nodeid)
    return match.group(1) if match else "other"


def shell_exports(expected, limits) -> str:
    names = [f"EXPECTED_{stage}={seconds:.0f}" for stage, seconds in expected.items()]
    names += [f"LIMIT_{stage}={seconds}" for stage, seconds in limits.items()]
    return "export " + " ".join(names)


def read_collected(path):
    with open(path) as handle:
        return [line.strip() for line in handle if "::" in line and not line.startswith(("ERROR", "FAILED"))]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("collected", nargs="?")
    parser.add_argument("--write", metavar="DIR")
    parser.add_argument("--env", action="store_true", help="print the stage limits as shell exports and exit")
    parser.add_argument("--env-out", metavar="FILE", help="write each stage's expected time and limit as exports")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--workers", type=int, default=WORKERS)
    args = parser.parse_args(argv)
    limits = budgets()
    if args.env:
        print(shell_exports({"build": BUILD_S}, limits))
        return 0
    if not args.collected:
        parser.error("COLLECTED is required without --env")
    nodeids = read_collected(args.collected)
    selection = [n for n in nodeids if selected(n)]
    memcheck, racecheck, missing = sanitizer_cases(nodeids)
    if args.write:
        os.makedirs(args.write, exist_ok=True)
        for name, ids in (("selection", selection), ("memcheck", memcheck), ("racecheck", racecheck)):
            with open(os.path.join(args.write, f"{name}.txt"), "w") as handle:
                handle.write("".join(f"{n}\n" for n in ids))

    print(f"GPU selection: {len(selection)} of {len(nodeids)} collected tests")
    by_backend = Counter(backend_of(n) for n in selection)
    print("  by backend: " + ", ".join(f"{k} {v}" for k, v in sorted(by_backend.items())))
    by_file = Counter(n.split("::")[0] for n in selection)
    for path, count in sorted(by_file.items(), key=lambda kv: -kv[1]):
        print(f"  {count:6d}  {path}")
    print(f"memcheck: {len(memcheck)} tests; racecheck and synccheck: {len(racecheck)} tests")

    stages = [s for s in args.stages.split(",") if s]
    expected = expected_seconds(selection, memcheck, racecheck, bench_seconds(), args.workers)
    if args.env_out:
        with open(args.env_out, "w") as handle:
            handle.write(shell_exports(expected, limits) + "\n")
    print(f"\n{'stage':<10} {'expected':>9} {'limit':>7}")
    for stage in stages:
        print(f"{stage:<10} {expected[stage]:8.0f}s {limits[stage]:6d}s")
    total_expected = sum(expected[s] for s in stages)
    total_limit = sum(limits[s] for s in stages)
    print(f"{'total':<10} {total_expected:8.0f}s {total_limit:6d}s   (one call: {CALL_LIMIT_S} s)")
    # An estimate past its limit is a warning (the limit holds either way, and a cut-off stage
    # still brings back its log); limits that cannot fit one call, or missing cases, are errors.
    for stage in stages:
        if expected[stage] > limits[stage]:
            print(f"WARNING: {stage}: expected {expected[stage]:.0f} s exceeds its limit {limits[stage]} s")
    problems = []
    problems += [f"a sanitizer case was not collected (renamed?): {nodeid}" for nodeid in missing]
    if total_limit > CALL_BUDGET_S:
        problems.append(f"the stages' limits add up to {total_limit} s, past one call's {CALL_BUDGET_S} s: "
                        "run them as separate calls (gpu_check.sh STAGE ...)")
    for problem in problems:
        print("PLAN DOES NOT FIT:", problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
