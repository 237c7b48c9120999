"""The skip rule of scripts/test.sh: a skip not on tests/expected-skips.txt fails the run."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

SAMPLE = """
import pytest

def test_runs():
    pass

@pytest.mark.skip(reason="listed by its node id")
def test_listed():
    pass

@pytest.mark.skip(reason="listed by a prefix")
def test_prefix_one():
    pass

@pytest.mark.skip(reason="nobody listed this")
def test_not_listed():
    pass

@pytest.mark.xfail(reason="an xfail is not a skip")
def test_xfail():
    assert False
"""


def pytest_run(tmp_path, expected, extra=()):
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    (tmp_path / "expected.txt").write_text(expected)
    pytest = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "--rootdir", str(tmp_path)]
    plugin = ["-p", "pytest_expected_skips", "--expected-skips", str(tmp_path / "expected.txt")]
    return subprocess.run(
        [*pytest, *plugin, *extra, str(tmp_path)],
        env={"PYTHONPATH": str(HERE), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )


def test_an_unlisted_skip_fails_the_run_and_is_named(tmp_path):
    r = pytest_run(tmp_path, "# header\ntest_sample.py::test_listed | why\ntest_sample.py::test_prefix | why too\n")
    assert r.returncode == 1, r.stdout
    assert "UNEXPECTED SKIPS" in r.stdout
    assert "SKIPPED test_sample.py::test_not_listed: nobody listed this" in r.stdout
    unexpected = r.stdout.split("UNEXPECTED SKIPS", 1)[1]
    assert "test_listed" not in unexpected and "test_prefix_one" not in unexpected
    assert "test_xfail" not in unexpected
    assert "test_sample.py::test_listed: listed by its node id  [listed: why]" in r.stdout


def test_listed_skips_keep_the_run_green(tmp_path):
    r = pytest_run(
        tmp_path,
        "test_sample.py::test_listed | a\ntest_sample.py::test_prefix | b\ntest_sample.py::test_not_listed | c\n",
    )
    assert r.returncode == 0, r.stdout
    assert "UNEXPECTED" not in r.stdout


def test_a_failed_run_stays_failed(tmp_path):
    r = pytest_run(tmp_path, "test_sample.py | all of them\n", extra=["--runxfail"])
    assert r.returncode == 1, r.stdout
    assert "UNEXPECTED" not in r.stdout


def test_a_module_skipped_whole_is_judged_too(tmp_path):
    (tmp_path / "test_module_skip.py").write_text('import pytest\npytest.skip("no", allow_module_level=True)\n')
    r = pytest_run(tmp_path, "test_sample.py | all of them\n")
    assert r.returncode == 1, r.stdout
    assert "SKIPPED test_module_skip.py: no" in r.stdout


def test_an_entry_without_a_reason_is_refused(tmp_path):
    r = pytest_run(tmp_path, "test_sample.py::test_listed\n")
    assert r.returncode == 4, r.stdout + r.stderr
    assert "want '<node id or prefix> | <reason>'" in r.stderr


def test_the_repository_list_parses():
    from pytest_expected_skips import parse

    entries = parse(HERE.parent / "expected-skips.txt")
    assert all(reason for _, reason in entries)
