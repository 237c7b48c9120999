"""Resolving the videos a dead worker held: requeue, or fail with the reason it died.

Without this a crashed video waits for Redis's visibility timeout (time limit + 300 s) and then
crashes the next worker too. ``celery-stable reap`` runs it from ``ExecStopPost=`` with systemd's
``$SERVICE_RESULT``/``$EXIT_CODE``/``$EXIT_STATUS``; the worker runs it again at start-up, before
consuming, for deaths nothing reported (no systemd, or the hook could not reach Redis).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from .jobs import JobRecord, JobStore, Owner
from .settings import Settings, SystemdEnv

log = logging.getLogger(__name__)

Enqueue = Callable[[str, str], None]


@dataclass(frozen=True)
class DeathCause:
    kind: str  # watchdog, oom, crash
    detail: str

    @classmethod
    def from_systemd(cls, env: SystemdEnv) -> DeathCause:
        result, code, status = env.service_result, env.exit_code, env.exit_status
        if result == "watchdog":
            return cls("watchdog", "systemd watchdog")
        if result == "oom-kill":
            return cls("oom", "out-of-memory killer")
        if code in ("killed", "dumped") and status:
            return cls("crash", f"signal {status}")
        if code == "exited" and status:
            return cls("crash", f"exit code {status}")
        if result:
            return cls("crash", f"service result {result}")
        return cls("crash", "worker died; cause unknown, found at start-up")


@dataclass(frozen=True)
class Resolution:
    job_id: str
    action: str  # requeued, failed
    reason: str

    def __str__(self) -> str:
        return f"{self.job_id}: {self.action} ({self.reason})"


def retry_hint(job_id: str) -> str:
    return f"not retried — fix the input, then `celery-stable retry {job_id}`"


def owner_gone(owner: Owner, *, self_is_gone: bool = False) -> bool:
    """True when the process that began an attempt no longer exists.

    A reused PID has another start time. ``self_is_gone`` is for the worker's own start-up:
    no task runs in this process yet, so an attempt recorded under its own PID (a PID reused
    after a crash, or an image replaced by re-exec) has no live owner.
    """
    if owner.pid == os.getpid():
        return self_is_gone
    try:
        process = psutil.Process(owner.pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return True
        return abs(process.create_time() - owner.pid_started_at) > 0.5
    except psutil.NoSuchProcess:
        return True


def resolve(
    store: JobStore,
    record: JobRecord,
    cause: DeathCause,
    settings: Settings,
    enqueue: Enqueue,
    *,
    now: float | None = None,
) -> Resolution | None:
    """Move one *processing* record whose owner died; None if it changed meanwhile."""
    now = time.time() if now is None else now
    limit = settings.time_limit_sec
    elapsed = now - (record.started_at or now)
    crashes = record.crashes
    if elapsed >= limit:
        reason = (
            f"hung past the hard time limit of {limit} s / watchdog "
            f"(killed by {cause.detail}); {retry_hint(record.id)}"
        )
    elif cause.kind == "watchdog":
        # Killed before the hard limit: the worker stopped pinging, which a healthy monitor
        # thread only does when the main thread holds the GIL (a native call that hangs).
        reason = (
            f"stopped answering the watchdog {elapsed:.0f} s into the render (stuck in "
            f"native code holding the GIL?), killed by the {cause.detail} before the hard "
            f"limit of {limit} s; {retry_hint(record.id)}"
        )
    elif cause.kind == "oom":
        reason = f"killed by the {cause.detail} (memory limit of the unit); {retry_hint(record.id)}"
    else:
        crashes += 1
        if crashes < settings.max_crashes:
            outcome, token = store.requeue(
                record.id,
                record.token,
                error=f"worker died ({cause.detail}); requeued",
                extra={"crashes": crashes},
            )
            if not outcome.ok:
                return None
            try:
                enqueue(record.id, token)
            except Exception as exc:
                # Queued without a message would be lost silently: make it visible instead.
                store.fail(
                    record.id,
                    token,
                    f"could not be requeued after a crash ({exc}); "
                    f"run `celery-stable retry {record.id}`",
                    states=("queued",),
                )
                raise
            return Resolution(
                record.id, "requeued", f"crash {crashes}/{settings.max_crashes}: {cause.detail}"
            )
        reason = (
            f"killed the worker {crashes} times (last: {cause.detail}); {retry_hint(record.id)}"
        )
    outcome = store.fail(record.id, record.token, reason, now=now, extra={"crashes": crashes})
    return Resolution(record.id, "failed", reason) if outcome.ok else None


def reap(
    store: JobStore,
    settings: Settings,
    cause: DeathCause,
    enqueue: Enqueue,
    *,
    host: str,
    at_startup: bool = False,
) -> list[Resolution]:
    """Resolve every processing video of ``host`` whose owner process is gone."""
    resolutions = []
    for job_id in store.ids_in("processing"):
        record = store.get(job_id)
        owner = record.owner if record else None
        if record is None or record.state != "processing" or owner is None or owner.host != host:
            continue
        if not owner_gone(owner, self_is_gone=at_startup):
            continue
        resolution = resolve(store, record, cause, settings, enqueue)
        if resolution:
            log.warning("reaped video %s", resolution)
            resolutions.append(resolution)
    return resolutions
