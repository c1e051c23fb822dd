"""A short table of the latest results in benchmarks/results/: per case, padkern's
time as a ratio of the baseline (lower is better) and its distance from the floor."""
import glob
import json
import os

from .harness import GPU_RESULTS, RESULTS


def main() -> None:
    for path in sorted(glob.glob(os.path.join(RESULTS, "*.json")) + glob.glob(os.path.join(GPU_RESULTS, "*.json"))):
        rows = json.load(open(path))
        if not rows or not isinstance(rows, list):
            continue
        print(f"\n{os.path.basename(path)} on {rows[0]['device']} (ratio = time / {rows[0]['baseline']})")
        for row in rows:
            if row["candidate"].startswith("padkern"):
                extra = " ".join(str(row[k]) for k in row if k in ("direction", "pass"))
                print(f"  {row['case']:<32} {extra:<17} {row['candidate']:<20} {row['median_ms']:9.3f} ms"
                      f"  ratio {row['ratio_vs_baseline']:.2f}  floor {row['floor_ms']:.3f} ms")


if __name__ == "__main__":
    main()
