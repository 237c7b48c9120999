"""The Celery application: ``celery -A celery_stable.celery_app worker|beat``."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from celery import Celery, signals

from .settings import ConfigError, Settings
from .tasks import FLEET_TASK, RENDER_TASK, fleet_report, run_render
from .worker import WorkerRuntime

log = logging.getLogger(__name__)

# EX_SOFTWARE: an internal error, not a crash (Restart=on-abnormal leaves it for the alert).
EX_INIT_FAILED = 70

SEND_RETRY_POLICY = {"max_retries": 5, "interval_start": 0, "interval_step": 0.5, "interval_max": 2}


def create_app(settings: Settings) -> Celery:
    app = Celery("celery_stable", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        # The guide's pool, kept: solo avoids forking cv2/BLAS state; one task at a time.
        worker_pool="solo",
        worker_concurrency=1,
        worker_prefetch_multiplier=1,
        task_acks_late=True,
        task_ignore_result=True,
        result_backend=None,
        task_default_queue=settings.queue,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        # Longer than any task may run, so Redis never hands a running video to a second worker.
        broker_transport_options={"visibility_timeout": settings.visibility_timeout},
        worker_send_task_events=False,
        beat_schedule={
            "fleet-report": {
                "task": FLEET_TASK,
                "schedule": float(settings.stats_interval_sec),
                # A report nobody ran in time is worthless; don't let them pile up.
                "options": {"expires": settings.stats_interval_sec, "queue": settings.queue},
            },
        },
    )

    def enqueue(job_id: str, token: str) -> None:
        app.send_task(
            RENDER_TASK,
            args=[job_id, token],
            queue=settings.queue,
            retry=True,
            retry_policy=SEND_RETRY_POLICY,
        )

    runtime = WorkerRuntime(settings, enqueue)
    app.enqueue = enqueue  # type: ignore[attr-defined]

    @app.task(name=RENDER_TASK, ignore_result=True)
    def render_video(job_id: str, token: str) -> str:
        return run_render(runtime, job_id, token)

    @app.task(name=FLEET_TASK, ignore_result=True)
    def fleet_report_task() -> dict[str, int]:
        return fleet_report(runtime)

    def on_process_init(**_: Any) -> None:
        # Celery logs a receiver's exception and carries on: a worker whose init failed would
        # then consume videos without its limits. Stop instead, with a non-signal exit code,
        # so systemd marks the unit failed and alerts rather than restarting it in a loop.
        try:
            runtime.on_process_init()
        except Exception:
            log.critical("worker init failed; stopping before consuming", exc_info=True)
            logging.shutdown()
            os._exit(EX_INIT_FAILED)

    def on_ready(**_: Any) -> None:
        runtime.on_ready()

    def on_postrun(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "name", None) == RENDER_TASK:
            runtime.on_render_finished()
        else:
            runtime.check_recycle()

    def on_shutting_down(**_: Any) -> None:
        runtime.on_stop_requested()

    def on_shutdown(**_: Any) -> None:
        runtime.on_shutdown()

    uid = f"celery-stable-{id(app)}"
    signals.worker_process_init.connect(on_process_init, weak=False, dispatch_uid=uid)
    signals.worker_ready.connect(on_ready, weak=False, dispatch_uid=uid)
    signals.task_postrun.connect(on_postrun, weak=False, dispatch_uid=uid)
    signals.worker_shutting_down.connect(on_shutting_down, weak=False, dispatch_uid=uid)
    signals.worker_shutdown.connect(on_shutdown, weak=False, dispatch_uid=uid)
    return app


def _settings_or_exit() -> Settings:
    try:
        return Settings.from_env(os.environ)
    except ConfigError as exc:
        # Exit 2 (not a signal): systemd's Restart=on-abnormal does not loop on a bad file.
        print(f"celery-stable: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def __getattr__(name: str) -> Celery:
    # ``app`` is built on first use, not at import: the CLI imports create_app with the settings
    # of its --env-file, and a test can import this module without a valid environment.
    if name == "app":
        built = create_app(_settings_or_exit())
        globals()["app"] = built
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
