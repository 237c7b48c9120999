"""Real SIGSEGVs in a bare app's tasks: requeued and done, or failed after K, the app told."""

from __future__ import annotations

import json
import signal
import time

import pytest
from celery.exceptions import WorkerLostError
from runtime_harness import Harness, WorkerProcess, wait_record

from celery_stable import broker
from celery_stable.ledger import Ledger
from celery_stable.testing import wait_for


def crashed(worker: WorkerProcess, task: str) -> None:
    assert worker.wait_exit(30) == -signal.SIGSEGV
    output = worker.output()
    assert "Fatal Python error: Segmentation fault" in output
    # faulthandler's Python traceback points into the app's task.
    assert f"in {task}" in output


@pytest.mark.parametrize("acks_late", ["0", "1"], ids=["acks-early", "acks-late"])
def test_a_segfault_is_requeued_at_start_up_then_done(
    harness: Harness, ledger: Ledger, acks_late: str
) -> None:
    worker = harness.ready_worker(PROJ_ACKS_LATE=acks_late)
    task_id = harness.send("proj.crash_once", str(harness.tmp / "marker"))
    crashed(worker, "crash_once")
    assert ledger.get(task_id).state == "running"  # type: ignore[union-attr]
    # The test is the supervisor: a new worker's start-up reap puts the task back.
    harness.ready_worker(PROJ_ACKS_LATE=acks_late)
    record = wait_record(ledger, task_id, ("done",), 60)
    assert (record.attempts, record.crashes) == (2, 1)
    assert harness.app.AsyncResult(task_id).get(timeout=10) == "survived"
    wait_for(lambda: ledger.client.hlen("unacked") == 0, 10, "no unacked copy left")


def test_the_reap_hook_requeues_within_a_second(harness: Harness, ledger: Ledger) -> None:
    worker = harness.ready_worker(PROJ_ACKS_LATE="1")
    task_id = harness.send("proj.crash_once", str(harness.tmp / "marker"))
    crashed(worker, "crash_once")
    died = time.monotonic()
    env = harness.env(SERVICE_RESULT="core-dump", EXIT_CODE="dumped", EXIT_STATUS="SEGV")
    result = harness.cli("reap", env=env)
    took = time.monotonic() - died
    assert result.returncode == 0, result.stderr
    assert f"{task_id} (proj.crash_once): requeued (crash 1/2: signal SEGV)" in result.stdout
    record = ledger.get(task_id)
    assert record is not None
    assert (record.state, record.crashes, record.cause) == ("queued", 1, "crash")
    # The same message, back on its queue at once (kombu would wait for the visibility timeout).
    assert ledger.client.llen("proj") == 1
    assert ledger.client.hlen("unacked") == 0
    assert took < 10, took
    assert "nothing to reap" in harness.cli("reap", env=env).stdout
    harness.ready_worker(PROJ_ACKS_LATE="1")
    assert wait_record(ledger, task_id, ("done",), 60).attempts == 2


def test_a_task_that_always_crashes_is_failed_after_k_and_the_app_is_told(
    harness: Harness, ledger: Ledger
) -> None:
    poison = harness.send("proj.crash_always", "video-7")
    behind = [harness.send("proj.add", n, n) for n in range(2)]
    workers: list[WorkerProcess] = []

    def state() -> str | None:
        record = ledger.get(poison)
        return record.state if record else None

    while state() != "failed":
        assert len(workers) < 3, "the poison task should be failed by the third worker"
        worker = harness.ready_worker()
        workers.append(worker)
        wait_for(lambda w=worker: w.exited() or state() == "failed", 60, "a crash")
        if worker.exited():
            crashed(worker, "crash_always")
    record = ledger.get(poison)
    assert record is not None
    assert (record.crashes, record.cause) == (2, "crash")
    assert record.reason.startswith("crashed the worker 2 times (last: worker died; cause unknown")
    assert f"`celery-stable retry {poison}`" in record.reason
    for task_id in behind:
        assert wait_record(ledger, task_id, ("done",), 60).attempts == 1
    # The app's hook task got the call, and its result backend says FAILURE, as Celery's own
    # prefork pool says for a child that died.
    hook = wait_for(harness.given_up, 30, "the give-up hook task")
    assert hook == [{
        "task_name": "proj.crash_always", "task_id": poison, "args": ["video-7"], "kwargs": {},
        "cause": "crash", "reason": record.reason,
    }]  # fmt: skip
    result = harness.app.AsyncResult(poison)
    assert result.state == "FAILURE"
    assert isinstance(result.result, WorkerLostError)
    assert "crashed the worker 2 times" in str(result.result)
    assert len(workers) == 3
    assert workers[-1].running()
    wait_for(lambda: ledger.get(poison).notified, 10, "notified")  # type: ignore[union-attr]


def test_a_redelivered_copy_of_a_finished_task_is_acked_and_ignored(
    harness: Harness, ledger: Ledger
) -> None:
    worker = harness.ready_worker(PROJ_ACKS_LATE="1")
    task_id = harness.send("proj.sleep", 1.0)
    record = wait_record(ledger, task_id, ("running",), 30)
    copy = ledger.client.hget("unacked", record.tags[-1])
    assert copy is not None
    wait_record(ledger, task_id, ("done",), 30)
    # What kombu does after the visibility timeout with a copy it still holds.
    with harness.app.connection_for_write() as connection:
        broker.restore(connection, record.tags[-1], copy)
    wait_for(
        lambda: "ignored a redelivered copy of task proj.sleep" in worker.output(), 30, "ignored"
    )
    assert worker.output().count(f"Task proj.sleep[{task_id}] received") == 2
    assert worker.output().count(f"Task proj.sleep[{task_id}] succeeded") == 1
    assert ledger.get(task_id).attempts == 1  # type: ignore[union-attr]
    wait_for(lambda: ledger.client.hlen("unacked") == 0, 10, "the copy acked")
    assert json.loads(copy)[0]["properties"]["delivery_tag"] == record.tags[-1]


def test_each_worker_of_a_host_reaps_only_its_own_tasks(harness: Harness, ledger: Ledger) -> None:
    """celery-worker@1 and @2 on one host: @2's crash is @2's ExecStopPost's to resolve."""
    harness.ready_worker(CELERY_STABLE_INSTANCE="1", CELERY_STABLE_HEARTBEAT_INTERVAL_SEC="2")
    second = harness.ready_worker(
        CELERY_STABLE_INSTANCE="2", CELERY_STABLE_HEARTBEAT_INTERVAL_SEC="2"
    )
    task_id = harness.send("proj.crash_always", "v2")
    record = wait_record(ledger, task_id, ("running",), 30)
    crasher = next(w for w in harness.workers if w.pid == record.pid)
    assert crasher.wait_exit(30) == -signal.SIGSEGV
    instance = "2" if crasher is second else "1"
    other = "1" if instance == "2" else "2"
    env = {
        "CELERY_STABLE_HEARTBEAT_INTERVAL_SEC": "2",
        "EXIT_CODE": "dumped",
        "EXIT_STATUS": "SEGV",
    }
    assert (
        "nothing to reap"
        in harness.cli("reap", env=harness.env(CELERY_STABLE_INSTANCE=other, **env)).stdout
    )
    mine = harness.cli("reap", env=harness.env(CELERY_STABLE_INSTANCE=instance, **env))
    assert f"{task_id} (proj.crash_always): requeued (crash 1/2: signal SEGV)" in mine.stdout
    assert record.instance == instance
