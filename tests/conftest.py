"""Shared fixtures: every test runs on each (device, backend) pair that can run here.

Without a GPU, Triton kernels run under the interpreter; TRITON_INTERPRET must be
set before triton is first imported, hence at the top of this file.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import padkern  # noqa: E402
from padkern._backend import why_unavailable  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


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
