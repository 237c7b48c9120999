"""Limits Celery ignores under solo, enforced by the runtime on real renders."""

from __future__ import annotations

import signal
import time

import psutil

from video_renderer.tasks import RENDER_TASK

from .video_harness import Harness, partial_name, video_spec, wait_for


def test_recycles_after_n_videos_in_place_with_the_queue_intact(harness: Harness) -> None:
    videos = [harness.submit(video_spec(0.3, text=f"video {n}")) for n in range(5)]
    worker = harness.ready_worker(CELERY_STABLE_MAX_TASKS_PER_CHILD="2")
    for video_id in videos:
        harness.wait_video(video_id, ("done",), 60)
    wait_for(lambda: harness.notify.count("READY=1") == 3, 15, "READY after each re-exec")
    assert worker.running()
    log = worker.output()
    for video_id in videos:
        assert harness.video(video_id).attempt == 1
        assert harness.task(video_id).pid == worker.pid
        assert log.count(f"rendering video {video_id}") == 1
    assert log.count("recycling after this task: 2 tasks done") == 2
    assert log.count("Worker process initialized avec optimisations anti-crash") == 3
    assert harness.notify.count("STOPPING=1") == 0
    assert harness.store.client.llen("videos") == 0
    wait_for(lambda: harness.store.client.hlen("unacked") == 0, 10, "the last ack")


def test_recycles_when_rss_reaches_the_limit(harness: Harness) -> None:
    worker = harness.ready_worker(CELERY_STABLE_MAX_MEMORY_PER_CHILD_KB="250000")
    leak = harness.submit(video_spec(0.3, {"kind": "leak", "mb": 200}))
    after = harness.submit(video_spec(0.3))
    harness.wait_video(leak, ("done",), 60)
    harness.wait_video(after, ("done",), 60)
    wait_for(lambda: harness.notify.count("READY=1") == 2, 15, "READY after the re-exec")
    assert any(
        line.startswith("STATUS=recycling: RSS ") and line.endswith(">= 244 MB")
        for line in harness.notify.lines("STATUS=")
    )
    assert harness.task(after).pid == worker.pid
    assert psutil.Process(worker.pid).memory_info().rss < 200 * 1024 * 1024


def test_a_gil_holding_hang_stops_the_pings_and_the_video_is_failed(harness: Harness) -> None:
    worker = harness.ready_worker(WATCHDOG_USEC="1000000", CELERY_STABLE_TIME_LIMIT_SEC="2")
    video_id = harness.submit(video_spec(2.0, {"kind": "hang_gil", "at_frame": 2}))
    harness.wait_video(video_id, ("processing",), 30)
    time.sleep(1.5)
    last_ping = max(harness.notify.times("WATCHDOG=1"))
    time.sleep(1.5)
    # Alive, yet silent: systemd would kill it WatchdogSec after the last ping.
    assert worker.running()
    assert max(harness.notify.times("WATCHDOG=1")) == last_ping
    # No systemd here: faulthandler's C thread (no GIL needed) dumps the stacks, then SIGALRM,
    # a signal, which systemd's Restart=on-abnormal restarts.
    assert worker.wait_exit(30) == -signal.SIGALRM
    assert "in hang_holding_gil" in worker.output()
    harness.ready_worker(CELERY_STABLE_TIME_LIMIT_SEC="2")
    record = harness.wait_video(video_id, ("failed",), 30)
    assert record.cause == "time-limit"
    assert record.error.startswith("exceeded its hard time limit of 2 s (killed by worker died")
    assert f"`celery-stable retry {video_id}`" in record.error


def test_a_gil_releasing_hang_is_failed_at_the_limit_and_the_worker_re_executed(
    harness: Harness,
) -> None:
    worker = harness.ready_worker(WATCHDOG_USEC="1000000", CELERY_STABLE_TIME_LIMIT_SEC="2")
    video_id = harness.submit(video_spec(2.0, {"kind": "hang", "at_frame": 10}))
    started = time.monotonic()
    harness.wait_video(video_id, ("processing",), 30)
    seen = time.monotonic()  # the task began before this: its deadline is at most 2 s later
    partial = partial_name(video_id, 1, worker.pid)
    wait_for(lambda: partial in harness.files_of(video_id), 10, "ffmpeg writing its temp file")
    ffmpeg = [p for p in psutil.Process(worker.pid).children() if p.name() == "ffmpeg"]
    assert len(ffmpeg) == 1
    # Failed by the runtime 2 s past the limit; the give-up hook then fails the video, in the same
    # worker re-executed in place (same PID, READY again, no restart spent).
    record = harness.wait_video(video_id, ("failed",), 30)
    assert record.cause == "time-limit"
    assert record.error.startswith(
        "exceeded its hard time limit of 2 s; the worker was re-executed in place"
    )
    assert harness.notify.count("READY=1") == 2
    assert worker.running()
    # Pings stopped at the limit (the task's deadline), before the runtime acted on it.
    [reexec] = harness.notify.times("WATCHDOG_USEC=90000000")  # widened for the new image
    pings = [t for t in harness.notify.times("WATCHDOG=1") if started < t < reexec]
    assert pings
    assert max(pings) < seen + 2.3
    assert "in fire" in worker.output()  # every thread's stack, the render loop's included
    # Its ffmpeg was killed and waited for before the re-exec: gone, not a zombie of the new
    # image (psutil counts a zombie as running), and the worker has no child left at all.
    assert not ffmpeg[0].is_running()
    assert psutil.Process(worker.pid).children(recursive=True) == []
    assert harness.files_of(video_id) == []  # the hook removed the dead attempt's temp file
    assert harness.wait_video(harness.submit(video_spec(0.3)), ("done",), 30).attempt == 1


def test_the_cooperative_deadline_fails_the_video_cleanly(harness: Harness) -> None:
    worker = harness.ready_worker(WATCHDOG_USEC="1000000", CELERY_STABLE_TIME_LIMIT_SEC="2")
    slow = harness.submit(video_spec(5.0, {"kind": "slow", "seconds": 0.1}))
    after = harness.submit(video_spec(0.3))
    record = harness.wait_video(slow, ("failed",), 30)
    assert record.error == "exceeded the hard time limit of 2 s"
    assert record.cause == ""
    task = harness.wait_task(slow, ("failed",), 10)
    # The task failed itself, before the runtime had to: no forced give-up, no re-exec.
    assert task.cause == "error"
    assert task.reason == "VideoFailed: exceeded the hard time limit of 2 s"
    harness.wait_video(after, ("done",), 30)
    assert worker.running()
    assert harness.notify.count("READY=1") == 1
    assert "exceeded its hard time limit" not in worker.output()
    assert harness.files_of(slow) == []


def test_a_stop_during_a_due_recycle_stops_instead_of_re_executing(harness: Harness) -> None:
    worker = harness.ready_worker(CELERY_STABLE_MAX_TASKS_PER_CHILD="1")
    video_id = harness.submit(video_spec(2.0, {"kind": "slow", "seconds": 0.05}))
    harness.wait_video(video_id, ("processing",), 30)
    worker.signal(signal.SIGTERM)
    # Warm shutdown: the running video is finished, then the worker exits 0, once.
    assert worker.wait_exit(30) == 0
    assert harness.video(video_id).state == "done"
    assert harness.task(video_id).name == RENDER_TASK
    assert harness.notify.count("READY=1") == 1
    assert harness.notify.count("STOPPING=1") == 1
