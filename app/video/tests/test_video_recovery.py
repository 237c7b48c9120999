"""Stuck means no progress, not long; a short Redis restart mid-render loses no result."""

from __future__ import annotations

import time

from video_renderer.tasks import RENDER_TASK

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
