"""Limits Celery ignores under solo, enforced for every task of a bare app."""

from __future__ import annotations

import signal
import time

import psutil
from celery.exceptions import TimeLimitExceeded
from runtime_harness import Harness, wait_record

from celery_stable.ledger import Ledger
from celery_stable.recycle import recycle_reason
from celery_stable.testing import wait_for


def test_a_recycle_names_every_limit_the_task_reached() -> None:
    assert recycle_reason(9, 10, 255_999, 256_000) is None
    assert recycle_reason(10, 10, 1024, 256_000) == "10 tasks done"
    assert recycle_reason(3, 10, 300_000, 256_000) == "RSS 292 MB >= 250 MB"
    assert recycle_reason(10, 10, 300_000, 256_000) == "10 tasks done, RSS 292 MB >= 250 MB"


def test_recycles_after_n_tasks_of_any_name_in_place(harness: Harness, ledger: Ledger) -> None:
    tasks = [
        harness.send("proj.add", 1, 2),
        harness.send("proj.sleep", 0.2),
        harness.send("proj.fails"),
        harness.send("proj.add", 3, 4),
        harness.send("proj.sleep", 0.1),
    ]
    worker = harness.ready_worker(CELERY_STABLE_MAX_TASKS_PER_CHILD="2")
    for task_id in tasks:
        wait_record(ledger, task_id, ("done", "failed"), 60)
    wait_for(lambda: harness.notify.count("READY=1") == 3, 15, "READY after each re-exec")
    assert worker.running()
    for task_id in tasks:
        record = ledger.get(task_id)
        assert record is not None
        assert (record.attempts, record.pid) == (1, worker.pid)
    failed = ledger.get(tasks[2])
    assert (failed.state, failed.cause, failed.reason) == (  # type: ignore[union-attr]
        "failed",
        "error",
        "ValueError: the team's own bug",
    )
    output = worker.output()
    assert output.count("recycling after this task: 2 tasks done") == 2
    assert output.count("Worker process initialized avec optimisations anti-crash") == 3
    assert harness.notify.count("STOPPING=1") == 0
    assert ledger.client.llen("proj") == 0


def test_recycle_widens_the_watchdog_for_the_re_exec_and_restores_it_at_ready(
    harness: Harness, ledger: Ledger
) -> None:
    # systemd's watchdog keeps running across execv: with a WatchdogSec shorter than the new
    # image's start-up, the worker must widen it before re-executing and set it back at READY.
    worker = harness.ready_worker(WATCHDOG_USEC="1000000", CELERY_STABLE_MAX_TASKS_PER_CHILD="1")
    wait_record(ledger, harness.send("proj.add", 1, 1), ("done",), 60)
    wait_for(lambda: harness.notify.count("READY=1") == 2, 30, "READY after the re-exec")
    assert worker.running()
    lines = [line for _, line in list(harness.notify.messages)]
    widened = lines.index("WATCHDOG_USEC=90000000")
    ready_again = [n for n, line in enumerate(lines) if line == "READY=1"][1]
    assert lines[widened - 1] == "WATCHDOG=1"  # a fresh ping, then the wider timeout
    assert widened < ready_again
    assert "WATCHDOG_USEC=1000000" in lines[ready_again : ready_again + 3]
    assert all(not line.startswith("WATCHDOG_USEC=") for line in lines[ready_again + 3 :])


def test_recycles_when_rss_reaches_the_limit(harness: Harness, ledger: Ledger) -> None:
    worker = harness.ready_worker(CELERY_STABLE_MAX_MEMORY_PER_CHILD_KB="250000")
    leak = harness.send("proj.leak", 200)
    after = harness.send("proj.add", 1, 1)
    wait_record(ledger, leak, ("done",), 60)
    wait_record(ledger, after, ("done",), 60)
    wait_for(lambda: harness.notify.count("READY=1") == 2, 15, "READY after the re-exec")
    assert any(
        line.startswith("STATUS=recycling: RSS ") and line.endswith(">= 244 MB")
        for line in harness.notify.lines("STATUS=")
    )
    assert ledger.get(after).pid == worker.pid  # type: ignore[union-attr]
    assert psutil.Process(worker.pid).memory_info().rss < 200 * 1024 * 1024


def test_a_task_past_its_hard_limit_is_failed_and_the_worker_re_executed(
    harness: Harness, ledger: Ledger
) -> None:
    worker = harness.ready_worker(WATCHDOG_USEC="2000000", CELERY_STABLE_TIME_LIMIT_SEC="2")
    task_id = harness.send("proj.sleep", 60)
    started = wait_record(ledger, task_id, ("running",), 30)
    record = wait_record(ledger, task_id, ("failed",), 30)
    past = (record.finished_at or 0) - (started.started_at or 0) - 2
    assert 0 < past < 4, past
    assert (record.cause, record.attempts) == ("time-limit", 1)
    assert record.reason.startswith(
        "exceeded its hard time limit of 2 s; the worker was re-executed"
    )
    # Pings stopped at the limit, then a fresh image under the same PID, with no restart spent.
    wait_for(lambda: harness.notify.count("READY=1") == 2, 30, "READY after the re-exec")
    assert worker.running()
    assert "in sleep" in worker.output()  # every thread's stack, the task's included
    after = harness.send("proj.add", 2, 2)
    assert wait_record(ledger, after, ("done",), 30).pid == worker.pid
    hook = wait_for(harness.given_up, 30, "the give-up hook")
    assert (hook[0]["task_id"], hook[0]["cause"], hook[0]["args"]) == (task_id, "time-limit", [60])
    result = harness.app.AsyncResult(task_id)
    assert result.state == "FAILURE"
    assert isinstance(result.result, TimeLimitExceeded)


def test_a_tasks_own_time_limit_wins_over_the_operators(harness: Harness, ledger: Ledger) -> None:
    harness.ready_worker()  # the operator's limit: 900 s
    task_id = harness.send("proj.limited", 30)
    record = wait_record(ledger, task_id, ("failed",), 30)
    assert record.time_limit == 2
    assert record.reason.startswith("exceeded its hard time limit of 2 s")
    header = harness.send("proj.sleep", 30, time_limit=1)
    assert wait_record(ledger, header, ("failed",), 30).time_limit == 1
    # The app's own task_time_limit, which Celery ignores under solo, is the task's own too.
    wait_for(lambda: harness.notify.count("READY=1") == 3, 30, "READY after two re-execs")
    harness.workers[-1].kill()
    harness.ready_worker(PROJ_TASK_TIME_LIMIT="3")
    app_wide = harness.send("proj.sleep", 30)
    assert wait_record(ledger, app_wide, ("failed",), 30).time_limit == 3


def test_a_gil_holding_hang_stops_the_pings_and_is_killed(harness: Harness, ledger: Ledger) -> None:
    worker = harness.ready_worker(WATCHDOG_USEC="1000000", CELERY_STABLE_TIME_LIMIT_SEC="2")
    task_id = harness.send("proj.hang_gil", 60)
    wait_record(ledger, task_id, ("running",), 30)
    time.sleep(1.5)
    last_ping = max(harness.notify.times("WATCHDOG=1"))
    time.sleep(1.5)
    # Alive, yet silent: systemd would kill it WatchdogSec after the last ping.
    assert worker.running()
    assert max(harness.notify.times("WATCHDOG=1")) == last_ping
    # No systemd here: faulthandler's C thread (no GIL needed) dumps the stacks, then SIGALRM,
    # a signal, which systemd's Restart=on-abnormal restarts.
    assert worker.wait_exit(30) == -signal.SIGALRM
    assert "in hang_gil" in worker.output()
    harness.ready_worker(CELERY_STABLE_TIME_LIMIT_SEC="2")
    record = wait_record(ledger, task_id, ("failed",), 30)
    assert record.cause == "time-limit"
    assert record.reason.startswith("exceeded its hard time limit of 2 s (killed by worker died")


def test_a_stop_during_a_due_recycle_stops_instead_of_re_executing(
    harness: Harness, ledger: Ledger
) -> None:
    worker = harness.ready_worker(CELERY_STABLE_MAX_TASKS_PER_CHILD="1")
    task_id = harness.send("proj.sleep", 2)
    wait_record(ledger, task_id, ("running",), 30)
    worker.signal(signal.SIGTERM)
    # Warm shutdown: the running task is finished, then the worker exits 0, once.
    assert worker.wait_exit(30) == 0
    assert ledger.get(task_id).state == "done"  # type: ignore[union-attr]
    assert harness.notify.count("READY=1") == 1
    assert harness.notify.count("STOPPING=1") == 1


def test_a_stop_in_the_re_exec_window_stops_the_worker_and_the_new_image_takes_no_work(
    harness: Harness, ledger: Ledger
) -> None:
    # The window: the recycle is due, the worker has stopped consuming and checked that no stop
    # was asked, and is about to execve. The test hook holds it there, stop signals blocked.
    worker = harness.ready_worker(
        CELERY_STABLE_MAX_TASKS_PER_CHILD="1", CELERY_STABLE_TEST_REEXEC_PAUSE_SEC="3"
    )
    first = harness.send("proj.add", 1, 1)
    wait_record(ledger, first, ("done",), 30)
    wait_for(lambda: "in the re-exec window" in worker.output(), 30, "the re-exec window")
    waiting = harness.send("proj.add", 2, 2)
    worker.signal(signal.SIGTERM)
    assert worker.wait_exit(30) == 0
    output = worker.output()
    assert "a stop came before the re-exec (recycle: 1 tasks done): stopping instead" in output
    # No new image: it never said READY again, and the next task is still on the queue.
    assert harness.notify.count("READY=1") == 1
    assert harness.notify.count("STOPPING=1") == 1
    assert ledger.get(waiting) is None
    assert ledger.client.llen("proj") == 1


def test_a_task_that_exits_is_failed_and_the_worker_lives_on(
    harness: Harness, ledger: Ledger
) -> None:
    worker = harness.ready_worker()
    task_id = harness.send("proj.exits", 3)
    record = wait_record(ledger, task_id, ("failed",), 30)
    assert (record.cause, record.attempts) == ("exit", 1)
    assert record.reason.startswith("ended its worker process (TypeError:")
    # Without the runtime Celery stops with exit 1 here, which Restart=on-abnormal ignores.
    wait_for(lambda: harness.notify.count("READY=1") == 2, 30, "READY after the re-exec")
    assert worker.running()
    assert wait_record(ledger, harness.send("proj.add", 1, 1), ("done",), 30).pid == worker.pid
    assert ledger.client.hlen("unacked") == 0


def test_an_allocation_bomb_is_stopped_by_rlimit_as_and_the_worker_lives_on(
    harness: Harness, ledger: Ledger
) -> None:
    worker = harness.ready_worker()
    task_id = harness.send("proj.hog", 8192)
    record = wait_record(ledger, task_id, ("failed",), 60)
    assert record.cause == "memory"
    assert record.reason.startswith(
        "ran out of memory: the address-space limit is 1024 MB (RLIMIT_AS)"
    )
    # Celery treats MemoryError as fatal to the worker (exit 1, not restarted by on-abnormal):
    # the runtime carries on in a fresh image instead.
    wait_for(lambda: harness.notify.count("READY=1") == 2, 30, "READY after the re-exec")
    assert worker.running()
    assert wait_record(ledger, harness.send("proj.add", 1, 1), ("done",), 30).pid == worker.pid
