"""pytest plugin: a skipped test fails the run unless a written list expects it.

    PYTHONPATH=tests/infra pytest -p pytest_expected_skips \
        --expected-skips=tests/expected-skips.txt ...

The list has one line per expected skip, `<node id or node id prefix> | <reason>`; a line that
starts with `#` is a comment (only a whole line: a reason may hold a `#`). Node ids are relative to
the rootdir (scripts/test.sh passes --rootdir=<repository>, so they read
`tests/infra/test_python_mirror.py::test_...`). A skip whose node id is neither on the list nor
starts with an entry of it is reported in its own section and turns a green run red (exit 1). An
entry without a reason is refused. xfail results are not skips and are not judged.
"""

from pathlib import Path

import pytest


def pytest_addoption(parser):
    parser.addoption(
        "--expected-skips",
        metavar="FILE",
        help="fail the run on any skip not listed in FILE (lines: '<node id or prefix> | <reason>')",
    )


def parse(path):
    entries = []
    for number, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        nodeid, sep, reason = (part.strip() for part in line.partition("|"))
        if not sep or not nodeid or not reason:
            raise pytest.UsageError(f"{path}:{number}: want '<node id or prefix> | <reason>', got {raw!r}")
        entries.append((nodeid, reason))
    return entries


def skip_reason(report):
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


class ExpectedSkips:
    def __init__(self, path):
        self.path = path
        self.entries = parse(path)
        self.skips = []  # (node id, reason, matching entry or None)
        self.unexpected = []

    def record(self, report):
        if not report.skipped or hasattr(report, "wasxfail"):
            return
        entry = next((e for e in self.entries if report.nodeid == e[0] or report.nodeid.startswith(e[0])), None)
        self.skips.append((report.nodeid, skip_reason(report), entry))

    def pytest_runtest_logreport(self, report):
        self.record(report)

    def pytest_collectreport(self, report):
        self.record(report)

    def pytest_sessionfinish(self, session):
        self.unexpected = [s for s in self.skips if s[2] is None]
        if self.unexpected and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter):
        expected = [s for s in self.skips if s[2] is not None]
        if expected:
            terminalreporter.section(f"expected skips ({self.path})", sep="-")
            for nodeid, reason, entry in expected:
                terminalreporter.line(f"{nodeid}: {reason}  [listed: {entry[1]}]")
        if self.unexpected:
            terminalreporter.section(f"UNEXPECTED SKIPS: not in {self.path}", sep="=", red=True, bold=True)
            for nodeid, reason, _ in self.unexpected:
                terminalreporter.line(f"SKIPPED {nodeid}: {reason}", red=True)
            terminalreporter.line(
                f"{len(self.unexpected)} unexpected skip(s) fail this run: make the test run here, or add"
                f" '<node id> | <why it cannot run here>' to {self.path}",
                red=True,
            )


def pytest_configure(config):
    path = config.getoption("--expected-skips")
    if path:
        config.pluginmanager.register(ExpectedSkips(path), "expected-skips")
