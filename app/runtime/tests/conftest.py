"""Fixtures: a real redis-server, real worker processes of a bare Celery app, an sd_notify socket.

The app under test (tests/plainapp/proj) is written as a team writes one and imports nothing of
celery-stable; the workers run it the way the role's unit does, through
``celery -A celery_stable.attach``. The test plays systemd: it owns the NOTIFY_SOCKET datagram
socket the worker reports to, reads the worker's output (the journal), and restarts the worker
when a test needs a supervisor.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from helpers import wait_for

from celery_stable.ledger import Ledger, TaskRecord, redis_client

PLAINAPP = Path(__file__).resolve().parent / "plainapp"
sys.path.insert(0, str(PLAINAPP))

from proj.celery_app import app as proj_app  # noqa: E402

QUEUE = "proj"
WORKER_ARGS = [
    "-m", "celery", "-A", "celery_stable.attach", "worker", "--pool=solo", "--concurrency=1",
    "--without-gossip", "--without-mingle", "--without-heartbeat", "--hostname=worker@test",
    f"--queues={QUEUE}", "--loglevel=INFO",
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        # appendfsync always: a restart mid-test keeps every acknowledged write, as a
        # production Redis with persistence would.
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.workdir), "--save", "", "--appendonly", "yes",
             "--appendfsync", "always", "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port)
        wait_for(lambda: self._ping(client), 10, "redis-server")

    @staticmethod
    def _ping(client: redis.Redis) -> bool:
        try:
            return bool(client.ping())
        except redis.exceptions.RedisError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    proj_app.conf.broker_url = server.url(0)
    proj_app.conf.result_backend = server.url(1)
    yield server
    server.stop()


@pytest.fixture
def ledger(redis_server: RedisServer) -> Ledger:
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    redis.Redis.from_url(redis_server.url(0)).flushall()
    return Ledger(redis_client(redis_server.url(0)))


class NotifyListener:
    """Records sd_notify datagrams, the way systemd receives them."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="sdn", dir="/tmp")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            self.messages.extend((now, line) for line in data.decode().splitlines())

    def lines(self, prefix: str = "") -> list[str]:
        return [line for _, line in list(self.messages) if line.startswith(prefix)]

    def times(self, line: str) -> list[float]:
        return [when for when, text in list(self.messages) if text == line]

    def count(self, line: str) -> int:
        return len(self.times(line))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def notify() -> Iterator[NotifyListener]:
    listener = NotifyListener()
    yield listener
    listener.close()


class Worker:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, *WORKER_ARGS], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class Harness:
    """Builds environments, workers, CLI runs and task submissions for one test."""

    def __init__(self, server: RedisServer, tmp: Path, notify: NotifyListener) -> None:
        self.server = server
        self.tmp = tmp
        self.notify = notify
        self.hook_log = tmp / "given-up.jsonl"
        self.workers: list[Worker] = []
        self.app = proj_app

    def env(self, **overrides: str) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            # PYTHONFAULTHANDLER too: the tracebacks must come from the runtime's own set-up.
            if not key.startswith(
                ("CELERY_", "NOTIFY_SOCKET", "WATCHDOG_", "SERVICE_RESULT", "EXIT_",
                 "PYTHONFAULTHANDLER", "PROJ_")
            )
        }  # fmt: skip
        env.update(
            {
                "CELERY_BROKER_URL": self.server.url(0),
                "CELERY_RESULT_BACKEND": self.server.url(1),
                "CELERY_STABLE_APP_MODULE": "proj.celery_app",
                "CELERY_STABLE_APP_PATH": str(PLAINAPP),
                "CELERY_STABLE_GIVEUP_TASK": "proj.on_given_up",
                "CELERY_STABLE_HEARTBEAT_INTERVAL_SEC": "1",
                "CELERY_STABLE_STATS_INTERVAL_SEC": "60",
                "PROJ_HOOK_LOG": str(self.hook_log),
                "NOTIFY_SOCKET": self.notify.path,
                "PYTHONUNBUFFERED": "1",
                "OMP_NUM_THREADS": "1",
                "MALLOC_ARENA_MAX": "2",
            }
        )
        env.update(overrides)
        return env

    def worker(self, **overrides: str) -> Worker:
        log = self.tmp / f"worker-{len(self.workers)}.log"
        worker = Worker(self.env(**overrides), log).start()
        self.workers.append(worker)
        return worker

    def ready_worker(self, **overrides: str) -> Worker:
        before = self.notify.count("READY=1")
        worker = self.worker(**overrides)
        wait_for(lambda: self.notify.count("READY=1") > before or worker.exited(), 30, "READY=1")
        # Once READY, a worker may already be crashing on its first task: that's the test's.
        assert self.notify.count("READY=1") > before, worker.output()
        return worker

    def send(self, name: str, *args: Any, **options: Any) -> str:
        return self.app.send_task(name, args=list(args), queue=QUEUE, **options).id

    def cli(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "celery_stable", *args],
            env=env or self.env(), capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    def given_up(self) -> list[dict[str, Any]]:
        import json  # noqa: PLC0415

        if not self.hook_log.exists():
            return []
        return [json.loads(line) for line in self.hook_log.read_text().splitlines()]

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()


@pytest.fixture
def harness(
    redis_server: RedisServer, ledger: Ledger, tmp_path: Path, notify: NotifyListener
) -> Iterator[Harness]:
    h = Harness(redis_server, tmp_path, notify)
    yield h
    h.close()


def wait_record(
    ledger: Ledger, task_id: str, states: tuple[str, ...], timeout: float
) -> TaskRecord:
    def check() -> TaskRecord | None:
        record = ledger.get(task_id)
        return record if record and record.state in states else None

    return wait_for(check, timeout, f"task {task_id} to be {'/'.join(states)}")
