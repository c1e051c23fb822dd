"""Markdown tables of the latest results in benchmarks/results/, for README.

Each row: a case, its baseline's time, each candidate as a ratio to the baseline,
padkern's own time and the floor. Usage: python -m benchmarks.tables"""
import glob
import json
import os

from .harness import GPU_RESULTS, RESULTS


def _cases(rows, keys):
    cases = []
    for row in rows:
        case = tuple(row[k] for k in keys)
        if case not in cases:
            cases.append(case)
    return cases


def _padkern(picked: dict) -> dict:
    """padkern's main candidate of a case: the ragged one where both are measured."""
    names = [c for c in picked if c.startswith("padkern")]
    return picked[next((c for c in names if "padded" not in c), names[0])]


def _ms(value: float) -> str:
    """Three significant digits, never in exponent form (1000 ms, not 1e+03)."""
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def table(rows) -> str:
    keys = [k for k in rows[0] if k not in ("candidate", "median_ms", "ratio_vs_baseline", "baseline", "floor_ms",
                                             "device", "capability", "padkern_op", "backend")]
    cases = _cases(rows, keys)
    by_case = [{r["candidate"]: r for r in rows if tuple(r[k] for k in keys) == case} for case in cases]
    same_columns = len({tuple(p) for p in by_case}) == 1 and len({r["baseline"] for r in rows}) == 1
    if same_columns:
        baseline = rows[0]["baseline"]
        others = [c for c in by_case[0] if c != baseline]
        header = keys + [f"{baseline} ms"] + others + ["padkern ms", "floor ms"]
    else:
        header = keys + ["baseline", "baseline ms", "ratios to the baseline", "padkern ms", "floor ms"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for case, picked in zip(cases, by_case):
        first = next(iter(picked.values()))
        base = picked[first["baseline"]]
        ours = _padkern(picked)
        others = [c for c in picked if c != first["baseline"]]
        ratios = [f"{picked[c]['ratio_vs_baseline']:.2f}" for c in others]
        cells = list(case)
        if same_columns:
            cells += [_ms(base['median_ms'])] + ratios
        else:
            cells += [first["baseline"], _ms(base['median_ms']), "; ".join(f"{c} {r}" for c, r in zip(others, ratios))]
        cells += [_ms(ours['median_ms']), _ms(ours['floor_ms'])]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    for path in sorted(glob.glob(os.path.join(RESULTS, "*.json")) + glob.glob(os.path.join(GPU_RESULTS, "*.json"))):
        rows = json.load(open(path))
        if rows and isinstance(rows, list):
            print(f"\n{os.path.basename(path)} — {rows[0]['device']}\n")
            print(table(rows))


if __name__ == "__main__":
    main()
