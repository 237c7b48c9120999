"""Real SIGSEGVs mid-render: tracebacks, requeue by the runtime, poison videos, the reap hook."""

from __future__ import annotations

import signal
import time

from video_renderer.tasks import RENDER_TASK

from .video_harness import Harness, WorkerProcess, partial_name, video_spec, wait_for

SEGFAULT_ONCE = {"kind": "segfault", "at_frame": 3, "on_attempts": 1}
POISON = {"kind": "segfault", "at_frame": 3}


def crashed(worker: WorkerProcess) -> None:
    assert worker.wait_exit(30) == -signal.SIGSEGV
    log = worker.output()
    assert "Fatal Python error: Segmentation fault" in log
    # faulthandler's Python traceback points at the fault, through the renderer, in the task.
    assert 'faults.py", line' in log
    assert "in segfault" in log
    assert "in render_video" in log


def test_a_segfault_is_requeued_at_the_next_start_then_rendered(harness: Harness) -> None:
    worker = harness.ready_worker()
    video_id = harness.submit(video_spec(1.0, SEGFAULT_ONCE))
    crashed(worker)
    assert harness.video(video_id).state == "processing"
    assert harness.task(video_id).state == "running"
    # Its ffmpeg (systemd's KillMode=mixed would kill it; here it ends on its closed stdin) leaves
    # the temp file of the dead attempt.
    partial = [partial_name(video_id, 1, worker.pid)]
    wait_for(lambda: harness.files_of(video_id) == partial, 10, "the dead attempt's temp file")
    # The test is the supervisor: a new worker's start-up reap puts the video back, first in line.
    harness.ready_worker()
    record = harness.wait_video(video_id, ("done",), 60)
    task = harness.task(video_id)
    assert (record.attempt, task.attempts, task.crashes) == (2, 2, 1)
    # The dead attempt's temp file went with the next attempt.
    assert harness.files_of(video_id) == [f"{video_id}.mp4"]


def test_the_reap_hook_requeues_a_core_dump_within_seconds(harness: Harness) -> None:
    worker = harness.ready_worker()
    video_id = harness.submit(video_spec(1.0, SEGFAULT_ONCE))
    crashed(worker)
    died = time.monotonic()
    env = harness.env(SERVICE_RESULT="core-dump", EXIT_CODE="dumped", EXIT_STATUS="SEGV")
    result = harness.runtime_cli("reap", env=env)
    assert result.returncode == 0, result.stderr
    assert f"{video_id} ({RENDER_TASK}): requeued (crash 1/2: signal SEGV)" in result.stdout
    assert time.monotonic() - died < 10
    task = harness.task(video_id)
    assert (task.state, task.crashes, task.cause) == ("queued", 1, "crash")
    assert harness.store.client.llen("videos") == 1  # its message, back at once
    assert "nothing to reap" in harness.runtime_cli("reap", env=env).stdout
    harness.ready_worker()
    assert harness.wait_video(video_id, ("done",), 60).attempt == 2


def test_a_poison_video_is_failed_after_two_crashes_while_the_others_render(
    harness: Harness,
) -> None:
    poison = harness.submit(video_spec(1.0, POISON))
    good = [harness.submit(video_spec(0.3)) for _ in range(2)]
    workers: list[WorkerProcess] = []

    def state() -> str | None:
        record = harness.ledger.get(poison)
        return record.state if record else None

    while state() != "failed":
        assert len(workers) < 3, "the poison video should be failed by the third worker"
        worker = harness.ready_worker()
        workers.append(worker)
        wait_for(lambda w=worker: w.exited() or state() == "failed", 60, "a crash")
        if worker.exited():
            crashed(worker)
            partial = partial_name(poison, len(workers), worker.pid)
            wait_for(lambda p=partial: p in harness.files_of(poison), 10, "a temp file left")
    task = harness.task(poison)
    assert (task.crashes, task.cause) == (2, "crash")
    assert task.reason.startswith("crashed the worker 2 times (last: worker died; cause unknown")
    assert f"`celery-stable retry {poison}`" in task.reason
    for video_id in good:
        assert harness.wait_video(video_id, ("done",), 60).attempt == 1
    # The give-up hook task, video_renderer.mark_given_up, failed the video with that reason.
    record = harness.wait_video(poison, ("failed",), 30)
    assert (record.cause, record.error) == ("crash", task.reason)
    assert f"video {poison} failed for a manual retry (crash)" in workers[-1].output()
    assert harness.files_of(poison) == []  # both crashed attempts' temp files removed
    assert len(workers) == 3
    assert workers[-1].running()
