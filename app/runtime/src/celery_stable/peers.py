"""A host lost mid-task (a power cut, a kernel panic, a partition that never heals): its tasks
are put back by the workers of the other hosts, as crashes toward ``max_crashes``.

Nothing runs on a lost host any more, so no ExecStopPost and no start-up reap will ever resolve
what it held; without this, its task would wait for the recovery job's "stuck" rule and be
failed for a manual retry, although it crashed only once. A host is lost when its sign of life
(written every few seconds by its workers and by its celery-worker unit) is older than
``lost_after``: a worker that merely hangs leaves its host alive, and is systemd's to kill.
"""

from __future__ import annotations

import logging

from .reaper import DeathCause, Resolution, resolve
from .resolution import Context

log = logging.getLogger(__name__)

# A host is lost after this many heartbeat intervals without a sign of life (at least this
# many seconds): a beat or two lost to a busy Redis must not requeue a live host's task.
LOST_AFTER_BEATS = 3
LOST_AFTER_MIN_SEC = 6.0


def lost_after(heartbeat_interval_sec: float) -> float:
    return max(LOST_AFTER_MIN_SEC, LOST_AFTER_BEATS * heartbeat_interval_sec)


def reap_lost_hosts(ctx: Context, *, my_host: str = "") -> list[Resolution]:
    """Requeue (or fail, at ``max_crashes``) the running tasks of hosts gone silent."""
    threshold = lost_after(ctx.settings.heartbeat_interval_sec)
    silence: dict[str, float | None] = {}
    resolutions = []
    for task_id in ctx.ledger.ids_in("running"):
        record = ctx.ledger.get(task_id)
        if record is None or record.state != "running" or not record.host:
            continue
        if record.host == my_host:
            continue  # this host's own workers, ExecStopPost and start-up reap see to its tasks
        if record.host not in silence:
            silence[record.host] = ctx.ledger.host_silence(record.host)
        quiet = silence[record.host]
        if quiet is None or quiet < threshold:
            continue
        cause = DeathCause("crash", f"host {record.host} lost: no sign of life for {quiet:.0f} s")
        resolution = resolve(ctx, record, cause)
        if resolution:
            log.warning("task of a lost host: %s", resolution)
            resolutions.append(resolution)
    return resolutions
