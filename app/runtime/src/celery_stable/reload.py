"""``systemctl reload celery-worker`` (SIGHUP): the running task finishes, then a fresh image on
the new code and the new environment file, same PID, no restart spent.

A re-exec keeps the process's environment, which systemd built from the old environment file;
the new image must get the new one. And a reload must never leave a host without a worker: the
new code and file are checked in a subprocess first, and a reload that would not start is
refused (the worker goes on with what it runs, and says why in the journal and STATUS).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from .settings import ConfigError, load_env_file

CHECK_TIMEOUT_SEC = 120


def file_keys(environ: Mapping[str, str], env_file: str) -> set[str]:
    """The variables of the process that came from the environment file (same name, same value)."""
    if not env_file:
        return set()
    try:
        from_file = load_env_file(Path(env_file))
    except ConfigError:
        return set()
    return {key for key, value in from_file.items() if environ.get(key) == value}


def fresh_environment(
    environ: Mapping[str, str], env_file: str, from_file: set[str]
) -> dict[str, str]:
    """The process's environment with the file's variables as the file says now."""
    env = dict(environ)
    if not env_file:
        return env
    new = load_env_file(Path(env_file))
    for key in from_file - set(new):
        env.pop(key, None)
    env.update(new)
    return env


def check_new_image(env: Mapping[str, str]) -> str | None:
    """Why a fresh image on ``env`` would not start (its settings, its app), else None."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "celery_stable", "check-app"],
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT_SEC,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"the check could not run: {exc}"
    if proc.returncode == 0:
        return None
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return lines[-1] if lines else f"the check exited {proc.returncode}"


def environment_for_reexec(
    environ: Mapping[str, str], env_file: str, from_file: set[str]
) -> dict[str, str]:
    """What the next image runs with: the fresh file where it can be read, else as now."""
    try:
        return fresh_environment(environ, env_file, from_file)
    except ConfigError:
        return dict(os.environ)
