"""Stuck means no progress, not long; a short Redis restart mid-render loses no result; a queued
video whose message is gone is sent again."""

from __future__ import annotations

import time

import pytest

from video_renderer.celery_app import app
from video_renderer.jobs import VideoStore
from video_renderer.tasks import RENDER_TASK, resend_lost_videos

from .video_harness import Harness, RedisServer, video_spec, wait_for


def test_recovery_fails_a_stuck_video_not_a_slow_healthy_one_and_retry_renders_it(
    harness: Harness,
) -> None:
    worker = harness.ready_worker()
    # 4 s of steady progress (a frame every 100 ms): its heartbeat keeps up, never stuck.
    slow = harness.submit(video_spec(4.0, {"kind": "slow", "seconds": 0.1}))
    harness.wait_video(slow, ("processing",), 30)
    while harness.video(slow).state == "processing":
        result = harness.runtime_cli("recover", "--stuck-after", "2")
        assert result.returncode == 0, result.stderr
        assert "nothing to recover" in result.stdout
        time.sleep(0.5)
    assert harness.video(slow).state == "done"
    # No frame for 6 s on its first attempt (a hang that releases the GIL): stuck. Its last
    # heartbeat is at most 1 s into the attempt, so 3.5 s later it is more than 2 s old.
    stuck = harness.submit(
        video_spec(1.0, {"kind": "hang", "at_frame": 2, "seconds": 6, "on_attempts": 1})
    )
    harness.wait_video(stuck, ("processing",), 30)
    time.sleep(3.5)
    result = harness.runtime_cli("recover", "--stuck-after", "2")
    assert result.returncode == 0, result.stderr
    assert f"{stuck} ({RENDER_TASK}): failed (stuck: no heartbeat for " in result.stdout
    # When the hang ends, the old attempt finds the video taken from it and records nothing;
    # then the give-up hook fails the video, for a manual retry.
    wait_for(lambda: f"video {stuck} rendered, but the runtime no longer runs this attempt: "
             "output dropped" in worker.output(), 30, "the old attempt dropped")  # fmt: skip
    record = harness.wait_video(stuck, ("failed",), 30)
    assert record.cause == "stuck"
    assert record.error.startswith("stuck: no heartbeat for ")
    assert f"`celery-stable retry {stuck}`" in record.error
    assert harness.files_of(stuck) == []
    assert harness.runtime_cli("retry", stuck).returncode == 0
    done = harness.wait_video(stuck, ("done",), 30)
    assert done.attempt == 2
    assert harness.files_of(stuck) == [f"{stuck}.mp4"]


def test_a_short_redis_restart_mid_render_loses_no_result(
    harness: Harness, redis_server: RedisServer
) -> None:
    harness.ready_worker()
    video_id = harness.submit(video_spec(3.0, {"kind": "slow", "seconds": 0.1}))
    harness.wait_video(video_id, ("processing",), 30)
    redis_server.stop()
    time.sleep(2)
    redis_server.start()
    record = harness.wait_video(video_id, ("done",), 60)
    assert record.attempt == 1
    assert harness.task(video_id).attempts == 1


def test_recovery_resends_a_queued_video_whose_message_is_gone(
    harness: Harness, store: VideoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A video recorded and queued with no message anywhere in the broker would never run."""
    # The runtime's threshold, read by the app's task as the worker's environment gives it.
    monkeypatch.setenv("CELERY_STABLE_STUCK_AFTER_SEC", "30")
    # Recorded but never enqueued (as after a broker that lost its data, or a lost enqueue).
    lost = store.create(video_spec(0.5)).id
    # Enqueued while no worker runs: its message waits in the queue and must not be doubled.
    waiting = harness.submit(video_spec(0.5))
    # No message either, but recorded just now: its message may be on its way, left alone.
    recent = store.create(video_spec(0.5)).id
    old = store.ledger.now() - 60
    for video_id in (lost, waiting):
        store.client.hset(store.key(video_id), "created_at", old)
    # Run as Beat sends it every 3 minutes (here, in this process).
    assert resend_lost_videos() == [lost]
    assert store.client.llen("videos") == 2
    # The old message of the lost video turns up after all, late: the runtime's ledger and the
    # video's compare-and-set let only one of its two messages render.
    app.send_task(RENDER_TASK, args=[lost], task_id=lost)
    worker = harness.ready_worker()
    for video_id in (lost, waiting):
        assert harness.wait_video(video_id, ("done",), 30).attempt == 1
        assert harness.task(video_id).attempts == 1
    wait_for(lambda: f"ignored a message for video {lost}: the video is done by attempt 1"
             in worker.output(), 30, "the late message ignored")  # fmt: skip
    log = worker.output()
    assert log.count(f"rendering video {lost}") == log.count(f"rendering video {waiting}") == 1
    assert harness.video(recent).state == "queued"
    # Nothing left to resend: each video ran once, and the recent one is still too young.
    assert resend_lost_videos() == []
