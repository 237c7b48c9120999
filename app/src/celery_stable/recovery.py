"""Recovery (the guide's 3-minute job): stuck videos fail, lost messages are sent again.

Stuck means no progress, not merely long: the monitor writes ``heartbeat_at`` only while frames
advance, so a slow healthy render keeps it fresh and is never touched.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from .jobs import JobStore
from .reaper import Resolution

Enqueue = Callable[[str, str], None]

# kombu's Redis transport: a queue's messages sit in lists named after it (one per priority
# step), and a delivered, unacked message in this hash until it is acked or restored.
PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")
UNACKED_KEY = "unacked"


def recover(
    store: JobStore,
    stuck_after_sec: float,
    now: float | None = None,
    *,
    enqueue: Enqueue | None = None,
    queue: str | None = None,
) -> list[Resolution]:
    """Fail stuck processing videos; resend queued videos whose message is gone.

    With ``enqueue`` and ``queue``, a video queued for more than ``stuck_after_sec`` whose token
    appears in no message of the broker (queue lists, unacked hash) is sent again under the same
    token: nothing else would ever run it. Its record is not touched, so if the old message was
    only late after all, the compare-and-set lets exactly one of the two run.
    """
    now = time.time() if now is None else now
    changed = _fail_stuck(store, stuck_after_sec, now)
    if enqueue is not None and queue is not None:
        changed += _resend_lost(store, stuck_after_sec, now, enqueue, queue)
    return changed


def _fail_stuck(store: JobStore, stuck_after_sec: float, now: float) -> list[Resolution]:
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


def _resend_lost(
    store: JobStore, stuck_after_sec: float, now: float, enqueue: Enqueue, queue: str
) -> list[Resolution]:
    waiting = []
    for job_id in store.ids_in("queued"):
        record = store.get(job_id)
        if (
            record is not None
            and record.state == "queued"
            and now - (record.queued_at or record.created_at) > stuck_after_sec
        ):
            waiting.append(record)
    if not waiting:
        return []
    messages = _broker_messages(store.client, queue)
    changed = []
    for record in waiting:
        if any(record.token in message for message in messages):
            continue
        enqueue(record.id, record.token)
        changed.append(
            Resolution(record.id, "resent", "its message was missing from the broker; sent again")
        )
    return changed


def _broker_messages(client: redis.Redis, queue: str) -> list[str]:
    """Every message body the broker holds for ``queue``, as text (tokens appear in argsrepr)."""
    raw: list[bytes | str] = []
    for suffix in PRIORITY_SUFFIXES:
        raw.extend(client.lrange(queue + suffix, 0, -1))
    raw.extend(client.hvals(UNACKED_KEY))
    return [item.decode() if isinstance(item, bytes) else item for item in raw]
