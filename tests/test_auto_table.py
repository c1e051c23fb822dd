"""backend="auto" on a GPU follows the committed measurements (padkern/auto_table.json),
and benchmarks/auto_table.py turns a GPU run's rows into that table."""
import json

import pytest
import torch

from benchmarks import auto_table
from padkern import _auto_table, _backend

KNOWN_OPS = {"masked_linear", "ragged_linear", "ragged_bmm", "ragged_outer_bmm", "lstm", "gru", "rnn", "segment_sum",
             "segment_mean", "segment_max", "segment_softmax", "pad", "unpad"}


def row(op, backend, case, ms, dtype="bfloat16", capability="9.0", passes="forward"):
    return {"case": case, "dtype": dtype, "pass": passes, "candidate": f"padkern {op} [{backend}]",
            "median_ms": ms, "padkern_op": op, "backend": backend, "capability": capability, "device": "GPU"}


def test_committed_table_is_well_formed():
    data = json.load(open(_auto_table.TABLE_PATH))
    for entry in data["entries"]:
        assert entry["op"] in KNOWN_OPS
        assert set(entry["order"]) <= {"cuda", "triton", "reference"}
        assert hasattr(torch, entry["dtype"])
        major, minor = entry["capability"].split(".")
        assert major.isdigit() and minor.isdigit()


def test_measured_order_comes_first_then_the_fixed_order():
    fixed = ("cuda", "triton", "reference")
    assert _auto_table.merged_order("triton,cuda", fixed) == ("triton", "cuda", "reference")
    assert _auto_table.merged_order("triton", fixed) == ("triton", "cuda", "reference")
    assert _auto_table.merged_order("", fixed) == fixed


def test_rankings_use_cases_every_backend_ran():
    rows = [row("masked_linear", "cuda", "a", 2.0), row("masked_linear", "triton", "a", 1.0),
            row("masked_linear", "cuda", "b", 1.0), row("masked_linear", "triton", "b", 1.5),
            row("masked_linear", "cuda", "only cuda ran", 100.0),
            row("masked_linear", "cuda", "a", 9.0, dtype="float32+tf32"),  # TF32 rows stay out
            {"case": "a", "dtype": "bfloat16", "candidate": "F.linear on packed rows", "median_ms": 0.1}]
    [entry] = auto_table.rankings(rows)
    assert (entry["op"], entry["dtype"], entry["capability"]) == ("masked_linear", "bfloat16", "9.0")
    assert entry["order"] == ["triton", "cuda"] and entry["cases"] == 2


def test_merge_replaces_only_the_remeasured_entries():
    old = [{"op": "lstm", "dtype": "float32", "capability": "8.0", "order": ["triton"]},
           {"op": "lstm", "dtype": "float32", "capability": "9.0", "order": ["triton"]}]
    new = [{"op": "lstm", "dtype": "float32", "capability": "9.0", "order": ["cuda", "triton"]}]
    merged = auto_table.merge(old, new)
    assert [e["order"] for e in merged] == [["triton"], ["cuda", "triton"]]


def test_auto_follows_the_table_on_a_gpu(monkeypatch):
    device = torch.device("cuda", 0)
    runnable = [n for n in ("cuda", "triton") if _backend.why_unavailable(n, device) is None]
    if not runnable:
        pytest.skip("neither GPU backend is built here")
    ranked = runnable[::-1]
    monkeypatch.setattr(_auto_table, "measured_order", lambda op, dtype, index: ",".join(ranked))
    assert _backend.resolve(None, device, "masked_linear", torch.float16) == ranked[0]
    # A backend asked for by name runs as asked; without op and dtype the fixed order holds.
    assert _backend.resolve(ranked[-1], device, "masked_linear", torch.float16) == ranked[-1]
    assert _backend.resolve(None, device) == runnable[0]


def test_cpu_ignores_the_table(monkeypatch):
    monkeypatch.setattr(_auto_table, "measured_order", lambda *args: "triton")
    assert _backend.resolve(None, torch.device("cpu"), "masked_linear", torch.float32) in ("cpu", "reference")
