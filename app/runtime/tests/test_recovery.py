"""Stuck tasks, the operator's retry, lost messages, late telling, and Redis going away."""

from __future__ import annotations

import itertools
import signal
import socket
import time

from runtime_harness import Harness, RedisServer, WorkerProcess, wait_record

from celery_stable.ledger import Ledger
from celery_stable.testing import on_another_host, wait_for


def test_recovery_gives_up_a_task_whose_worker_stopped_beating(
    harness: Harness, ledger: Ledger
) -> None:
    worker = harness.ready_worker()
    # Long enough that it cannot end before the freeze on a slow machine (a CLI call there takes
    # seconds): a 4-s task once finished first, and there was nothing left to find stuck.
    task_id = harness.send("proj.sleep", 15)
    wait_record(ledger, task_id, ("running",), 30)
    # A healthy task that reports no progress keeps beating: nothing to recover.
    time.sleep(2.5)
    assert "nothing to recover" in harness.cli("recover", "--stuck-after", "2").stdout
    worker.signal(signal.SIGSTOP)  # the host froze: no heartbeat any more
    try:
        time.sleep(3)
        result = harness.cli("recover", "--stuck-after", "2")
        assert result.returncode == 0, result.stderr
        assert f"{task_id} (proj.sleep): failed (stuck: no heartbeat for " in result.stdout
    finally:
        worker.signal(signal.SIGCONT)
    record = ledger.get(task_id)
    assert record is not None
    assert (record.state, record.cause) == ("failed", "stuck")
    assert f"`celery-stable retry {task_id}`" in record.reason
    # When it wakes up, the old attempt finds the task taken from it and records nothing.
    wait_for(lambda: "outcome not recorded" in worker.output(), 60, "the stale outcome dropped")
    assert ledger.get(task_id).state == "failed"  # type: ignore[union-attr]
    hook = wait_for(harness.given_up, 30, "the give-up hook")
    assert (hook[0]["task_id"], hook[0]["cause"]) == (task_id, "stuck")


def test_retry_sends_the_original_message_again(harness: Harness, ledger: Ledger) -> None:
    worker = harness.ready_worker(CELERY_STABLE_MAX_CRASHES="1")
    task_id = harness.send("proj.crash_once", str(harness.tmp / "marker"))
    assert worker.wait_exit(30) == -signal.SIGSEGV
    reap = harness.cli("reap", env=harness.env(CELERY_STABLE_MAX_CRASHES="1"))
    assert f"{task_id} (proj.crash_once): failed (crashed the worker 1 times" in reap.stdout
    assert harness.cli("retry", "unknown").returncode == 4
    result = harness.cli("retry", task_id)
    assert result.returncode == 0, result.stderr
    assert "its original message is back on its queue" in result.stdout
    harness.ready_worker(CELERY_STABLE_MAX_CRASHES="1")
    record = wait_record(ledger, task_id, ("done",), 60)
    assert (record.attempts, record.crashes) == (2, 0)
    assert harness.app.AsyncResult(task_id).get(timeout=10) == "survived"
    assert harness.cli("retry", task_id).returncode == 5


def test_a_requeued_task_whose_message_the_broker_lost_is_sent_again(
    harness: Harness, ledger: Ledger
) -> None:
    worker = harness.ready_worker()
    task_id = harness.send("proj.crash_once", str(harness.tmp / "marker"))
    assert worker.wait_exit(30) == -signal.SIGSEGV
    assert "requeued" in harness.cli("reap").stdout
    ledger.client.delete("proj")  # a Redis that lost the queue (no persistence, a failover)
    ledger.client.hset(ledger.key(task_id), "changed_at", time.time() - 60)
    result = harness.cli("recover", "--stuck-after", "30")
    assert f"{task_id} (proj.crash_once): resent (its message was missing" in result.stdout
    assert "nothing to recover" in harness.cli("recover", "--stuck-after", "30").stdout
    harness.ready_worker()
    assert wait_record(ledger, task_id, ("done",), 30).attempts == 2


def test_an_app_told_late_when_it_could_not_be_loaded(harness: Harness, ledger: Ledger) -> None:
    worker = harness.ready_worker(CELERY_STABLE_MAX_CRASHES="1")
    task_id = harness.send("proj.crash_always", "v1")
    assert worker.wait_exit(30) == -signal.SIGSEGV
    broken = harness.env(CELERY_STABLE_MAX_CRASHES="1", CELERY_STABLE_APP_MODULE="proj.gone")
    result = harness.cli("reap", env=broken)
    assert result.returncode == 0, result.stderr
    assert "cannot load the Celery app 'proj.gone'" in result.stderr
    record = ledger.get(task_id)
    assert (record.state, record.notified) == ("failed", False)  # type: ignore[union-attr]
    ledger.client.hset(ledger.key(task_id), "finished_at", time.time() - 60)
    result = harness.cli("recover")
    assert f"{task_id} (proj.crash_always): notified" in result.stdout
    assert ledger.get(task_id).notified  # type: ignore[union-attr]
    assert harness.app.AsyncResult(task_id).state == "FAILURE"
    harness.ready_worker()
    hook = wait_for(harness.given_up, 30, "the give-up hook")
    assert [entry["task_id"] for entry in hook] == [task_id]


def test_the_worker_waits_for_a_late_broker_and_extends_its_start(
    harness: Harness, tmp_path
) -> None:
    late = RedisServer(tmp_path)
    worker: WorkerProcess = harness.worker(CELERY_BROKER_URL=late.url(0))
    wait_for(
        lambda: "waiting for the broker at redis://127.0.0.1:" in worker.output(), 60, "waiting"
    )
    assert harness.notify.count("READY=1") == 0
    assert harness.notify.lines("EXTEND_TIMEOUT_USEC=30000000")
    assert "STATUS=waiting for broker" in harness.notify.lines("STATUS=")
    late.start()
    try:
        wait_for(lambda: harness.notify.count("READY=1") == 1, 60, "READY once Redis is up")
    finally:
        worker.kill()
        late.stop()


def test_a_short_redis_restart_mid_task_loses_no_outcome(
    harness: Harness, ledger: Ledger, redis_server: RedisServer
) -> None:
    harness.ready_worker()
    task_id = harness.send("proj.sleep", 3)
    wait_record(ledger, task_id, ("running",), 30)
    redis_server.stop()
    time.sleep(2)
    redis_server.start()
    record = wait_record(ledger, task_id, ("done",), 60)
    assert record.attempts == 1


def test_a_redis_that_stops_answering_does_not_stop_the_watchdog(
    harness: Harness, ledger: Ledger, redis_server: RedisServer
) -> None:
    """A partition (packets dropped, not refused): SIGSTOP makes Redis accept and never answer."""
    worker = harness.ready_worker(WATCHDOG_USEC="2000000")
    task_id = harness.send("proj.sleep", 9)
    wait_record(ledger, task_id, ("running",), 30)
    assert redis_server.proc is not None
    stopped = time.monotonic()
    redis_server.proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(6)
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
    pings = [t for t in harness.notify.times("WATCHDOG=1") if t >= stopped - 1]
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    # WatchdogSec=2 is pinged every 0.5 s; systemd would kill after a 2 s silence.
    assert pings
    assert max(gaps) < 1.5, gaps
    assert pings[-1] > stopped + 5.5
    record = wait_record(ledger, task_id, ("done",), 60)
    assert record.attempts == 1
    assert worker.running()


def test_a_lost_hosts_task_is_put_back_by_another_host_as_a_crash(
    harness: Harness, ledger: Ledger
) -> None:
    """A power cut: no ExecStopPost, no start-up reap will ever run there. A live host's worker
    sees the lost host's sign of life age and puts its task back, a crash toward K."""
    lost = harness.ready_worker(launcher=on_another_host("lost-host"))
    task_id = harness.send("proj.sleep", 6)
    record = wait_record(ledger, task_id, ("running",), 30)
    assert record.host == "lost-host"
    survivor = harness.ready_worker()
    lost.kill()
    killed = time.monotonic()
    done = wait_record(ledger, task_id, ("done",), 60)
    assert (done.attempts, done.crashes, done.host) == (2, 1, socket.gethostname())
    assert time.monotonic() - killed < 30
    assert (
        f"task of a lost host: {task_id} (proj.sleep): requeued (crash 1/2: host lost-host lost: "
        "no sign of life for " in survivor.output()
    )
