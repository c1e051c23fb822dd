"""pytest plugin for the GPU run (benchmarks/gpu_check.sh loads it with -p benchmarks.gpu_pytest).

- ``--gpu-ids FILE``: run only the node ids listed in FILE (benchmarks/gpu_plan.py writes
  it), so the run is exactly the selection whose size and time the plan printed.
- The first failing test is printed in full (long traceback) the moment it fails, while the
  run goes on (no -x: one call of the GPU machine must bring back every failure); the others
  keep --tb's shorter form in the summary at the end. A run cut off by its time limit has
  shown the first failure whole.
- ``--gpu-outcomes FILE``: one line per test as it ends (outcome, seconds, node id), written
  through at once, so a cut-off run still says what passed, what failed and how long each
  took (which sizes the next run).
Works with and without pytest-xdist (the report hooks run in the controlling process).
"""
import pytest

_FULL = "padkern_full_failure"


def pytest_addoption(parser):
    group = parser.getgroup("padkern GPU run")
    group.addoption("--gpu-ids", metavar="FILE", default=None, help="run only the node ids listed in FILE")
    group.addoption("--gpu-outcomes", metavar="FILE", default=None,
                    help="append 'outcome<TAB>seconds<TAB>node id' per test as it ends")


def pytest_configure(config):
    if not hasattr(config, "workerinput"):  # the controlling process (or the only one)
        config.pluginmanager.register(_Reporter(config), "padkern_gpu_reporter")


def pytest_collection_modifyitems(config, items):
    path = config.getoption("gpu_ids")
    if not path:
        return
    with open(path) as handle:
        wanted = {line.strip() for line in handle if line.strip()}
    keep = [item for item in items if item.nodeid in wanted]
    config.hook.pytest_deselected(items=[item for item in items if item.nodeid not in wanted])
    items[:] = keep


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # The long form is made where the exception is (an xdist worker too) and travels with the
    # report; --tb keeps its own style for the end-of-run summary.
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.excinfo is not None:
        try:
            text = str(item._repr_failure_py(call.excinfo, style="long"))
        except Exception:  # noqa: BLE001 - pytest's private formatter changed: its public form
            text = str(call.excinfo.getrepr(style="long"))
        report.user_properties.append((_FULL, text))


class _Reporter:
    def __init__(self, config):
        self.config = config
        self.first_shown = False
        path = config.getoption("gpu_outcomes")
        self.outcomes = open(path, "a", buffering=1) if path else None

    def pytest_runtest_logreport(self, report):
        if self.outcomes is not None and (report.when == "call" or not report.passed):
            outcome = "error" if report.failed and report.when != "call" else report.outcome
            self.outcomes.write(f"{outcome}\t{report.duration:.2f}\t{report.nodeid}\n")
        if report.failed and not self.first_shown:
            self.first_shown = True
            full = next((value for key, value in report.user_properties if key == _FULL), None)
            writer = self.config.get_terminal_writer()
            writer.line()
            writer.sep("!", f"first failure, in full ({report.when}): {report.nodeid}", red=True)
            writer.line(full or report.longreprtext)
            writer.sep("!", "the run goes on", red=True)
            writer.flush()

    def pytest_unconfigure(self, config):
        if self.outcomes is not None:
            self.outcomes.close()
