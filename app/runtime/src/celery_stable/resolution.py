"""What the runtime does with a task whose attempt ended abnormally: put it back, or give it up.

Giving up tells the app, in Celery's own terms and in its own process model:

- its result backend, when it has one, records FAILURE with Celery's own exception for the
  cause (``WorkerLostError`` for a crash, ``TimeLimitExceeded`` for the hard limit), and its
  ``link_error`` errbacks run, as Celery does for a prefork child that died;
- the task named by ``CELERY_STABLE_GIVEUP_TASK`` (``celery_stable_giveup_task``), when set, is
  sent with the given-up task's ``task_name, task_id, args, kwargs, cause, reason``: a plain
  task of the app, so the app imports nothing of the runtime.

The ledger says ``notified=0`` until both are done; recovery tries again until they are.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery import Celery
from celery.app.task import Context as TaskContext
from celery.backends.base import DisabledBackend
from celery.exceptions import TimeLimitExceeded, WorkerLostError
from kombu import Connection
from kombu.serialization import loads, prepare_accept_content

from . import broker
from .ledger import NOW, Ledger, TaskRecord
from .settings import Settings

log = logging.getLogger(__name__)

UNNOTIFIED = "unnotified"
# Causes of a queued record whose message the runtime put back (recovery sends it again if the
# broker lost it); a Celery retry's message is Celery's, with a tag the ledger never saw.
CRASH, OPERATOR = "crash", "operator"
RESENDABLE = (CRASH, OPERATOR)


@dataclass
class Context:
    """What every resolution needs: the ledger, the settings, the app, a broker connection."""

    ledger: Ledger
    settings: Settings
    # The operator's app; None when it could not be imported (the ledger still moves, the app
    # is told later by recovery, from a process that can import it).
    app: Celery | None
    connection: Callable[[], Connection]

    def unnotified_key(self) -> str:
        return self.ledger.prefix + UNNOTIFIED


def retry_hint(task_id: str) -> str:
    return f"not retried automatically; `celery-stable retry {task_id}` sends it again"


def requeue(ctx: Context, record: TaskRecord, crashes: int, detail: str) -> bool:
    """Back on its queue, first in line, as the same message: the next attempt of a crash."""
    outcome = ctx.ledger.move(
        record.id,
        states=["running"],
        attempt=record.attempts,
        set_fields={
            "state": "queued",
            "crashes": crashes,
            "cause": CRASH,
            "reason": f"worker died ({detail}); requeued, crash {crashes}/"
            f"{ctx.settings.max_crashes}",
        },
    )
    if not outcome.ok:
        return False
    # A failure here leaves the record queued with its message copy: recovery sends it.
    with ctx.connection() as connection:
        broker.restore(connection, record.tags[-1], record.payload)
    return True


def give_up(ctx: Context, record: TaskRecord, cause: str, reason: str, **extra: object) -> bool:
    """Fail the task for good: the ledger first, then its broker copies, then the app."""
    outcome = ctx.ledger.move(
        record.id,
        states=[record.state],
        attempt=record.attempts,
        set_fields={
            "state": "failed",
            "cause": cause,
            "reason": reason,
            "finished_at": NOW,
            "notified": 0,
            **extra,
        },
    )
    if not outcome.ok:
        return False
    ctx.ledger.client.sadd(ctx.unnotified_key(), record.id)
    log.error("gave up task %s[%s] (%s): %s", record.name, record.id, cause, reason)
    try:
        with ctx.connection() as connection:
            for tag in record.tags:
                broker.discard(connection, tag)
    except Exception:
        # A copy left unacked comes back after the visibility timeout, as a known delivery of
        # a failed task: the worker acks and ignores it.
        log.exception("could not discard the broker copies of %s", record.id)
    notify(ctx, record.id)
    return True


def decode_call(
    record: TaskRecord, accept: Any = None
) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    """(args, kwargs, request context) of the attempt's message, as Celery's Request reads them."""
    raw, _exchange, _routing_key = json.loads(record.payload)
    properties = raw.get("properties", {})
    body = raw.get("body", "")
    if properties.get("body_encoding") == "base64":
        body = base64.b64decode(body)
    decoded = loads(body, raw.get("content-type"), raw.get("content-encoding"), accept=accept)
    headers = dict(raw.get("headers") or {})
    if isinstance(decoded, dict):  # task protocol 1
        args, kwargs, embed = decoded.get("args", []), decoded.get("kwargs", {}), {}
        headers.update(decoded)
    else:
        args, kwargs, embed = decoded
    request = {**headers, "id": record.id, "task": record.name, "args": args, "kwargs": kwargs}
    request.update(embed or {})
    return list(args), dict(kwargs), request


def exception_for(cause: str, reason: str) -> Exception:
    """Celery's own exception for the cause, as a prefork worker would record it."""
    if cause == "time-limit":
        return TimeLimitExceeded(reason)
    return WorkerLostError(reason)


def notify(ctx: Context, task_id: str) -> bool:
    """Tell the app a task was given up; idempotent (the ledger remembers it was done)."""
    record = ctx.ledger.get(task_id)
    if record is None or record.notified:
        ctx.ledger.client.srem(ctx.unnotified_key(), task_id)
        return True
    app = ctx.app
    if app is None:
        log.warning(
            "task %s given up; the app could not be loaded to be told (retried later)", task_id
        )
        return False
    try:
        args, kwargs, request = decode_call(
            record, accept=prepare_accept_content(app.conf.accept_content)
        )
        backend = app.backend
        if not isinstance(backend, DisabledBackend):
            backend.mark_as_failure(
                record.id, exception_for(record.cause, record.reason), request=TaskContext(request)
            )
        hook = ctx.settings.giveup_task
        if hook and record.name != hook:
            app.send_task(
                hook,
                kwargs={
                    "task_name": record.name,
                    "task_id": record.id,
                    "args": args,
                    "kwargs": kwargs,
                    "cause": record.cause,
                    "reason": record.reason,
                },
                retry=True,
            )
    except Exception:
        log.exception("task %s given up; telling the app failed (retried by recovery)", task_id)
        return False
    ctx.ledger.move(task_id, states=["failed"], set_fields={"notified": 1})
    ctx.ledger.client.srem(ctx.unnotified_key(), task_id)
    return True


def send_again(ctx: Context, record: TaskRecord, *, reset_crashes: bool) -> bool:
    """A failed (or queued) task's message back on its queue: the operator's `retry`."""
    fields: dict[str, object] = {"state": "queued", "cause": OPERATOR, "reason": "sent again"}
    if reset_crashes:
        fields["crashes"] = 0
    outcome = ctx.ledger.move(
        record.id,
        states=[record.state],
        attempt=record.attempts,
        set_fields=fields,
    )
    if not outcome.ok:
        return False
    with ctx.connection() as connection:
        broker.restore(connection, record.tags[-1], record.payload)
    return True
