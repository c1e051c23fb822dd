"""Run padkern's benchmarks on the best device present (or --device), print a table,
and write CSV, JSON and a plot per benchmark to benchmarks/results/."""
import argparse
import importlib
import time

import torch

from .harness import steady_heap_or_say, use_thread_clock

BENCHMARKS = ["bench_padding", "bench_rnn", "bench_linear", "bench_bmm", "bench_swap_in", "bench_conv1d", "bench_attention"]

# The GPU run's quick set (benchmarks/gpu_check.sh runs it in the same call as the tests, under a
# limit of about a minute): the headline cases of the first GPU run, cheapest first so a cut-off
# run has saved the others. Per benchmark: its cases and its expected seconds on an H100/H200,
# an estimate (no GPU run has been made) counting every candidate, forward and
# forward+backward, GPU_QUICK_ROUNDS rounds plus warm-up, and the Triton JIT and autotuning:
# - padding: ~8 MB moved per call, microseconds: ~2 s, mostly the copy-bandwidth probe;
# - masked_linear, bfloat16, K = N = 1024: 5 autotune configs compiled (~1.5 s each) and
#   timed, forward and backward kernels: ~15 s;
# - ragged_bmm: the same kernels' other specialisations: ~8 s;
# - LSTM/GRU H256 B64 T256 (float32, and bfloat16 with the persistent kernel) and LSTM H1024 B32
#   T256: per call up to ~15 ms forward and ~45 ms forward+backward (each step re-reads w_hh:
#   16 MB at H1024 in float32), 6-7 candidates x 12 calls x 2 passes: ~4 s a case, ~10 s of JIT.
#   Not B256 H1024: the per-sequence path streams its 8 MB w_hh per sequence and step, minutes.
GPU_QUICK = {
    "bench_padding": ([(64, 256, 256, 0.5)], 2),
    "bench_bmm": ([(64, 256, 256, 256, 0.5)], 8),
    "bench_linear": ([(64, 512, 1024, 1024, 0.5, "bfloat16")], 15),
    "bench_rnn": ([("lstm", 64, 256, 256, 0.5), ("gru", 64, 256, 256, 0.5), ("lstm", 64, 256, 256, 0.5, "bfloat16"),
                   ("lstm", 32, 256, 1024, 0.5)], 26),
}
GPU_QUICK_ROUNDS = 10


def plan(device: torch.device, names, quick: bool):
    """[(benchmark, cases or None, expected seconds or None)] in the order they run."""
    if quick and device.type == "cuda":
        return [(name, *GPU_QUICK[name]) for name in GPU_QUICK if name in names]
    return [(name, None, None) for name in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per candidate (median reported)")
    parser.add_argument("--only", nargs="*", default=BENCHMARKS, choices=BENCHMARKS)
    parser.add_argument("--quick", action="store_true", help="a few representative cases per benchmark")
    parser.add_argument("--thread-clock", action="store_true",
                        help="CPU: one thread, timed by its CPU clock (steady on a shared host)")
    parser.add_argument("--plan", action="store_true", help="print what would run and its expected time; run nothing")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="start no benchmark whose expected time no longer fits in this many seconds")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.thread_clock:
        use_thread_clock()
    steps = plan(device, args.only, args.quick)
    if not args.plan and device.type == "cpu":
        steady_heap_or_say()  # as the guard does: no run lands its large tensors on fresh pages
    quick_gpu = args.quick and device.type == "cuda"
    rounds = args.rounds or (GPU_QUICK_ROUNDS if quick_gpu else 50 if device.type == "cuda" else 15)
    if args.plan:
        for name, cases, seconds in steps:
            print(f"{name:<14} {len(cases) if cases else 'all':>4} cases  expected {seconds or '?'} s")
        known = [s for _, _, s in steps if s is not None]
        if known:
            print(f"bench total: expected {sum(known)} s ({rounds} rounds)")
        return
    started = time.monotonic()
    reports = []
    for name, cases, seconds in steps:
        elapsed = time.monotonic() - started
        if args.budget_s is not None and seconds is not None and elapsed + seconds > args.budget_s:
            print(f"skipped {name}: {seconds} s expected, {args.budget_s - elapsed:.0f} s of the budget left")
            continue
        module = importlib.import_module(f"benchmarks.{name}")
        if cases is None and args.quick:
            cases = getattr(module, "QUICK_CASES", None)
        report = module.run(device, rounds, cases=cases)
        print("wrote", report.save(), f"({time.monotonic() - started - elapsed:.0f} s)")
        reports.append(report)
    for report in reports:
        report.print_table()


if __name__ == "__main__":
    main()
