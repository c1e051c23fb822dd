"""Compile time against batch size: ``torch.compile(fullgraph=True, dynamic=True)`` over
``ragged_bmm`` (forward and backward, as FBGEMM's ``test_jagged_dense_bmm_dynamic_shape``),
per backend, at several B. Every case runs in a fresh process with the compile caches off,
so each time is a cold compile plus one call.

    python -m benchmarks.bench_compile_batch [--batches 10 64 512] [--backends reference cpu]

Prints one row per (backend, B): seconds to the first result, and the ratio to the
smallest B of that backend. A backend whose compiled graph grows with B (one slice per
sequence) shows ratios that grow with B; a vectorised one stays near 1.
"""
import argparse
import json
import os
import subprocess
import sys
import time

_CASE = r"""
import json, sys, time
import torch
import padkern
torch._dynamo.config.capture_scalar_outputs = True
backend, batch = sys.argv[1], int(sys.argv[2])
generator = torch.Generator().manual_seed(0)
lengths = torch.randint(1, 33, (batch,), generator=generator)
offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
values = torch.randn(int(offsets[-1]), 16, generator=generator, requires_grad=True)
weights = torch.randn(batch, 16, 24, generator=generator, requires_grad=True)
for tensor, dims in ((values, (0, 1)), (offsets, (0,)), (weights, (0,))):
    for dim in dims:
        torch._dynamo.maybe_mark_dynamic(tensor, dim)
compiled = torch.compile(lambda v, o, w: padkern.ops.ragged_bmm(v, o, w, backend=backend), fullgraph=True,
                         dynamic=True)
started = time.perf_counter()
compiled(values, offsets, weights).sum().backward()
print(json.dumps({"seconds": time.perf_counter() - started}))
"""


def time_case(backend: str, batch: int, timeout: float) -> float:
    env = dict(os.environ, TORCHINDUCTOR_FORCE_DISABLE_CACHES="1")
    result = subprocess.run([sys.executable, "-c", _CASE, backend, str(batch)], capture_output=True, text=True,
                            env=env, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{backend} B={batch} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[10, 64, 512])
    parser.add_argument("--backends", nargs="+", default=["reference", "cpu"])
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per case before it counts as failed")
    args = parser.parse_args()
    started = time.monotonic()
    print(f"{'backend':<10} {'B':>5} {'compile + first call s':>24} {'x smallest B':>13}")
    for backend in args.backends:
        first = None
        for batch in args.batches:
            try:
                seconds = time_case(backend, batch, args.timeout)
            except subprocess.TimeoutExpired:
                print(f"{backend:<10} {batch:>5} {'> ' + str(int(args.timeout)):>24}")
                continue
            first = first or seconds
            print(f"{backend:<10} {batch:>5} {seconds:>24.1f} {seconds / first:>13.2f}", flush=True)
    print(f"({time.monotonic() - started:.0f} s in all)")


if __name__ == "__main__":
    main()
