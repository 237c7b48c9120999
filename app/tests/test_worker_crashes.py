"""Real SIGSEGVs in a real worker: tracebacks, requeue, poison videos, the reap hook."""

from __future__ import annotations

import signal
import time
from functools import partial

from conftest import Harness, Worker
from helpers import video_spec, wait_for, wait_state

from celery_stable.jobs import JobStore

SEGFAULT_ONCE = {"kind": "segfault", "at_frame": 3, "on_attempts": 1}
POISON = {"kind": "segfault", "at_frame": 3}


def crashed(worker: Worker) -> None:
    assert worker.wait_exit(30) == -signal.SIGSEGV
    log = worker.output()
    assert "Fatal Python error: Segmentation fault" in log
    # faulthandler's Python traceback points at the fault, through the renderer, in the task.
    assert 'faults.py", line' in log
    assert "in segfault" in log
    assert "in render_video" in log


def test_segfault_leaves_a_traceback_and_the_video_is_requeued_then_rendered(
    harness: Harness, store: JobStore
) -> None:
    worker = harness.ready_worker()
    job_id = harness.submit(video_spec(1.0, SEGFAULT_ONCE))
    crashed(worker)
    assert store.get(job_id).state == "processing"  # type: ignore[union-attr]
    # The test is the supervisor: start a new worker, whose start-up reap resolves the video.
    harness.ready_worker()
    record = wait_state(store, job_id, ("done",), 60)
    assert (record.attempts, record.crashes) == (2, 1)


def test_reap_hook_resolves_a_core_dump_within_seconds(harness: Harness, store: JobStore) -> None:
    worker = harness.ready_worker()
    job_id = harness.submit(video_spec(1.0, SEGFAULT_ONCE))
    crashed(worker)
    died = time.monotonic()
    env = harness.env(SERVICE_RESULT="core-dump", EXIT_CODE="dumped", EXIT_STATUS="SEGV")
    result = harness.cli("reap", env=env)
    assert result.returncode == 0, result.stderr
    assert f"{job_id}: requeued (crash 1/2: signal SEGV)" in result.stdout
    record = store.get(job_id)
    assert record is not None
    assert (record.state, record.crashes) == ("queued", 1)
    assert time.monotonic() - died < 60
    assert "nothing to reap" in harness.cli("reap", env=env).stdout
    harness.ready_worker()
    assert wait_state(store, job_id, ("done",), 60).attempts == 2


def test_poison_video_fails_after_max_crashes_while_the_others_render(
    harness: Harness, store: JobStore
) -> None:
    poison = harness.submit(video_spec(1.0, POISON))
    good = [harness.submit(video_spec(0.3)) for _ in range(2)]

    def resolved() -> bool:
        return store.get(poison).state == "failed"  # type: ignore[union-attr]

    def crashed_or_resolved(worker: Worker) -> bool:
        return worker.exited() or resolved()

    workers: list[Worker] = []
    while not resolved():
        assert len(workers) < 3, "the poison video should be failed by the third worker"
        worker = harness.ready_worker()
        workers.append(worker)
        wait_for(partial(crashed_or_resolved, worker), 60, "a crash")
        if worker.exited():
            crashed(worker)
    record = store.get(poison)
    assert record is not None
    assert record.crashes == 2
    assert record.error.startswith("killed the worker 2 times (last: worker died; cause unknown")
    assert f"`celery-stable retry {poison}`" in record.error
    for job_id in good:
        assert wait_state(store, job_id, ("done",), 60).attempts == 1
    assert len(workers) == 3
    assert workers[-1].running()
