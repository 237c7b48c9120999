"""celery-stable: a runtime that enforces the field guide's limits on any Celery app under solo.

An app needs no change: ``celery -A celery_stable.attach worker`` with
``CELERY_STABLE_APP_MODULE`` naming it (the role's units run the same worker as
``celery-stable worker``). An app may also opt in
with one line, ``celery_stable.protect(app)``, and, while a task runs, report its progress
(shown in systemd's STATUS, and the heartbeat then means progress), or read its hard limit and
the time it has left before it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery

    from .runtime import Runtime

__all__ = ["progress", "protect", "remaining", "time_limit"]


def protect(app: Celery, settings: Any = None) -> Runtime:
    """Protect every task of ``app`` (idempotent); see :func:`celery_stable.runtime.protect`."""
    from .runtime import protect as _protect  # noqa: PLC0415 (Celery only where it is used)

    return _protect(app, settings)


def _current_task() -> Any:
    from .runtime import current  # noqa: PLC0415

    runtime = current()
    return runtime.tracker.current if runtime is not None else None


def progress(done: int, total: int, unit: str = "") -> None:
    """The running task has done ``done`` of ``total`` (``unit``: "frame"...); no-op elsewhere."""
    task = _current_task()
    if task is not None:
        task.done, task.total, task.unit = done, total, unit


def remaining() -> float | None:
    """Seconds the running task has left before its hard limit; None outside a protected task."""
    task = _current_task()
    return None if task is None else task.deadline - time.monotonic()


def time_limit() -> float | None:
    """The running task's hard limit in seconds; None outside a protected task."""
    task = _current_task()
    return None if task is None else task.time_limit_sec
