"""Job records against a real Redis: compare-and-set transitions, tokens, indexes."""

from __future__ import annotations

import os
import socket

import psutil
from helpers import video_spec

from celery_stable.jobs import JobStore, Owner


def me() -> Owner:
    return Owner(socket.gethostname(), os.getpid(), psutil.Process().create_time())


def test_record_has_the_contract_fields(store: JobStore) -> None:
    record = store.create(video_spec())
    raw = store.client.hgetall(f"celery-stable:job:{record.id}")
    assert set(raw) >= {
        "id",
        "spec",
        "state",
        "attempts",
        "crashes",
        "token",
        "created_at",
        "queued_at",
        "error",
        "output",
    }
    assert store.begin(record.id, record.token, me()).ok
    began = store.get(record.id)
    assert began is not None
    record = began
    assert set(record.to_dict()) == {
        "id",
        "spec",
        "state",
        "attempts",
        "crashes",
        "token",
        "created_at",
        "queued_at",
        "started_at",
        "heartbeat_at",
        "finished_at",
        "error",
        "output",
        "host",
        "pid",
        "pid_started_at",
    }
    assert (record.state, record.attempts, record.pid) == ("processing", 1, os.getpid())
    assert record.owner == me()


def test_transitions_are_compare_and_set_on_state_and_token(store: JobStore) -> None:
    record = store.create(video_spec())
    assert store.begin(record.id, "not-the-token", me()).status == "stale"
    assert store.begin(record.id, record.token, me()).ok
    # A second delivery of the same message cannot begin it twice.
    assert store.begin(record.id, record.token, me()).status == "state"
    assert store.finish(record.id, record.token, "/x.mp4").ok
    assert store.fail(record.id, record.token, "late").status == "state"
    assert store.get(record.id).state == "done"  # type: ignore[union-attr]
    assert store.begin("nope", "t", me()).status == "missing"


def test_requeue_issues_a_new_token_and_counts_stay_consistent(store: JobStore) -> None:
    first = store.create(video_spec())
    second = store.create(video_spec())
    store.begin(first.id, first.token, me())
    outcome, token = store.requeue(first.id, first.token, extra={"crashes": 1})
    assert outcome.ok
    assert token != first.token
    assert store.begin(first.id, first.token, me()).status == "stale"
    assert store.counts() == {"queued": 2, "processing": 0, "done": 0, "failed": 0}
    store.begin(second.id, second.token, me())
    store.fail(second.id, second.token, "bad")
    assert store.counts() == {"queued": 1, "processing": 0, "done": 0, "failed": 1}
    assert [r.id for r in store.recent()] == [second.id, first.id]
    assert [r.id for r in store.recent(state="failed")] == [second.id]
    assert store.delete(second.id)
    assert store.counts()["failed"] == 0
