"""Shared fixtures: every test runs on each (device, backend) pair that can run here.

Without a GPU, Triton kernels run under the interpreter; TRITON_INTERPRET must be
set before triton is first imported, hence at the top of this file.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

import padkern  # noqa: E402
from padkern._backend import why_unavailable  # noqa: E402

# The GPU run's dry run (benchmarks/gpu_check.sh --dry-run) sizes the GPU selection on a
# machine without a GPU: PADKERN_COLLECT_AS_GPU=1 parametrises over the cuda device as if one
# were present, for --collect-only alone (pytest_configure refuses anything else).
COLLECT_AS_GPU = os.environ.get("PADKERN_COLLECT_AS_GPU") == "1" and not torch.cuda.is_available()
# Hypothesis: `ci` (the default, what `make test` runs) draws the same examples on every run,
# so a submission never fails on a seed; `explore` draws fresh ones, many, and is how to look
# for bugs locally: `pytest --hypothesis-profile=explore tests/...` (every randomized test must
# pass there too: tolerances are error bounds, tests/error_bounds.py). A test's own
# @settings(max_examples=...) still applies under `ci`.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", deadline=None, max_examples=200, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() or COLLECT_AS_GPU else [])


def pytest_configure(config):
    if COLLECT_AS_GPU and not config.option.collectonly:
        raise pytest.UsageError("PADKERN_COLLECT_AS_GPU=1 collects the GPU cases without a GPU: "
                                "use it with --collect-only, nothing here can run them")
    # The GPU run must fail loudly, not pass without the cases of an extension that failed
    # to load (padkern/_extension.py: require_all).
    if os.environ.get("PADKERN_REQUIRE_EXTENSIONS") == "1":
        from padkern import _extension

        try:
            _extension.require_all()
        except ImportError as error:
            raise pytest.UsageError(f"PADKERN_REQUIRE_EXTENSIONS=1 and an extension is missing:\n{error}") from None


def device_backends():
    pairs = []
    for device in DEVICES:
        for backend in ("reference", "cpu", "cuda", "triton"):
            if why_unavailable(backend, torch.device(device)) is None:
                pairs.append((device, backend))
    return pairs


DEVICE_BACKENDS = device_backends()
KERNEL_BACKENDS = [pair for pair in DEVICE_BACKENDS if pair[1] != "reference"]


def pair_id(pair):
    return f"{pair[0]}-{pair[1]}"


@pytest.fixture(params=DEVICE_BACKENDS, ids=pair_id)
def device_backend(request):
    return request.param


@pytest.fixture(params=KERNEL_BACKENDS, ids=pair_id)
def kernel_backend(request):
    return request.param


@pytest.fixture(autouse=True)
def _no_tf32():
    # float32 comparisons at 1e-5 need full-precision matmuls.
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous
