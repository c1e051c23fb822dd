"""What ``backend="auto"`` runs on a GPU, per op and dtype, from measurements.

``padkern/auto_table.json`` is written by ``python -m benchmarks.auto_table`` from a GPU
benchmark run (the JSON under ``benchmarks/results/gpu/``, committed beside it). Each
entry names one op, dtype and GPU architecture (compute capability "9.0") and the
backends in the order the measurements ranked them (fastest median over the run's cases
first). Where the table has no entry (no run has measured that op, dtype and
architecture), auto keeps its fixed order: cuda, triton, reference.
"""
import json
import os

import torch

TABLE_PATH = os.path.join(os.path.dirname(__file__), "auto_table.json")

_entries = None  # (op, dtype, capability) -> "backend,backend,..."
_capabilities = {}  # device index -> "major.minor"


def load(path: str = TABLE_PATH) -> dict:
    """The table's entries keyed by (op, dtype name, capability)."""
    try:
        with open(path) as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return {}
    return {(e["op"], e["dtype"], e["capability"]): ",".join(e["order"]) for e in data.get("entries", [])}


def merged_order(measured: str, fixed: tuple) -> tuple:
    """The measured ranking first, then the fixed order for backends it did not rank."""
    ranked = tuple(name for name in measured.split(",") if name) if measured else ()
    return ranked + tuple(name for name in fixed if name not in ranked)


def _capability(index: int) -> str:
    if index not in _capabilities:
        major, minor = torch.cuda.get_device_capability(index)
        _capabilities[index] = f"{major}.{minor}"
    return _capabilities[index]


# Evaluated once while torch.compile traces (the table and the device do not change
# within a process), so the lookup never breaks a graph.
@torch.compiler.assume_constant_result
def measured_order(op: str, dtype_name: str, device_index: int) -> str:
    """Comma-separated backends ranked for this op, dtype and GPU, or "" when unmeasured."""
    global _entries
    if _entries is None:
        _entries = load()
    if not _entries:
        return ""
    index = device_index if device_index >= 0 else torch.cuda.current_device()
    return _entries.get((op, dtype_name, _capability(index)), "")
