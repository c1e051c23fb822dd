"""Run test bodies in a child process, so a crash (segfault, abort, hang) is one failing
test and never a dead run (TESTING.md: hostile inputs run in a child process).

One long-lived worker (`python -c "import isolated; isolated.serve()"`) imports each test
module once and runs test bodies one after another, so the 2-3 s of importing torch is
paid once, not per test. ``@isolated`` on a test function sends (module, name, args) to
the worker over a pipe; the worker calls the undecorated function and sends back "ok" or
the traceback. If the worker dies on a signal or overruns ``TIMEOUT_S``, that test fails
with the signal and the tail of the worker's stderr (faulthandler's stack trace), and the
next test starts a fresh worker.

Memory guard (a kernel that misreads offsets can ask for terabytes; the machines have no
swap, so the OOM killer would take the whole run): without a GPU the worker's address space
is capped (``RLIMIT_AS``), which turns such a request into an allocation error. Where CUDA
is present that cap cannot be used: the CUDA driver reserves far more virtual address space
than any cap that still protects the machine when it initialises, so every first CUDA call
would fail. There the parent instead watches the worker's resident memory while it waits and
kills it past ``MEMORY_LIMIT`` (device memory is the GPU's own and fails cleanly when short).
``PADKERN_ISOLATED_GUARD`` (``address_space`` or ``resident``) overrides the choice.
"""
import atexit
import functools
import os
import pickle
import resource
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback

IN_WORKER = os.environ.get("PADKERN_ISOLATED_WORKER") == "1"
TIMEOUT_S = 120
# The most memory one test body may take: as address space without a GPU, as resident
# memory with one (see the module docstring).
MEMORY_LIMIT = 16 << 30
GUARDS = ("address_space", "resident")
# How often the parent reads the worker's resident memory under the "resident" guard: fast
# enough that a runaway allocation (a few GB/s of page faults) overshoots by little.
_POLL_S = 0.05
_HEADER = struct.Struct("<Q")


class ChildProcessFailure(AssertionError):
    pass


def _send(stream, obj) -> None:
    data = pickle.dumps(obj)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _receive_exact(read, size):
    chunks, remaining = [], size
    while remaining:
        chunk = read(remaining)
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


# ----- the worker ------------------------------------------------------------------------
def default_guard() -> str:
    """How the worker's memory is bounded here: ``resident`` where CUDA is present (an
    address-space cap would stop the CUDA driver initialising), else ``address_space``."""
    chosen = os.environ.get("PADKERN_ISOLATED_GUARD")
    if chosen:
        if chosen not in GUARDS:
            raise ValueError(f"PADKERN_ISOLATED_GUARD must be one of {GUARDS}, got {chosen!r}")
        return chosen
    import torch  # the parent's: pytest's conftest has imported it already

    return "resident" if torch.cuda.is_available() else "address_space"


def resident_bytes(pid: int):
    """Resident memory of process ``pid`` (VmRSS), or None once it has gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def serve() -> None:
    import faulthandler
    import importlib

    faulthandler.enable(file=sys.stderr, all_threads=False)
    if os.environ.get("PADKERN_ISOLATED_GUARD") == "address_space":
        try:
            resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
        except (ValueError, OSError):
            pass
    # Keep the protocol on a private copy of stdout; anything printed goes to stderr.
    protocol = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    while True:
        header = _receive_exact(requests.read, _HEADER.size)
        if header is None:
            return
        module_name, qualname, args, kwargs = pickle.loads(_receive_exact(requests.read, _HEADER.unpack(header)[0]))
        print(f"--- isolated: {module_name}.{qualname} {args} {kwargs}", file=sys.stderr, flush=True)
        try:
            target = importlib.import_module(module_name)
            for part in qualname.split("."):
                target = getattr(target, part)
            getattr(target, "__isolated_body__", target)(*args, **kwargs)
            reply = ("ok", None)
        except BaseException as error:  # noqa: BLE001 - every failure goes back to the parent
            skip = type(error).__name__ == "Skipped"
            reply = ("skip" if skip else "fail", str(error) if skip else traceback.format_exc())
        _send(protocol, reply)


# ----- the parent --------------------------------------------------------------------------
class _Worker:
    def __init__(self, guard=None, memory_limit=MEMORY_LIMIT):
        self.guard = guard or default_guard()
        self.memory_limit = memory_limit
        tests_dir = os.path.dirname(os.path.abspath(__file__))
        env = dict(os.environ, PADKERN_ISOLATED_WORKER="1", PADKERN_ISOLATED_GUARD=self.guard,
                   PYTHONPATH=os.pathsep.join([tests_dir, os.environ.get("PYTHONPATH", "")]))
        self.stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, "-c", "import isolated; isolated.serve()"], cwd=os.path.dirname(tests_dir),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, env=env)

    def stderr_tail(self, start, lines=40) -> str:
        self.stderr.seek(start)
        text = self.stderr.read().decode(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def call(self, request, timeout):
        """("ok"|"fail"|"skip"|"died", detail)."""
        start = self.stderr.seek(0, os.SEEK_END)
        try:
            _send(self.process.stdin, request)
        except BrokenPipeError:
            return "died", self._death(start, "the worker had already exited")
        out = self.process.stdout
        if not self._wait_for_answer(out, timeout):
            if self.overran_memory:
                return "died", (f"its resident memory passed {self.memory_limit / 2**30:.1f} GiB (the resident guard's "
                                f"limit); killed it.\nworker stderr:\n{self.stderr_tail(start)}")
            return "died", f"no answer within {timeout} s (hung); killed it.\nworker stderr:\n{self.stderr_tail(start)}"
        header = _receive_exact(out.read, _HEADER.size)
        body = None if header is None else _receive_exact(out.read, _HEADER.unpack(header)[0])
        if body is None:
            return "died", self._death(start, "the worker closed its pipe")
        return pickle.loads(body)

    def _wait_for_answer(self, out, timeout) -> bool:
        """True once the worker's answer is readable; False (the worker killed) if it hung,
        or, under the resident guard, took more memory than its limit."""
        self.overran_memory = False
        if self.guard != "resident":
            ready, _, _ = select.select([out], [], [], timeout)
            if not ready:
                self.kill()
            return bool(ready)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([out], [], [], max(0.0, min(_POLL_S, left)))
            if ready:
                return True
            resident = resident_bytes(self.process.pid)
            if resident is not None and resident > self.memory_limit:
                self.overran_memory = True
                self.kill()
                return False
            if left <= 0:
                self.kill()
                return False

    def _death(self, start, what):
        try:
            code = self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.process.returncode
        cause = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
        return f"{what}: child process died with {cause}.\nworker stderr:\n{self.stderr_tail(start)}"

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def close(self):
        if self.process.poll() is None:
            try:
                self.process.stdin.close()
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()
        self.stderr.close()


_worker = [None]


def _close_worker():
    if _worker[0] is not None:
        _worker[0].close()
        _worker[0] = None


atexit.register(_close_worker)


def run_in_child(module_name, qualname, args=(), kwargs=None, timeout=TIMEOUT_S):
    """Run module.qualname(*args, **kwargs) in the worker; raise here if it failed or died."""
    __tracebackhide__ = True
    if _worker[0] is None or _worker[0].process.poll() is not None:
        _close_worker()
        _worker[0] = _Worker()
    status, detail = _worker[0].call((module_name, qualname, tuple(args), dict(kwargs or {})), timeout)
    if status == "died":
        _close_worker()
        raise ChildProcessFailure(f"{module_name}.{qualname}{tuple(args)}: {detail}")
    if status == "skip":
        import pytest

        pytest.skip(detail)
    if status == "fail":
        raise ChildProcessFailure(f"failed in the child process:\n{detail}")


def isolated(test=None, *, timeout=TIMEOUT_S):
    """Decorator (``@isolated`` or ``@isolated(timeout=s)``): the test body runs in the
    worker; pytest sees the same signature."""
    if test is None:
        return lambda body: isolated(body, timeout=timeout)
    if IN_WORKER:
        return test

    @functools.wraps(test)
    def in_child(*args, **kwargs):
        __tracebackhide__ = True
        run_in_child(test.__module__, test.__qualname__, args, kwargs, timeout)

    in_child.__isolated_body__ = test
    return in_child
