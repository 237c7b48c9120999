"""What the runtime's tests drive: a bare Celery app (plainapp/proj) under real workers.

The app is written as a team writes one and imports nothing of celery-stable; the workers run
it the way the role's unit does, through ``celery-stable worker`` (``celery_stable.attach``).
The machinery (Redis, workers, the sd_notify socket) is :mod:`celery_stable.testing`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from celery_stable.ledger import Ledger, TaskRecord
from celery_stable.testing import (
    NotifyListener,
    RedisServer,
    WorkerHarness,
    WorkerProcess,
    wait_for,
    worker_args,
)

PLAINAPP = Path(__file__).resolve().parent / "plainapp"
sys.path.insert(0, str(PLAINAPP))

from proj.celery_app import app as proj_app  # noqa: E402

QUEUE = "proj"
WORKER_ARGS = worker_args(QUEUE)

__all__ = [
    "PLAINAPP",
    "QUEUE",
    "WORKER_ARGS",
    "Harness",
    "NotifyListener",
    "RedisServer",
    "WorkerProcess",
    "proj_app",
    "wait_for",
    "wait_record",
]


class Harness(WorkerHarness):
    """Workers of the bare app, its tasks sent by its own producer, the runtime's CLI."""

    queue = QUEUE

    def __init__(self, server: RedisServer, tmp: Path, notify: NotifyListener) -> None:
        super().__init__(server, tmp, notify)
        self.hook_log = tmp / "given-up.jsonl"
        self.app = proj_app

    def base_env(self) -> dict[str, str]:
        return {
            "CELERY_BROKER_URL": self.server.url(0),
            "CELERY_RESULT_BACKEND": self.server.url(1),
            "CELERY_STABLE_APP_MODULE": "proj.celery_app",
            "CELERY_STABLE_APP_PATH": str(PLAINAPP),
            "CELERY_STABLE_GIVEUP_TASK": "proj.on_given_up",
            "PROJ_HOOK_LOG": str(self.hook_log),
        }

    def env(self, **overrides: str) -> dict[str, str]:
        env = super().env(**overrides)
        # The team's own knobs come from the test only.
        for key in [k for k in env if k.startswith("PROJ_") and k not in overrides]:
            if key != "PROJ_HOOK_LOG":
                del env[key]
        return env

    def send(self, name: str, *args: Any, **options: Any) -> str:
        return self.app.send_task(name, args=list(args), queue=QUEUE, **options).id

    def cli(self, *args: str, **kwargs: Any) -> Any:
        return self.runtime_cli(*args, **kwargs)

    def given_up(self) -> list[dict[str, Any]]:
        if not self.hook_log.exists():
            return []
        return [json.loads(line) for line in self.hook_log.read_text().splitlines()]


def wait_record(
    ledger: Ledger, task_id: str, states: tuple[str, ...], timeout: float
) -> TaskRecord:
    def check() -> TaskRecord | None:
        record = ledger.get(task_id)
        return record if record and record.state in states else None

    return wait_for(check, timeout, f"task {task_id} to be {'/'.join(states)}")
