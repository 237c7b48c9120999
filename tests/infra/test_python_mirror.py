"""The offline CPython mirror script: built where a local CPython exists, skipped elsewhere.

README's two commands call it (through molecule-deps.sh, under `set -e`) on any machine; on a
fresh host with internet and no pyenv it must step aside so that uv downloads CPython itself.
"""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "infra" / "python-mirror.sh"
PYENV_312 = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions" / "3.12.1"


def run(env_overrides, *args, drop=("PYTHON_MIRROR_SRC",)):
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_overrides)
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=600, check=False
    )


def test_no_local_cpython_means_uv_downloads_it(tmp_path):
    """No pyenv (the default source absent), nothing named: exit 0, no mirror, say why."""
    out = tmp_path / "mirror"
    r = run({"PYENV_ROOT": str(tmp_path / "no-pyenv"), "PYTHON_MIRROR_DIR": str(out)})
    assert r.returncode == 0, r.stderr
    assert "no local CPython at" in r.stderr
    assert "uv will download CPython on the hosts itself" in r.stderr
    assert not (out / "downloads.json").exists()
    # No role variable printed: there is nothing to point it at.
    assert "downloads_json_url=" not in r.stdout


def test_empty_source_builds_nothing(tmp_path):
    out = tmp_path / "mirror"
    r = run({"PYTHON_MIRROR_SRC": "", "PYTHON_MIRROR_DIR": str(out)})
    assert r.returncode == 0, r.stderr
    assert "PYTHON_MIRROR_SRC is empty" in r.stderr
    assert not (out / "downloads.json").exists()


def test_named_source_that_is_not_there_is_an_error(tmp_path):
    """A typo in PYTHON_MIRROR_SRC must not turn into downloads from the internet."""
    out = tmp_path / "mirror"
    r = run({"PYTHON_MIRROR_SRC": str(tmp_path / "nonexistent"), "PYTHON_MIRROR_DIR": str(out)})
    assert r.returncode == 1
    assert "is not a CPython install prefix" in r.stderr
    assert not (out / "downloads.json").exists()


def test_a_mirror_built_before_is_kept(tmp_path):
    out = tmp_path / "mirror"
    out.mkdir()
    (out / "downloads.json").write_text("{}\n")
    r = run({"PYENV_ROOT": str(tmp_path / "no-pyenv"), "PYTHON_MIRROR_DIR": str(out)})
    assert r.returncode == 0, r.stderr
    assert "keeping the mirror built before" in r.stderr
    assert (out / "downloads.json").read_text() == "{}\n"


@pytest.mark.skipif(not (PYENV_312 / "bin" / "python3.12").exists(), reason="no pyenv CPython 3.12.1 here")
def test_local_cpython_gives_a_downloads_list():
    """The normal path, as molecule-deps.sh runs it: into the repository's cache, so that a cold
    build here (about 7 s) is the one the Molecule scenarios then reuse (cached: about 1 s)."""
    start = time.monotonic()
    r = run({})
    assert r.returncode == 0, r.stderr
    out = ROOT / ".cache" / "python-mirror"
    downloads = json.loads((out / "downloads.json").read_text())
    entry = downloads["cpython-3.12.1-linux-x86_64-gnu"]
    assert (entry["major"], entry["minor"], entry["patch"]) == (3, 12, 1)
    archive = out / entry["build"] / entry["url"].rsplit("/", 1)[1].replace("%2B", "+")
    sha = subprocess.run(["sha256sum", str(archive)], capture_output=True, text=True, check=True).stdout.split()[0]
    assert sha == entry["sha256"]
    assert "celery_stable_uv_python_downloads_json_url=file:///srv/celery-stable-mirror/downloads.json" in r.stdout
    print(f"python-mirror.sh: {time.monotonic() - start:.1f} s ({r.stderr.strip().splitlines()[0]})")
