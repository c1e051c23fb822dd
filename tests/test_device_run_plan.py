"""The GPU run (benchmarks/gpu_check.sh), exercised without a GPU: its dry run end to end (the
extensions load, the selection is collected as on a GPU and sized, every stage is planned within
one call, the sanitizer cases exist, the output is at most 8 files with the results in one
archive), the selection rules, the pytest plugin that prints the first failure in full and
logs each outcome as it comes, and the loud failure when an extension is missing.

(No "gpu", "cuda" or "half" in this file's names: the GPU run selects tests by those words.)
"""
import os
import re
import subprocess
import sys
import tarfile

import pytest

from benchmarks import gpu_plan
from padkern import _extension

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What the device runner brings back from $OUT: 8 files, names of letters, digits, '.', '_', '-'.
MAX_FILES_BACK = 8
FILE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def run(args, env_extra=None, cwd=ROOT, timeout=300):
    env = dict(os.environ, PYTHON=sys.executable, **(env_extra or {}))
    env.pop("TRITON_INTERPRET", None)  # as a fresh shell has it: conftest sets it where needed
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    if _extension.CPU_MISSING or _extension.CUDA_MISSING:
        pytest.skip(f"the dry run needs both extensions built here (cpu: {_extension.CPU_MISSING or 'ok'}, "
                    f"cuda: {_extension.CUDA_MISSING or 'ok'})")
    out = tmp_path_factory.mktemp("out")
    done = run(["bash", "benchmarks/gpu_check.sh", "--dry-run"], {"OUT": str(out)})
    return done, out


def test_dry_run_passes_and_fits_one_call(dry_run):
    done, _ = dry_run
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert "PLAN DOES NOT FIT" not in done.stdout
    selected, collected = map(int, re.search(r"GPU selection: (\d+) of (\d+) collected", done.stdout).groups())
    assert 1000 < selected < collected
    # The tests stage, collected through the plugin, runs exactly the planned selection.
    assert re.search(rf"\b{selected}/{collected} tests collected", done.stdout), done.stdout[-4000:]
    total_expected, total_limit = map(int, re.search(r"^total\s+(\d+)s\s+(\d+)s", done.stdout, re.M).groups())
    assert total_expected <= total_limit <= gpu_plan.CALL_BUDGET_S
    for stage in gpu_plan.STAGES:
        assert re.search(rf"^=== {stage}: expected \d+ s, limit \d+ s", done.stdout, re.M), stage
        assert re.search(rf"^=== {stage}: exit 0 after", done.stdout, re.M), stage
    assert "bench total: expected" in done.stdout


def test_dry_run_output_is_what_the_runner_brings_back(dry_run):
    _, out = dry_run
    files = sorted(os.listdir(out))
    assert len(files) <= MAX_FILES_BACK, files
    assert all(FILE_NAME.match(name) and os.path.isfile(out / name) for name in files), files
    for log in ("plan.log", "build.log", "tests.log", "sanitizers.log", "bench.log", "results.tar.gz"):
        assert log in files
    with tarfile.open(out / "results.tar.gz") as archive:
        names = archive.getnames()
    assert "padkern/auto_table.json" in names
    for listed in ("selection", "memcheck", "racecheck"):
        assert f"plan/{listed}.txt" in names
    plan = (out / "plan.log").read_text()
    assert "tests/test_triton_guards.py" in plan
    assert "test_cuda_resources.py" not in plan and "test_triton_compiles.py" not in plan


def test_a_stage_cut_off_at_its_limit_still_brings_back_its_log(tmp_path):
    # Not a dry run: the tests stage really starts (here, on the selection's few CPU cases) and
    # is stopped by a 2 s limit, less than pytest takes to start, as a call's limit would stop it.
    if _extension.CPU_MISSING or _extension.CUDA_MISSING:
        pytest.skip("the run stops at the missing extension first")
    done = run(["bash", "benchmarks/gpu_check.sh", "tests"], {"OUT": str(tmp_path), "PADKERN_GPU_BUDGET_TESTS": "2"})
    assert done.returncode != 0
    log = (tmp_path / "tests.log").read_text()
    assert "!!! tests: cut off at its 2 s limit" in log and "=== tests: exit 124" in log
    # Whatever tests ended before the cut (within 2 s, rarely any) are in both the log and the
    # outcomes, each written through: one progress mark per outcome line, give or take one.
    path = tmp_path / "tests-outcomes.tsv"
    outcomes = path.read_text().splitlines() if path.exists() else []
    assert all(line.split("\t")[0] in ("passed", "failed", "skipped", "error") for line in outcomes)
    progress = [line.split("!!!")[0].strip() for line in log.splitlines()]  # the cut-off note may end one
    marks = sum(len(re.sub(r" +\[ *\d+%\]$", "", line)) for line in progress if re.fullmatch(r"[.sFEx]+( +\[ *\d+%\])?", line))
    assert abs(marks - len(outcomes)) <= 1, (marks, len(outcomes))
    assert tarfile.is_tarfile(tmp_path / "results.tar.gz")
    assert len(os.listdir(tmp_path)) <= MAX_FILES_BACK


def test_the_selection_rules():
    assert gpu_plan.selected("tests/test_padding.py::test_pad[cuda-cuda-True-all_empty]")
    assert gpu_plan.selected("tests/test_rnn_ops.py::test_float32[cuda-triton-17-lstm]")
    assert gpu_plan.selected("tests/test_registration.py::test_opcheck[padding-native-False-cuda]")
    assert not gpu_plan.selected("tests/test_padding.py::test_pad[cpu-cpu-True-all_empty]")
    # Whole files: GPU-only files (new ones by name alone) and the Triton guards.
    assert gpu_plan.selected("tests/test_gpu_attention.py::test_anything[self-16]")
    assert gpu_plan.selected("tests/test_triton_guards.py::test_sequences_are_clamped_into_the_values[huge]")
    # What CI already does, compiling on the CPU.
    assert not gpu_plan.selected("tests/test_cuda_resources.py::test_sm90_kernels_do_not_spill_and_fit_shared_memory")
    assert not gpu_plan.selected("tests/test_triton_compiles.py::test_every_triton_kernel_compiles_for_the_gpu")


def test_a_new_kernel_family_joins_the_sanitizers():
    collected = gpu_plan.MEMCHECK + gpu_plan.RACECHECK + [
        "tests/test_gpu_conv.py::test_shapes[cpu-ref]", "tests/test_gpu_conv.py::test_shapes[cuda-cuda]",
        "tests/test_gpu_attention.py::test_causal[cuda-16]", "tests/test_gpu_transfer.py::test_pinned[cuda]",
        "tests/test_conv1d.py::test_float32[cuda-cuda]", "tests/test_conv1d.py::test_float32[cuda-triton]"]
    memcheck, racecheck, missing = gpu_plan.sanitizer_cases(collected)
    assert missing == []
    # The conv family by file (its named test not there: its first cuda-cuda case); GPU-only
    # files of a family by pattern; a GPU-only file of no kernel family stays out.
    assert memcheck[len(gpu_plan.MEMCHECK):] == [
        "tests/test_conv1d.py::test_float32[cuda-cuda]", "tests/test_gpu_attention.py::test_causal[cuda-16]",
        "tests/test_gpu_conv.py::test_shapes[cuda-cuda]"]
    assert racecheck[len(gpu_plan.RACECHECK):] == ["tests/test_gpu_attention.py::test_causal[cuda-16]"]
    _, _, missing = gpu_plan.sanitizer_cases(gpu_plan.MEMCHECK[1:])
    assert gpu_plan.MEMCHECK[0] in missing


def test_first_failure_in_full_and_outcomes_as_they_come(tmp_path):
    (tmp_path / "test_demo.py").write_text(
        "def helper(x):\n"
        "    deep_local = x + 1\n"
        "    assert deep_local == 5\n"
        "def test_fails_first():\n    helper(1)\n"
        "def test_passes():\n    pass\n"
        "def test_fails_later():\n    assert 1 == 2\n"
        "def test_not_listed():\n    pass\n")
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"test_demo.py::{name}\n" for name in ("test_fails_first", "test_passes", "test_fails_later")))
    outcomes = tmp_path / "outcomes.tsv"
    done = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "benchmarks.gpu_pytest",
                "--tb=line", "--gpu-ids", str(ids), "--gpu-outcomes", str(outcomes), "test_demo.py"],
               {"PYTHONPATH": ROOT}, cwd=tmp_path, timeout=120)
    assert done.returncode == 1, done.stdout
    first, rest = done.stdout.split("the run goes on", 1)
    assert "first failure, in full (call): test_demo.py::test_fails_first" in first
    assert "deep_local = x + 1" in first  # the long form: the helper's source and locals
    assert "first failure" not in rest and "2 failed, 1 passed, 1 deselected" in rest
    lines = [line.split("\t") for line in outcomes.read_text().splitlines()]
    assert [(o, n.split("::")[1]) for o, _, n in lines] == [
        ("failed", "test_fails_first"), ("passed", "test_passes"), ("failed", "test_fails_later")]


def test_a_missing_extension_stops_the_run_loudly(tmp_path, monkeypatch):
    monkeypatch.setattr(_extension, "CUDA_MISSING", "_cuda.so: undefined symbol: _ZN7padkern4fakeEv")
    with pytest.raises(ImportError, match="padkern._cuda failed to load: _cuda.so: undefined symbol"):
        _extension.require_all()
    # Through the test run's conftest: a plugin makes the extension look missing before it checks.
    (tmp_path / "make_missing.py").write_text(
        "import padkern._extension as e\ne.CUDA_MISSING = '_cuda.so: undefined symbol: _ZN7padkern4fakeEv'\n")
    done = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "make_missing",
                "tests/test_tf32_bound.py::test_to_tf32_keeps_ten_mantissa_bits"],
               {"PADKERN_REQUIRE_EXTENSIONS": "1", "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}, timeout=120)
    assert done.returncode == 4, done.stdout + done.stderr  # pytest's usage error: nothing ran
    assert "undefined symbol: _ZN7padkern4fakeEv" in done.stdout + done.stderr
