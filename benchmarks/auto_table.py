"""Rank padkern's backends per op, dtype and GPU architecture from a GPU benchmark run and
write the ranking to padkern/auto_table.json, which ``backend="auto"`` reads.

Reads the rows of benchmarks/results/gpu/*.json whose candidate is one op forced onto one
backend ("padkern <op> [<backend>]"). For each op, dtype and compute capability, the
backends are ordered by their summed median time over the cases (and passes) that every
one of them ran. Rows measured with TF32 allowed ("float32+tf32") are left out: the
float32 entry follows torch's default, exact float32. Entries for other GPUs already in
the table are kept.

    python -m benchmarks.auto_table [--results DIR] [--table PATH]
"""
import argparse
import glob
import json
import os
from collections import defaultdict

from padkern._auto_table import TABLE_PATH
from .harness import GPU_RESULTS


def rankings(rows) -> list:
    """Table entries from benchmark rows (see the module docstring)."""
    times = defaultdict(dict)  # (op, dtype, capability) -> {(case, pass): {backend: ms}}
    sources = defaultdict(set)
    for row in rows:
        if "backend" not in row or "capability" not in row or "+" in row.get("dtype", "+"):
            continue
        key = (row["padkern_op"], row["dtype"], row["capability"])
        case = (row["case"], row.get("pass", ""), row.get("op", ""))
        times[key].setdefault(case, {})[row["backend"]] = row["median_ms"]
        sources[key].add(row["device"])
    entries = []
    for (op, dtype, capability), by_case in sorted(times.items()):
        backends = set.union(*(set(b) for b in by_case.values()))
        common = [c for c in by_case.values() if backends <= set(c)]
        if not backends or not common:
            continue
        total = {b: sum(c[b] for c in common) for b in backends}
        entries.append({"op": op, "dtype": dtype, "capability": capability,
                        "order": sorted(backends, key=total.get),
                        "measured_ms": {b: round(total[b], 4) for b in sorted(backends)},
                        "cases": len(common), "device": sorted(sources[(op, dtype, capability)])[0]})
    return entries


def merge(existing: list, new: list) -> list:
    key = lambda e: (e["op"], e["dtype"], e["capability"])  # noqa: E731
    fresh = {key(e) for e in new}
    return sorted([e for e in existing if key(e) not in fresh] + new, key=key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default=GPU_RESULTS)
    parser.add_argument("--table", default=TABLE_PATH)
    args = parser.parse_args()
    rows = []
    for path in sorted(glob.glob(os.path.join(args.results, "*.json"))):
        data = json.load(open(path))
        if isinstance(data, list):
            rows += data
    table = json.load(open(args.table)) if os.path.exists(args.table) else {"entries": []}
    table["entries"] = merge(table.get("entries", []), rankings(rows))
    with open(args.table, "w") as handle:
        json.dump(table, handle, indent=1)
        handle.write("\n")
    for entry in table["entries"]:
        print(f"{entry['op']:<18} {entry['dtype']:<9} sm {entry['capability']}: {' > '.join(entry['order'])}")


if __name__ == "__main__":
    main()
