"""The isolated worker's memory guard (tests/isolated.py): an address-space cap where there
is no GPU, and, where CUDA is present (whose driver reserves more address space at start than
any useful cap allows), a watch on resident memory that kills a runaway worker instead.

The bodies below run in a worker started for the test; they import neither torch nor
padkern, so each worker starts in well under a second.
"""
import resource
import time

import pytest

import isolated


def report_address_space_limit():
    """Run in the worker: fails with the soft RLIMIT_AS in the message, so the parent sees it."""
    raise AssertionError(f"RLIMIT_AS={resource.getrlimit(resource.RLIMIT_AS)[0]}")


def take_resident_memory(megabytes):
    """Run in the worker: fill ``megabytes`` of memory (every page touched), then wait."""
    held = b"\x01" * (megabytes << 20)
    time.sleep(60)
    return held


def stay_small():
    return None


def call(worker, name, *args, timeout=30):
    try:
        return worker.call((__name__, name, args, {}), timeout)
    finally:
        worker.close()


def test_without_a_gpu_the_worker_keeps_its_address_space_cap(monkeypatch):
    monkeypatch.delenv("PADKERN_ISOLATED_GUARD", raising=False)
    monkeypatch.setattr(isolated, "default_guard", lambda: "address_space")
    status, detail = call(isolated._Worker(), "report_address_space_limit")
    assert status == "fail"
    assert f"RLIMIT_AS={isolated.MEMORY_LIMIT}" in detail


def test_a_gpu_worker_has_no_address_space_cap():
    # What CUDA's driver needs to initialise: the worker inherits the parent's (unlimited) limit.
    status, detail = call(isolated._Worker(guard="resident"), "report_address_space_limit")
    assert status == "fail"
    assert f"RLIMIT_AS={resource.getrlimit(resource.RLIMIT_AS)[0]}" in detail
    assert f"RLIMIT_AS={isolated.MEMORY_LIMIT}" not in detail


def test_the_resident_guard_kills_a_worker_past_its_limit():
    started = time.monotonic()
    status, detail = call(isolated._Worker(guard="resident", memory_limit=100 << 20), "take_resident_memory", 300)
    assert status == "died"
    assert "resident memory passed 0.1 GiB" in detail
    assert time.monotonic() - started < 20  # killed at the limit, not at the 30 s timeout


def test_the_resident_guard_lets_a_small_body_pass():
    assert call(isolated._Worker(guard="resident", memory_limit=100 << 20), "stay_small") == ("ok", None)


def test_the_guard_is_chosen_by_the_gpu_unless_named(monkeypatch):
    import torch

    monkeypatch.delenv("PADKERN_ISOLATED_GUARD", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert isolated.default_guard() == "resident"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert isolated.default_guard() == "address_space"
    monkeypatch.setenv("PADKERN_ISOLATED_GUARD", "resident")
    assert isolated.default_guard() == "resident"
    monkeypatch.setenv("PADKERN_ISOLATED_GUARD", "none")
    with pytest.raises(ValueError, match="PADKERN_ISOLATED_GUARD must be one of"):
        isolated.default_guard()
