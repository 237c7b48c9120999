"""Stuck-video recovery (the guide's 3-minute job): no progress, not merely long, means stuck."""

from __future__ import annotations

import time

from .jobs import JobStore
from .reaper import Resolution


def recover(
    store: JobStore,
    stuck_after_sec: float,
    now: float | None = None,
) -> list[Resolution]:
    """Fail each processing video whose last heartbeat is older than ``stuck_after_sec``.

    The monitor writes ``heartbeat_at`` only while frames advance, so a slow healthy render keeps
    it fresh and is never touched; the CAS on the token leaves a video that moved meanwhile alone.
    """
    now = time.time() if now is None else now
    changed = []
    for job_id in store.ids_in("processing"):
        record = store.get(job_id)
        if record is None or record.state != "processing":
            continue
        last = record.heartbeat_at or record.started_at or record.queued_at
        idle = now - last
        if idle <= stuck_after_sec:
            continue
        reason = (
            f"stuck: no progress for {idle:.0f} s (limit {stuck_after_sec:g} s) on "
            f"{record.host or '?'} pid {record.pid}; marked failed for manual retry: "
            f"`celery-stable retry {job_id}`"
        )
        if store.fail(job_id, record.token, reason, now=now).ok:
            changed.append(Resolution(job_id, "failed", reason))
    return changed
