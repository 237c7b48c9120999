"""Stuck means no progress, not long; a short Redis restart mid-render loses no result; a queued
video whose message is gone is sent again."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from pathlib import Path

import pytest

from video_renderer.celery_app import app
from video_renderer.jobs import VideoStore
from video_renderer.tasks import RENDER_TASK, resend_lost_videos

from .video_harness import Harness, RedisServer, ffprobe, partial_name, video_spec, wait_for


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


def _identity(path: Path) -> tuple[int, int, str]:
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_stale_attempt_resumed_after_its_retry_won_leaves_the_winners_file_alone(
    harness: Harness,
) -> None:
    """Two attempts of one video, two workers, one output directory: the first is stalled
    (SIGSTOP, every thread of it), given up as stuck, retried and done on the other worker; then
    resumed, it renders to the end and must neither replace nor remove the winner's file."""
    stale = harness.ready_worker()
    # 20 frames, 0.1 s each: the stop lands mid-render, with ffmpeg writing the temp file.
    video_id = harness.submit(video_spec(2.0, {"kind": "slow", "seconds": 0.1}))
    own = partial_name(video_id, 1, stale.pid)
    wait_for(lambda: own in harness.files_of(video_id), 30, "the first attempt's temp file")
    stale.signal(signal.SIGSTOP)
    try:
        winner = harness.ready_worker()
        time.sleep(3.5)  # its last heartbeat is now more than 2 s old
        result = harness.runtime_cli("recover", "--stuck-after", "2")
        assert f"{video_id} ({RENDER_TASK}): failed (stuck: no heartbeat for " in result.stdout
        harness.wait_video(video_id, ("failed",), 30)
        # The give-up hook removed the stalled attempt's temp file: attempt 1 can never be
        # recorded now, whichever host it runs on.
        assert harness.files_of(video_id) == []
        assert harness.runtime_cli("retry", video_id).returncode == 0
        done = harness.wait_video(video_id, ("done",), 60)
        final = harness.output_dir / f"{video_id}.mp4"
        assert (done.attempt, done.output) == (2, str(final))
        assert f"video {video_id} done: {final}" in winner.output()
        published = _identity(final)
    finally:
        stale.signal(signal.SIGCONT)
    wait_for(lambda: f"video {video_id} rendered, but the video is done: output dropped"
             in stale.output(), 30, "the stale attempt to finish")  # fmt: skip
    # The winner's very file (same inode, same bytes), whole, and nothing of the loser's.
    assert _identity(final) == published
    assert ffprobe(final)["frames"] == 20
    assert harness.files_of(video_id) == [f"{video_id}.mp4"]
    assert harness.video(video_id).state == "done"
    assert harness.task(video_id).attempts == 2
    assert stale.running()
    assert os.path.getsize(final) > 0


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
