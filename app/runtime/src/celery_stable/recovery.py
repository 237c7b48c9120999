"""Recovery (the guide's 3-minute job): stuck tasks are given up, and nothing is left half done.

- A *running* task of a host that gave no sign of life for a while is put back, as a crash
  (``peers``); this host's workers do the same every heartbeat.
- A *running* task whose heartbeat is older than ``stuck_after`` is given up as stuck, for a
  manual retry (the guide's "marked failed"). The worker writes the heartbeat while the task is
  within its limit, and, for a task that reports progress, only while it progresses.
- A given-up task the app was not told about yet (its process could not import the app, or the
  broker was down) is told now.
- A task the runtime put back on its queue whose message the broker no longer holds (a Redis
  that lost its data) is sent again from the ledger's copy.

Every age is measured on the Redis server's clock, the one the heartbeats were written with.
"""

from __future__ import annotations

from . import peers
from .broker import holds, restore
from .reaper import Resolution
from .resolution import RESENDABLE, Context, give_up, notify, retry_hint

# A give-up is told to the app at once; recovery retries only those older than this.
NOTIFY_GRACE_SEC = 10.0


def recover(ctx: Context, stuck_after_sec: float, *, my_host: str = "") -> list[Resolution]:
    now = ctx.ledger.now()
    # First the tasks of lost hosts (put back as crashes), then what is stuck on live ones.
    changes = peers.reap_lost_hosts(ctx, my_host=my_host)
    changes += _give_up_stuck(ctx, stuck_after_sec, now)
    changes += _notify_pending(ctx, now)
    changes += _resend_lost(ctx, stuck_after_sec, now)
    return changes


def _give_up_stuck(ctx: Context, stuck_after_sec: float, now: float) -> list[Resolution]:
    changes = []
    for task_id in ctx.ledger.ids_in("running"):
        record = ctx.ledger.get(task_id)
        if record is None or record.state != "running":
            continue
        idle = now - (record.heartbeat_at or record.started_at or now)
        if idle <= stuck_after_sec:
            continue
        reason = (
            f"stuck: no heartbeat for {idle:.0f} s (limit {stuck_after_sec:g} s) on "
            f"{record.host or '?'} pid {record.pid}; {retry_hint(task_id)}"
        )
        if give_up(ctx, record, "stuck", reason):
            changes.append(Resolution(task_id, record.name, "failed", reason))
    return changes


def _notify_pending(ctx: Context, now: float) -> list[Resolution]:
    changes = []
    for task_id in sorted(ctx.ledger.client.smembers(ctx.unnotified_key())):
        record = ctx.ledger.get(task_id)
        if record is not None and now - (record.finished_at or now) < NOTIFY_GRACE_SEC:
            continue
        if notify(ctx, task_id) and record is not None and not record.notified:
            changes.append(Resolution(task_id, record.name, "notified", "the app was told"))
    return changes


def _resend_lost(ctx: Context, stuck_after_sec: float, now: float) -> list[Resolution]:
    changes = []
    for task_id in ctx.ledger.ids_in("queued"):
        record = ctx.ledger.get(task_id)
        if (
            record is None
            or record.state != "queued"
            or record.cause not in RESENDABLE
            or not record.tags
            or now - (record.changed_at or now) <= stuck_after_sec
        ):
            continue
        with ctx.connection() as connection:
            if holds(connection, record.tags[-1], record.payload):
                continue
            restore(connection, record.tags[-1], record.payload)
        changes.append(
            Resolution(task_id, record.name, "resent", "its message was missing from the broker")
        )
    return changes
