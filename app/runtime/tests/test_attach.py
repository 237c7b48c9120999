"""The runtime attaches to an app it has never seen: READY, STATUS, the app's own init kept."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import redis
from celery import Celery
from runtime_harness import QUEUE, WORKER_ARGS, Harness, wait_record

from celery_stable import protect
from celery_stable.ledger import Ledger
from celery_stable.settings import Settings
from celery_stable.testing import wait_for, worker_args

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


def test_the_documented_celery_command_still_runs_the_protected_app(
    harness: Harness, ledger: Ledger
) -> None:
    """`celery -A celery_stable.attach worker`, typed by hand, is the same worker as the unit's
    `celery-stable worker`: READY once consuming, every task in the ledger."""
    before = harness.notify.count("READY=1")
    worker = harness.start_worker(worker_args(QUEUE, by_hand=True), harness.env())
    wait_for(lambda: harness.notify.count("READY=1") > before or worker.exited(), 30, "READY=1")
    assert harness.notify.count("READY=1") > before, worker.output()
    task_id = harness.send("proj.add", 2, 3)
    assert wait_record(ledger, task_id, ("done",), 30).pid == worker.pid


USER_OPTIONS_APP = """
import click
from celery import Celery

app = Celery("withoptions", broker="redis://127.0.0.1:1/0", set_as_current=False)
app.user_options["worker"].add(click.Option(["--team-flag"], is_flag=True, help="the team's"))
app.user_options["preload"].add(click.Option(["--team-preload"], help="the team's preload"))
"""


def test_celery_stable_worker_takes_the_options_celery_worker_takes(
    harness: Harness, tmp_path: Path
) -> None:
    """Same options as Celery's group gives its worker command: its own, the app's user options
    (worker and preload), CELERY_WORKER_* from the environment; same errors, same exit codes."""
    (tmp_path / "withoptions.py").write_text(USER_OPTIONS_APP)
    env = harness.env(CELERY_STABLE_APP_MODULE="withoptions", CELERY_STABLE_APP_PATH=str(tmp_path))

    def run(by_hand: bool, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        command = worker_args(QUEUE, by_hand=by_hand)
        command = command[: command.index("worker") + 1]
        return subprocess.run(
            [sys.executable, *command, *args], env={**env, **extra},
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    ours, celerys = run(False, "--help"), run(True, "--help")
    assert (ours.returncode, celerys.returncode) == (0, 0), ours.stderr + celerys.stderr
    assert "--team-flag" in ours.stdout
    assert "--team-preload" in ours.stdout
    # Only the program's name in the usage line differs.
    assert ours.stdout.splitlines()[1:] == celerys.stdout.splitlines()[1:]
    for args, extra in ((["--bogus"], {}), ([], {"CELERY_WORKER_POOL": "nope"})):
        ours, celerys = run(False, *args, **extra), run(True, *args, **extra)
        assert ours.returncode == celerys.returncode == 2, ours.stderr
        assert ours.stderr.splitlines()[-1] == celerys.stderr.splitlines()[-1]
    # An app that does not load: the runtime's configuration error, EX_CONFIG, either way.
    missing = {"CELERY_STABLE_APP_MODULE": "proj.nowhere"}
    assert run(False, **missing).returncode == run(True, **missing).returncode == 78
