"""The runtime attaches to an app it has never seen: READY, STATUS, the app's own init kept."""

from __future__ import annotations

import subprocess
import sys

import redis
from celery import Celery
from runtime_harness import QUEUE, WORKER_ARGS, Harness, wait_record

from celery_stable import protect
from celery_stable.ledger import Ledger
from celery_stable.settings import Settings
from celery_stable.testing import wait_for

INIT_LINES = (
    "Worker process initialized avec optimisations anti-crash",
    "Limite mémoire processus configurée (1GB)",
)


def test_ready_once_consuming_and_status_names_the_running_task(
    harness: Harness, ledger: Ledger
) -> None:
    worker = harness.ready_worker()
    output = worker.output()
    # The app's own worker_process_init handler ran, then the runtime's init.
    assert output.index("proj: worker_process_init ran") < output.index(INIT_LINES[0])
    for line in INIT_LINES:
        assert line in output
    assert harness.notify.lines("EXTEND_TIMEOUT_USEC=")
    task_id = harness.send("proj.sleep", 1.5)
    wait_for(
        lambda: (
            f"STATUS=running proj.sleep[{task_id}] · 1/10 tasks before recycle · RSS "
            in " ".join(harness.notify.lines("STATUS="))
        ),
        10,
        "a STATUS line naming the running task",
    )
    record = wait_record(ledger, task_id, ("done",), 30)
    assert (record.name, record.attempts, record.crashes, record.pid) == (
        "proj.sleep",
        1,
        0,
        worker.pid,
    )
    assert record.time_limit == 900
    wait_for(
        lambda: any(s.startswith("STATUS=idle · 1/10 tasks before recycle · RSS ")
                    for s in harness.notify.lines("STATUS=")),
        10, "idle STATUS",
    )  # fmt: skip
    assert harness.notify.count("READY=1") == 1
    assert harness.app.AsyncResult(task_id).get(timeout=10) == 1.5


def test_an_app_that_opts_in_itself_reports_progress(harness: Harness, ledger: Ledger) -> None:
    harness.ready_worker(CELERY_STABLE_APP_MODULE="optin")
    task_id = harness.app.send_task("optin.count", args=[8, 0.25], queue="proj").id
    wait_for(
        lambda: any(f"STATUS=running optin.count[{task_id}] (frame " in s
                    for s in harness.notify.lines("STATUS=")),
        10, "a STATUS line with the task's progress",
    )  # fmt: skip
    record = wait_record(ledger, task_id, ("done",), 30)
    assert record.progress.startswith("frame ")
    assert record.progress.endswith("/8")
    assert harness.app.AsyncResult(task_id).get(timeout=10) == [True, 900.0]


def test_an_app_without_a_broker_uses_the_runtimes_default() -> None:
    """Celery's default (amqp://localhost) would split the consumer and the ledger."""
    app = Celery("nobroker", set_as_current=False)
    protect(app, Settings.from_env({}))
    connection = app.connection_for_write()
    assert (connection.transport_cls, connection.hostname, connection.port) == (
        "redis",
        "127.0.0.1",
        6379,
    )
    named = Celery("named", broker="redis://elsewhere:6380/3", set_as_current=False)
    protect(named, Settings.from_env({}))
    assert named.conf.broker_url == "redis://elsewhere:6380/3"


def test_a_prefork_worker_is_refused_with_the_fix(harness: Harness) -> None:
    args = [a for a in WORKER_ARGS if not a.startswith(("--pool", "--concurrency"))]
    result = subprocess.run(
        [sys.executable, *args, "--pool=prefork", "--concurrency=2"],
        env=harness.env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "start the worker with --pool=solo --concurrency=1" in result.stdout + result.stderr


def test_an_app_that_cannot_be_loaded_is_a_configuration_error(harness: Harness) -> None:
    result = subprocess.run(
        [sys.executable, *WORKER_ARGS],
        env=harness.env(CELERY_STABLE_APP_MODULE="proj.nowhere"),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 78, result.stderr
    assert "cannot load the Celery app 'proj.nowhere' (celery_stable_app_module)" in result.stderr


def test_a_worker_without_a_required_command_exits_without_consuming(
    harness: Harness, ledger: Ledger
) -> None:
    task_id = harness.send("proj.add", 2, 3)
    bin_dir = harness.tmp / "bin"
    bin_dir.mkdir()
    (bin_dir / "ffmpeg").write_text("#!/bin/sh\n")
    (bin_dir / "ffmpeg").chmod(0o644)
    worker = harness.worker(CELERY_STABLE_REQUIRED_COMMANDS="ffmpeg", PATH=str(bin_dir))
    # EX_CONFIG: systemd's Restart=on-abnormal leaves it stopped until the host is fixed.
    assert worker.wait_exit(60) == 78, worker.output()
    assert (
        "configuration error, not consuming: celery_stable_required_commands "
        f"(CELERY_STABLE_REQUIRED_COMMANDS) requires 'ffmpeg', but {bin_dir / 'ffmpeg'} is not "
        "executable" in worker.output()
    )
    assert harness.notify.count("READY=1") == 0
    assert any(line.startswith("STATUS=configuration error:") for line in harness.notify.lines())
    # The task was never taken: still in the queue, unknown to the ledger.
    assert redis.Redis.from_url(harness.server.url(0)).llen(QUEUE) == 1
    assert ledger.get(task_id) is None
    harness.ready_worker(CELERY_STABLE_REQUIRED_COMMANDS="ffmpeg", PATH=f"{bin_dir}:/usr/bin:/bin")
    assert wait_record(ledger, task_id, ("done",), 30).attempts == 1
