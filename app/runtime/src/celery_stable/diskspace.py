"""When the disk is why a task failed: the app's write paths that are (nearly) full.

A full disk fails a task with whatever the app makes of it (``ffmpeg exited 1``, an OSError
deep in a library). The runtime knows the directories the app writes
(``CELERY_STABLE_APP_WRITE_PATHS``, the role's ``celery_stable_app_write_paths``); a task that
fails while one of them has almost no room left gets it named in its reason, so the operator
reads "disk full" where the app said only that something failed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

# Under this much free space (or 1 % of the filesystem, whichever is smaller), a write path
# counts as full: a render's output does not fit in less.
LOW_BYTES = 1024 * 1024


def _size(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024  # type: ignore[assignment]
    return f"{count} B"


def full_paths(paths: Iterable[str]) -> list[str]:
    """One phrase per write path that is full, e.g. ``/var/lib/x is full (12.0 KiB free of
    1.0 MiB)``; an unreadable path is left out (the task's own error says what happened)."""
    found = []
    for path in paths:
        try:
            stat = os.statvfs(path)
        except OSError:
            continue
        total, free = stat.f_blocks * stat.f_frsize, stat.f_bavail * stat.f_frsize
        if free < min(LOW_BYTES, max(total // 100, 1)) or free == 0:
            found.append(f"{path} is full ({_size(free)} free of {_size(total)})")
    return found
