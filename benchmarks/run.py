"""Run padkern's benchmarks on the best device present (or --device), print a table,
and write CSV, JSON and a plot per benchmark to benchmarks/results/."""
import argparse
import importlib

import torch

BENCHMARKS = ["bench_padding", "bench_rnn", "bench_linear", "bench_bmm", "bench_swap_in"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per candidate (median reported)")
    parser.add_argument("--only", nargs="*", default=BENCHMARKS, choices=BENCHMARKS)
    parser.add_argument("--quick", action="store_true", help="a few representative cases per benchmark")
    args = parser.parse_args()
    device = torch.device(args.device)
    rounds = args.rounds or (50 if device.type == "cuda" else 15)
    reports = []
    for name in args.only:
        module = importlib.import_module(f"benchmarks.{name}")
        cases = getattr(module, "QUICK_CASES", None) if args.quick else None
        report = module.run(device, rounds, cases=cases)
        print("wrote", report.save())
        reports.append(report)
    for report in reports:
        report.print_table()


if __name__ == "__main__":
    main()
