"""Resolving the tasks a dead worker held: requeue them, or give them up with the reason.

Without this a crashed task waits for Redis's visibility timeout (an hour by default) when the
app acks late, is lost when it acks early, and crashes the next worker too when it is poison.
``celery-stable reap`` runs it from ``ExecStopPost=`` with systemd's ``$SERVICE_RESULT``,
``$EXIT_CODE`` and ``$EXIT_STATUS``; the worker runs it again at start-up, before consuming, for
deaths nothing reported (no systemd, or the hook could not reach Redis).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import psutil

from .ledger import Owner, TaskRecord
from .resolution import Context, give_up, requeue, retry_hint
from .settings import SystemdEnv

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeathCause:
    kind: str  # watchdog, oom, crash
    detail: str

    @classmethod
    def from_systemd(cls, env: SystemdEnv) -> DeathCause:
        result, code, status = env.service_result, env.exit_code, env.exit_status
        if result == "watchdog":
            return cls("watchdog", "the systemd watchdog")
        if result == "oom-kill":
            return cls("oom", "the out-of-memory killer")
        if code in ("killed", "dumped") and status:
            return cls("crash", f"signal {status}")
        if code == "exited" and status:
            return cls("crash", f"exit code {status}")
        if result:
            return cls("crash", f"service result {result}")
        return cls("crash", "worker died; cause unknown, found at start-up")


@dataclass(frozen=True)
class Resolution:
    task_id: str
    name: str
    action: str  # requeued, failed, notified, resent
    reason: str

    def __str__(self) -> str:
        return f"{self.task_id} ({self.name}): {self.action} ({self.reason})"


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


def resolve(ctx: Context, record: TaskRecord, cause: DeathCause) -> Resolution | None:
    """Move one *running* record whose worker died; None if it changed meanwhile."""
    elapsed = ctx.ledger.now() - (record.started_at or 0.0)
    limit = record.time_limit
    if cause.kind == "watchdog" and elapsed < limit:
        # Killed before the hard limit: the worker stopped pinging, which a healthy monitor
        # thread only does when the task holds the GIL (a native call that hangs).
        kind, reason = (
            "watchdog",
            (
                f"stopped answering the systemd watchdog {elapsed:.0f} s into the task (stuck in "
                f"native code holding the GIL?), before its hard time limit of {limit:g} s; "
                f"{retry_hint(record.id)}"
            ),
        )
    elif elapsed >= limit:
        kind, reason = (
            "time-limit",
            (
                f"exceeded its hard time limit of {limit:g} s (killed by {cause.detail}); "
                f"{retry_hint(record.id)}"
            ),
        )
    elif cause.kind == "oom":
        kind, reason = (
            "oom",
            (f"killed by {cause.detail} (the unit's MemoryMax); {retry_hint(record.id)}"),
        )
    else:
        crashes = record.crashes + 1
        if crashes < ctx.settings.max_crashes:
            if not requeue(ctx, record, crashes, cause.detail):
                return None
            return Resolution(
                record.id,
                record.name,
                "requeued",
                f"crash {crashes}/{ctx.settings.max_crashes}: {cause.detail}",
            )
        kind, reason = (
            "crash",
            (f"crashed the worker {crashes} times (last: {cause.detail}); {retry_hint(record.id)}"),
        )
        return _failed(ctx, record, kind, reason, crashes=crashes)
    return _failed(ctx, record, kind, reason)


def _failed(
    ctx: Context, record: TaskRecord, kind: str, reason: str, **extra: object
) -> Resolution | None:
    if not give_up(ctx, record, kind, reason, **extra):
        return None
    return Resolution(record.id, record.name, "failed", reason)


def reap(
    ctx: Context, cause: DeathCause, *, host: str, instance: str = "", at_startup: bool = False
) -> list[Resolution]:
    """Resolve every running task of this worker (``host``, ``instance``) whose process is gone.

    A host may run several workers (celery-worker@1, @2...): each one's ExecStopPost knows why
    that one died, so a task of another instance is left to it, unless it has had its chance
    (no heartbeat for three intervals: its hook could not reach Redis, or the instance is gone).
    """
    resolutions = []
    patience = 3 * ctx.settings.heartbeat_interval_sec
    now = ctx.ledger.now()
    for task_id in ctx.ledger.ids_in("running"):
        record = ctx.ledger.get(task_id)
        owner = record.owner if record else None
        if record is None or record.state != "running" or owner is None or owner.host != host:
            continue
        if not owner_gone(owner, self_is_gone=at_startup and record.instance == instance):
            continue
        why = cause
        if record.instance != instance:
            if now - (record.heartbeat_at or record.started_at or now) < patience:
                continue
            why = DeathCause(
                "crash",
                f"worker {record.instance or '?'} died; cause unknown, found by {instance or '?'}",
            )
        resolution = resolve(ctx, record, why)
        if resolution:
            log.warning("reaped task %s", resolution)
            resolutions.append(resolution)
    return resolutions
