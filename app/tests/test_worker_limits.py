"""Limits Celery ignores under solo, enforced: recycle, hard time limit, watchdog, memory."""

from __future__ import annotations

import signal
import time

import psutil
from conftest import Harness
from helpers import video_spec, wait_for, wait_state

from celery_stable.jobs import JobStore


def test_recycles_after_n_tasks_in_place_with_the_queue_intact(
    harness: Harness, store: JobStore
) -> None:
    jobs = [harness.submit(video_spec(0.3, text=f"video {n}")) for n in range(5)]
    worker = harness.ready_worker(CELERY_STABLE_MAX_TASKS_PER_CHILD="2")
    for job_id in jobs:
        wait_state(store, job_id, ("done",), 60)
    wait_for(lambda: harness.notify.count("READY=1") == 3, 15, "READY after each re-exec")
    assert worker.running()
    log = worker.output()
    for job_id in jobs:
        record = store.get(job_id)
        assert record is not None
        assert (record.attempts, record.pid) == (1, worker.pid)
        assert log.count(f"rendering video {job_id}") == 1
    # Sent as the recycle is decided, and maybe again by the monitor's next STATUS refresh.
    assert harness.notify.count("STATUS=recycling: 2 tasks done") >= 2
    assert log.count("Worker process initialized avec optimisations anti-crash") == 3
    assert store.client.llen("videos") == 0
    # The record says done just before the message is acked: wait for the last ack.
    wait_for(lambda: store.client.hlen("unacked") == 0, 10, "the last ack")
    assert harness.notify.count("STOPPING=1") == 0


def test_recycle_widens_the_watchdog_for_the_re_exec_and_restores_it_at_ready(
    harness: Harness, store: JobStore
) -> None:
    # systemd's watchdog keeps running across execv: with a WatchdogSec shorter than the new
    # image's start-up (the fault matrix saw WatchdogSec=5 kill a recycling worker), the
    # worker must widen it before re-executing and set it back once READY again.
    worker = harness.ready_worker(WATCHDOG_USEC="1000000", CELERY_STABLE_MAX_TASKS_PER_CHILD="1")
    job_id = harness.submit(video_spec(0.3))
    wait_state(store, job_id, ("done",), 60)
    wait_for(lambda: harness.notify.count("READY=1") == 2, 30, "READY after the re-exec")
    assert worker.running()
    lines = [line for _, line in list(harness.notify.messages)]
    widened = lines.index("WATCHDOG_USEC=90000000")
    ready_again = [n for n, line in enumerate(lines) if line == "READY=1"][1]
    assert lines[widened - 1] == "WATCHDOG=1"  # a fresh ping, then the wider timeout
    assert widened < ready_again
    # The unit's value is restored with the READY of the new image, before any later ping.
    assert "WATCHDOG_USEC=1000000" in lines[ready_again : ready_again + 3]
    assert all(not line.startswith("WATCHDOG_USEC=") for line in lines[ready_again + 3 :])


def test_recycles_when_rss_reaches_the_limit(harness: Harness, store: JobStore) -> None:
    worker = harness.ready_worker(CELERY_STABLE_MAX_MEMORY_PER_CHILD_KB="250000")
    leak = harness.submit(video_spec(0.3, {"kind": "leak", "mb": 200}))
    after = harness.submit(video_spec(0.3))
    wait_state(store, leak, ("done",), 60)
    wait_state(store, after, ("done",), 60)
    wait_for(lambda: harness.notify.count("READY=1") == 2, 15, "READY after the re-exec")
    assert any(
        line.startswith("STATUS=recycling: RSS ") and line.endswith(">= 244 MB")
        for line in harness.notify.lines("STATUS=")
    )
    assert store.get(after).pid == worker.pid  # type: ignore[union-attr]
    assert psutil.Process(worker.pid).memory_info().rss < 200 * 1024 * 1024


def test_gil_holding_native_hang_stops_the_pings_and_is_killed(
    harness: Harness, store: JobStore
) -> None:
    worker = harness.ready_worker(WATCHDOG_USEC="1000000", CELERY_STABLE_TIME_LIMIT_SEC="2")
    job_id = harness.submit(video_spec(2.0, {"kind": "hang_gil", "at_frame": 2}))
    wait_state(store, job_id, ("processing",), 30)
    time.sleep(1.5)
    last_ping = max(harness.notify.times("WATCHDOG=1"))
    time.sleep(1.5)
    # Alive, yet silent: systemd would kill it WatchdogSec after the last ping.
    assert worker.running()
    assert max(harness.notify.times("WATCHDOG=1")) == last_ping
    assert time.monotonic() - last_ping > 1.4
    # No systemd here: faulthandler's C thread (no GIL needed) dumps the stacks, then SIGALRM.
    # Killed by a signal (SIGALRM), not an exit code: systemd's Restart=on-abnormal restarts it.
    assert worker.wait_exit(30) == -signal.SIGALRM
    log = worker.output()
    assert "Timeout (0:00:14)!" in log
    assert "in hang_holding_gil" in log
    harness.ready_worker(CELERY_STABLE_TIME_LIMIT_SEC="2")
    record = wait_state(store, job_id, ("failed",), 30)
    assert "hung past the hard time limit of 2 s / watchdog" in record.error


def test_gil_releasing_hang_past_the_limit_fails_the_video_and_triggers(
    harness: Harness, store: JobStore
) -> None:
    worker = harness.ready_worker(WATCHDOG_USEC="1000000", CELERY_STABLE_TIME_LIMIT_SEC="2")
    job_id = harness.submit(video_spec(2.0, {"kind": "hang", "at_frame": 1}))
    wait_state(store, job_id, ("processing",), 30)
    deadline = time.monotonic() + 2  # at or after the task's own deadline
    record = wait_state(store, job_id, ("failed",), 30)
    assert record.error.startswith("exceeded the hard time limit of 2 s")
    wait_for(lambda: harness.notify.count("WATCHDOG=trigger"), 5, "WATCHDOG=trigger")
    trigger = harness.notify.times("WATCHDOG=trigger")[0]
    # Pings stop at the hard limit, before the monitor acts on it.
    assert all(when < deadline + 0.3 for when in harness.notify.times("WATCHDOG=1"))
    assert trigger > deadline + 1
    assert worker.wait_exit(30) == -signal.SIGABRT
    log = worker.output()
    assert "Thread 0x" in log
    assert "in fire" in log


def test_cooperative_deadline_fails_the_video_cleanly(harness: Harness, store: JobStore) -> None:
    worker = harness.ready_worker(WATCHDOG_USEC="1000000", CELERY_STABLE_TIME_LIMIT_SEC="2")
    slow = harness.submit(video_spec(5.0, {"kind": "slow", "seconds": 0.1}))
    after = harness.submit(video_spec(0.3))
    record = wait_state(store, slow, ("failed",), 30)
    assert record.error == "exceeded the hard time limit of 2 s"
    wait_state(store, after, ("done",), 30)
    assert worker.running()
    assert harness.notify.count("WATCHDOG=trigger") == 0
    assert not list(harness.output_dir.glob(f"*{slow}*"))


def test_a_stop_during_a_due_recycle_stops_instead_of_re_executing(
    harness: Harness, store: JobStore
) -> None:
    worker = harness.ready_worker(CELERY_STABLE_MAX_TASKS_PER_CHILD="1")
    job_id = harness.submit(video_spec(2.0, {"kind": "slow", "seconds": 0.05}))
    wait_state(store, job_id, ("processing",), 30)
    worker.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    # Warm shutdown: the running video is finished, then the worker exits 0, once.
    assert worker.wait_exit(30) == 0
    assert store.get(job_id).state == "done"  # type: ignore[union-attr]
    assert harness.notify.count("READY=1") == 1
    assert harness.notify.count("STOPPING=1") == 1
