"""Stuck means no progress, not long; a short Redis restart loses no result."""

from __future__ import annotations

import time

from conftest import Harness, RedisServer
from helpers import video_spec, wait_for, wait_state

from celery_stable.jobs import JobStore


def test_recovery_fails_a_stuck_video_but_not_a_slow_healthy_one(
    harness: Harness, store: JobStore
) -> None:
    worker = harness.ready_worker()
    slow = harness.submit(video_spec(4.0, {"kind": "slow", "seconds": 0.1}))
    wait_state(store, slow, ("processing",), 30)
    while store.get(slow).state == "processing":  # type: ignore[union-attr]
        result = harness.cli("recover", "--stuck-after", "2")
        assert result.returncode == 0, result.stderr
        assert "no stuck video" in result.stdout
        time.sleep(0.7)
    assert store.get(slow).state == "done"  # type: ignore[union-attr]

    stuck = harness.submit(
        video_spec(1.0, {"kind": "hang", "at_frame": 2, "seconds": 5, "on_attempts": 1})
    )
    wait_state(store, stuck, ("processing",), 30)
    time.sleep(3)
    result = harness.cli("recover", "--stuck-after", "2")
    assert result.returncode == 0, result.stderr
    assert f"{stuck}: failed (stuck: no progress for " in result.stdout
    record = store.get(stuck)
    assert record is not None
    assert record.state == "failed"
    assert f"`celery-stable retry {stuck}`" in record.error
    # When the hang ends, the old attempt notices it lost the job and leaves it failed.
    wait_for(
        lambda: (
            f"video {stuck} failed" in worker.output()
            or f"video {stuck} rendered but" in worker.output()
        ),
        30,
        "the old attempt to end",
    )
    assert store.get(stuck).state == "failed"  # type: ignore[union-attr]
    assert harness.cli("retry", stuck).returncode == 0
    assert wait_state(store, stuck, ("done",), 30).attempts == 2


def test_a_short_redis_restart_mid_render_loses_no_result(
    harness: Harness, store: JobStore, redis_server: RedisServer
) -> None:
    harness.ready_worker()
    job_id = harness.submit(video_spec(3.0, {"kind": "slow", "seconds": 0.1}))
    wait_state(store, job_id, ("processing",), 30)
    redis_server.stop()
    time.sleep(2)
    redis_server.start()
    record = wait_state(store, job_id, ("done",), 60)
    assert record.attempts == 1


def test_recovery_resends_a_queued_video_whose_message_is_gone(
    harness: Harness, store: JobStore
) -> None:
    """A record queued with no message anywhere in the broker would never run: resend it."""
    # Recorded but never enqueued (as after a broker that lost its data, or a bug).
    lost = store.create(video_spec(0.5))
    # Enqueued while no worker runs: its message waits in the queue and must not be doubled.
    waiting = harness.submit(video_spec(0.5))
    old = time.time() - 60
    for job_id in (lost.id, waiting):
        store.client.hset(store._key(job_id), mapping={"queued_at": old, "created_at": old})
    result = harness.cli("recover", "--stuck-after", "30")
    assert result.returncode == 0, result.stderr
    assert f"{lost.id}: resent (its message was missing from the broker" in result.stdout
    assert waiting not in result.stdout
    harness.ready_worker()
    for job_id in (lost.id, waiting):
        assert wait_state(store, job_id, ("done",), 30).attempts == 1
    # Nothing left to resend, and each video ran once.
    assert "no stuck video" in harness.cli("recover", "--stuck-after", "30").stdout
