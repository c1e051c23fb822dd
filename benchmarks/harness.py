"""Benchmark harness: candidates of one case are timed in the same process,
interleaved round by round (so drift in clocks or load hits all alike), and
reported as medians and as ratios against the case's baseline, next to a floor
(the bytes or FLOPs the work needs over the machine's measured rate)."""
import csv
import ctypes
import json
import os
import platform
import re
import statistics
import time
from dataclasses import dataclass, field

import torch

RESULTS = os.path.join(os.path.dirname(__file__), "results")
# GPU runs are committed (README's GPU rows and padkern/auto_table.json come from them).
GPU_RESULTS = os.path.join(RESULTS, "gpu")

# "padkern <op> [<backend>]": one padkern op forced onto one backend. Rows of such
# candidates carry padkern_op and backend, from which benchmarks/auto_table.py ranks
# the backends per op and dtype.
_BACKEND_CANDIDATE = re.compile(r"^padkern (\S+) \[(\w+)\]$")


def with_environment(name: str, value: str, fn):
    """fn, called with the environment variable `name` set to `value` (padkern's run-time
    path switches: PADKERN_DENSE_LINEAR, PADKERN_CUDA_RNN), restored afterwards."""
    def run():
        before = os.environ.get(name)
        os.environ[name] = value
        try:
            return fn()
        finally:
            if before is None:
                del os.environ[name]
            else:
                os.environ[name] = before
    return run


def results_dir(device: torch.device) -> str:
    return GPU_RESULTS if device.type == "cuda" else RESULTS


def backend_candidates(op: str, device: torch.device, make) -> dict:
    """One candidate per padkern backend that runs on `device` (``make(backend)`` returns the
    call). On the CPU only the cpu backend is measured, under padkern's op name alone."""
    if device.type != "cuda":
        return {f"padkern {op}": make("cpu")}
    from padkern._backend import why_unavailable

    return {f"padkern {op} [{b}]": make(b) for b in ("cuda", "triton") if why_unavailable(b, device) is None}


# CPU timing clock: "wall" (all threads, what users see) or "thread" (one thread, that thread's
# CPU time: other processes on a shared host barely move it; see use_thread_clock).
_cpu_clock = ["wall"]


def use_thread_clock() -> None:
    """Time CPU candidates on one thread by its CPU clock. On this shared 2-core host under load,
    wall-clock ratios of the recurrences moved 4x between runs; thread-clock ratios a few percent.
    Everything runs on the calling thread then (torch's intra-op pool is 1, and CPU autograd runs
    its backward on the caller), so nothing is left uncounted."""
    torch.set_num_threads(1)
    _cpu_clock[0] = "thread"


def steady_heap(mapped_bytes: int = 1 << 30) -> bool:
    """Keep freed memory in the process (glibc: no mmap for large blocks, no trimming) and start
    with `mapped_bytes` of heap already faulted in, so each timed call lands on pages already
    mapped. Otherwise glibc's dynamic mmap threshold decides, from the process's history,
    whether a large tensor lands on fresh pages (a page fault per 4 KiB, counted in the thread's
    CPU time) or on reused ones: the guard's pad round trip, two 16 MiB copies, read anywhere
    from 0.26x to 4.5x its floor across runs of the same code. Keeping freed memory is not
    enough: torch allocates 64-byte aligned (posix_memalign), whose trimmed remnants other
    allocations take, so a freed output often cannot be reused for the next of its size and
    the heap grows by one output per call; in most processes an 8.7 MB output faulted on 6 to 7
    of 8 calls, and the segment ops' guard read 0.54x in one process, 2.21x in the next. The
    growth now lands on the pre-faulted pages (a whole guard run then faulted 1.1K pages, where
    one call had faulted 2.1K). Returns whether the allocator took the settings and the heap was
    faulted in (False off glibc)."""
    try:
        libc = ctypes.CDLL(None)
        mallopt, malloc, free = libc.mallopt, libc.malloc, libc.free
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    largest = ctypes.c_int(2**31 - 1)  # mallopt takes a C int: a larger Python int would wrap
    if not (mallopt(m_mmap_threshold, largest) and mallopt(m_trim_threshold, largest)):
        return False
    malloc.restype = ctypes.c_void_p
    block = malloc(ctypes.c_size_t(mapped_bytes))
    if not block:
        return False
    ctypes.memset(block, 0, mapped_bytes)  # fault every page in; freed, they stay mapped
    free(ctypes.c_void_p(block))
    return True


def steady_heap_or_say() -> None:
    """steady_heap(), with a line on stdout where the heap could not be steadied."""
    if not steady_heap():
        print("the heap could not be steadied (not glibc?): large tensors may land on fresh pages, "
              "and ratios vary more between runs", flush=True)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    clock = ", thread CPU clock" if _cpu_clock[0] == "thread" else ""
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads{clock}"


def _time_once(fn, device: torch.device) -> float:
    """Seconds for one call; CUDA events on a GPU."""
    if device.type == "cpu" and _cpu_clock[0] == "thread":
        begin = time.thread_time()
        fn()
        return time.thread_time() - begin
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    begin = time.perf_counter()
    fn()
    return time.perf_counter() - begin


def interleaved_medians(candidates: dict, device: torch.device, rounds: int, warmup: int = 2) -> dict:
    """Median seconds of each candidate over `rounds`, candidates alternating each round."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            samples[name].append(_time_once(fn, device))
    return {name: statistics.median(values) for name, values in samples.items()}


def copy_bandwidth(device: torch.device) -> float:
    """Bytes per second of a large tensor copy (read + write counted)."""
    source = torch.empty(64 * 2**20 // 4, dtype=torch.float32, device=device).uniform_()
    target = torch.empty_like(source)
    seconds = interleaved_medians({"copy": lambda: target.copy_(source)}, device, rounds=7)["copy"]
    return 2 * source.numel() * 4 / seconds


def gemm_engines(device: torch.device, dtype=torch.float32) -> dict:
    """The GEMM engines torch has here, each a function (a, b) -> a callable computing a @ b,
    its operands prepared outside what is timed: at::mm everywhere; on the CPU also oneDNN's
    linear and, in float32, oneDNN's brgemm micro-kernel over 64-row blocks and 128-column
    panels (padkern::step_gemm), which padkern's CPU kernels call. Which one is fastest depends
    on the host and the shape, so a floor takes the fastest."""
    engines = {"at::mm": lambda a, b: (lambda: torch.mm(a, b))}
    if device.type != "cpu":
        return engines
    # padkern.ops._weight_gradient.onednn_linear_available, spelled out: benchmarks/ab.sh times
    # older builds with this file.
    if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        def onednn(a, b):
            # oneDNN's linear computes a @ w^T with w [N, K]: transposed once, outside the timing.
            a, w = a.contiguous(), b.t().contiguous()
            return lambda: torch.ops.mkldnn._linear_pointwise(a, w, None, "none", [], "")
        engines["oneDNN"] = onednn
    import padkern.ops  # noqa: F401  (loads the extension: step_gemm's kernel)

    # Absent from older builds (benchmarks/ab.sh times them with this file): no schema, or
    # a schema and no kernel.
    has_step_gemm = hasattr(torch.ops.padkern, "step_gemm") and torch._C._dispatch_has_kernel_for_dispatch_key(
        "padkern::step_gemm", "CPU")
    if dtype == torch.float32 and has_step_gemm:
        def brgemm(a, b):
            a, w = a.contiguous(), b.t().contiguous()
            return lambda: torch.ops.padkern.step_gemm(a, w, None)
        engines["brgemm"] = brgemm
    return engines


def matmul_rate(device: torch.device, dtype=torch.float32) -> float:
    """FLOP per second of a large square matmul through the fastest of gemm_engines."""
    n = 4096 if device.type == "cuda" else 1536
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    candidates = {name: make(a, b) for name, make in gemm_engines(device, dtype).items()}
    seconds = min(interleaved_medians(candidates, device, rounds=5).values())
    return 2 * n**3 / seconds


@dataclass
class Report:
    name: str
    device: torch.device
    rows: list = field(default_factory=list)

    def add(self, case: dict, medians: dict, baseline: str, floor_seconds: float) -> None:
        for candidate, seconds in medians.items():
            row = dict(case, candidate=candidate, median_ms=seconds * 1e3,
                       ratio_vs_baseline=seconds / medians[baseline], baseline=baseline,
                       floor_ms=floor_seconds * 1e3, device=device_name(self.device))
            if self.device.type == "cuda":
                row["capability"] = "%d.%d" % torch.cuda.get_device_capability(self.device)
            if match := _BACKEND_CANDIDATE.match(candidate):
                row["padkern_op"], row["backend"] = match.groups()
            self.rows.append(row)

    def print_table(self) -> None:
        if not self.rows:
            return
        keys = [k for k in self.rows[0] if k not in ("device", "baseline", "capability", "padkern_op", "backend")]
        print(f"\n== {self.name} on {device_name(self.device)} (ratio: time / {self.rows[0]['baseline']}) ==")
        print(" | ".join(keys))
        for row in self.rows:
            print(" | ".join(f"{row[k]:.3f}" if isinstance(row[k], float) else str(row[k]) for k in keys))

    def save(self) -> str:
        directory = results_dir(self.device)
        os.makedirs(directory, exist_ok=True)
        stem = os.path.join(directory, f"{self.name}_{self.device.type}")
        with open(stem + ".json", "w") as handle:
            json.dump(self.rows, handle, indent=1)
        with open(stem + ".csv", "w", newline="") as handle:
            fields = list(dict.fromkeys(k for row in self.rows for k in row))
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(self.rows)
        self._plot(stem + ".png")
        return stem

    def _plot(self, path: str) -> None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return
        cases = sorted({row["case"] for row in self.rows}, key=[r["case"] for r in self.rows].index)
        candidates = sorted({row["candidate"] for row in self.rows}, key=[r["candidate"] for r in self.rows].index)
        figure, axis = plt.subplots(figsize=(max(6, len(cases) * 1.2), 4))
        width = 0.8 / len(candidates)
        for i, candidate in enumerate(candidates):
            ratios = [next((r["ratio_vs_baseline"] for r in self.rows if r["case"] == c and r["candidate"] == candidate), 0) for c in cases]
            axis.bar([x + i * width for x in range(len(cases))], ratios, width, label=candidate)
        axis.set_xticks([x + 0.4 - width / 2 for x in range(len(cases))], cases, rotation=30, ha="right", fontsize=7)
        axis.set_ylabel("time / baseline (lower is better)")
        axis.set_title(f"{self.name} on {device_name(self.device)}")
        axis.legend(fontsize=7)
        figure.tight_layout()
        figure.savefig(path, dpi=100)
        plt.close(figure)
