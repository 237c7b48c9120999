"""systemctl reload (SIGHUP): the task finishes, then the new code and environment file, same
PID; a reload that would not start is refused and the worker goes on."""

from __future__ import annotations

import signal

from runtime_harness import Harness, wait_record

from celery_stable.ledger import Ledger
from celery_stable.testing import wait_for


def write_env(harness: Harness, **values: str) -> str:
    path = harness.tmp / "celery-stable.env"
    path.write_text("".join(f'{key}="{value}"\n' for key, value in values.items()))
    return str(path)


def test_a_reload_waits_for_the_task_then_runs_the_new_environment(
    harness: Harness, ledger: Ledger
) -> None:
    env_file = write_env(harness, PROJ_MARK="old", CELERY_STABLE_MAX_TASKS_PER_CHILD="10")
    worker = harness.ready_worker(
        CELERY_STABLE_ENV_FILE=env_file, PROJ_MARK="old", CELERY_STABLE_MAX_TASKS_PER_CHILD="10"
    )
    running = harness.send("proj.sleep", 3)
    wait_record(ledger, running, ("running",), 30)
    write_env(harness, PROJ_MARK="new", CELERY_STABLE_MAX_TASKS_PER_CHILD="7")
    worker.signal(signal.SIGHUP)
    # The task in progress is finished by the old image, not interrupted.
    record = wait_record(ledger, running, ("done",), 30)
    assert record.attempts == 1
    wait_for(lambda: harness.notify.count("READY=1") == 2, 30, "READY of the new image")
    assert worker.running()
    after = harness.send("proj.env", "PROJ_MARK")
    assert harness.app.AsyncResult(after).get(timeout=30) == "new"
    assert ledger.get(after).pid == worker.pid  # type: ignore[union-attr]
    wait_for(
        lambda: any("/7 tasks before recycle" in s for s in harness.notify.lines("STATUS=")),
        10,
        "the new limit in STATUS",
    )
    assert "re-executing in place (recycle: reload)" in worker.output()
    assert harness.notify.count("STOPPING=1") == 0


def test_a_reload_onto_an_app_that_does_not_load_is_refused(
    harness: Harness, ledger: Ledger
) -> None:
    env_file = write_env(harness, CELERY_STABLE_APP_MODULE="proj.celery_app")
    worker = harness.ready_worker(CELERY_STABLE_ENV_FILE=env_file)
    write_env(harness, CELERY_STABLE_APP_MODULE="proj.renamed_by_a_bad_deploy")
    worker.signal(signal.SIGHUP)
    wait_for(
        lambda: any(
            s.startswith("STATUS=reload refused: ") for s in harness.notify.lines("STATUS=")
        ),
        60,
        "the refusal in STATUS",
    )
    assert "reload refused, going on with the running code" in worker.output()
    assert "proj.renamed_by_a_bad_deploy" in worker.output()
    # Still the same image, still consuming.
    assert harness.notify.count("READY=1") == 1
    assert wait_record(ledger, harness.send("proj.add", 1, 1), ("done",), 30).pid == worker.pid


def test_check_app_says_whether_a_worker_would_start(harness: Harness) -> None:
    ok = harness.cli("check-app")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("proj.celery_app: ok, ")
    assert "proj.add" in ok.stdout
    bad = harness.cli("check-app", env=harness.env(CELERY_STABLE_APP_MODULE="proj.nowhere"))
    assert bad.returncode == 2
    assert "cannot load the Celery app 'proj.nowhere'" in bad.stderr
