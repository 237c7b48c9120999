"""The interpreter the benchmark's workers run: a venv built as the role builds the host's.

The development venv is the wrong one to time a worker's start in: it holds the test and lint
tools, and what they pull in changes what the worker imports (with pygments present, Celery's
``celery.bin.base`` compiles a Python lexer at import: some 50 ms of every start and every
recycle, which no deployed host pays). So the workers get what ``tasks/install.yml`` gives
them: ``uv venv`` on this Python, the runtime's and the app's pinned requirements with their
hashes checked, the two packages as wheels without dependencies, then every module compiled
(the role's ``compileall`` step: its workers cannot write ``__pycache__``).

Built once into ``.cache/bench-venv/<key>``, where the key covers the requirements, the two
packages' sources and this Python: a change to any of them builds a new one (a few seconds
from uv's cache).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).resolve().parent.parent
REPO = APP.parent
# What the role installs for the demo app: the runtime and the app, each with its pins.
PACKAGES = (APP / "runtime", APP / "video")
REQUIREMENTS = tuple(package / "requirements.txt" for package in PACKAGES)


def _key(python: Path) -> str:
    digest = hashlib.sha256(f"{python} {sys.version}".encode())
    for package in PACKAGES:
        sources = [package / "pyproject.toml", package / "requirements.txt"]
        sources += sorted(path for path in (package / "src").rglob("*.py"))
        for path in sources:
            digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _uv() -> str:
    found = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    if not Path(found).exists():
        raise SystemExit("the benchmark builds its workers' venv with uv: run scripts/bootstrap.sh")
    return found


def role_venv(cache: Path = REPO / ".cache" / "bench-venv") -> Path:
    """The Python of a role-built venv for the demo app, built when absent; returns its path."""
    base = Path(sys.executable).resolve()
    venv = cache / _key(base)
    python = venv / "bin" / "python"
    # Written last: a build interrupted half-way is never taken for a finished one.
    complete = venv / "built"
    if complete.exists():
        return python
    shutil.rmtree(venv, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    uv = _uv()
    requirements = [arg for path in REQUIREMENTS for arg in ("--requirement", str(path))]
    steps = [
        [uv, "venv", "--quiet", "--python", str(base), str(venv)],
        [uv, "pip", "install", "--quiet", "--python", str(python), "--require-hashes",
         *requirements],
        [uv, "pip", "install", "--quiet", "--python", str(python), "--no-deps",
         *map(str, PACKAGES)],
        [str(python), "-m", "compileall", "-q", "-j", "0", str(venv / "lib")],
    ]  # fmt: skip
    print(f"building the workers' venv, as the role does: {venv}", file=sys.stderr)
    for step in steps:
        subprocess.run(step, check=True)
    complete.touch()
    return python
