"""The video renderer's own settings: the only reader of its part of the environment.

Three variables, in the environment file every unit and the CLI read (the role writes them from
``celery_stable_app_env``). The broker and the result backend are not among them: Celery reads
``CELERY_BROKER_URL`` and ``CELERY_RESULT_BACKEND`` itself, and the runtime's limits are the
runtime's (``celery_stable.settings``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from celery_stable.settings import DEFAULT_ENV_FILE, ConfigError

DEFAULT_OUTPUT_DIR = "/var/lib/celery-stable/videos"
DEFAULT_FFMPEG = "ffmpeg"


class _Invalid(ValueError):
    """A parser's complaint: what was expected (the caller names the variable and the fix)."""


def _abs_dir(raw: str) -> Path:
    path = raw.strip()
    if not path.startswith("/"):
        raise _Invalid(f"expected an absolute path such as {DEFAULT_OUTPUT_DIR}")
    return Path(path)


def _command(raw: str) -> str:
    if not raw.strip():
        raise _Invalid("it is empty; expected ffmpeg (found on PATH) or an absolute path to it")
    return raw.strip()


def _flag(raw: str) -> bool:
    if raw.strip() in ("", "0"):
        return False
    if raw.strip() == "1":
        return True
    raise _Invalid("expected 1 (on) or 0 / empty (off)")


# env name -> (attribute, default as the environment file spells it, parser)
_VARIABLES: dict[str, tuple[str, str, Callable[[str], object]]] = {
    "VIDEO_RENDERER_OUTPUT_DIR": ("output_dir", DEFAULT_OUTPUT_DIR, _abs_dir),
    "VIDEO_RENDERER_FFMPEG": ("ffmpeg", DEFAULT_FFMPEG, _command),
    # Test-only: lets a spec carry a "fault" (a real SIGSEGV, a hang...) for the fault matrix.
    "VIDEO_RENDERER_FAULT_HOOKS": ("fault_hooks", "0", _flag),
}


@dataclass(frozen=True)
class VideoSettings:
    output_dir: Path
    ffmpeg: str
    fault_hooks: bool

    @classmethod
    def from_env(cls, env: Mapping[str, str], source: str | None = None) -> VideoSettings:
        """Every variable parsed; all complaints at once in one ``ConfigError``, one a line."""
        where = source or f"{DEFAULT_ENV_FILE} (role variable celery_stable_app_env)"
        values: dict[str, object] = {}
        problems: list[str] = []
        for name, (attr, default, parse) in _VARIABLES.items():
            raw = env.get(name)
            try:
                values[attr] = parse(default if raw is None else raw)
            except _Invalid as why:
                problems.append(
                    f"{name} = {raw!r} is not valid: {why}. Fix it in {where}, or unset it to "
                    f"get the default {default!r}."
                )
        if problems:
            raise ConfigError("\n".join(problems))
        return cls(**values)  # type: ignore[arg-type]

    @staticmethod
    def defaults() -> dict[str, str]:
        return {name: default for name, (_attr, default, _parse) in _VARIABLES.items()}


@functools.cache
def current() -> VideoSettings:
    """This process's settings, read once (the worker's environment does not change)."""
    return VideoSettings.from_env(os.environ)
