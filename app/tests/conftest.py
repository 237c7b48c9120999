"""Fixtures: a real redis-server, real worker processes, and an sd_notify socket to listen on.

The test plays systemd: it owns the NOTIFY_SOCKET datagram socket the worker reports to, reads
the worker's stderr (the journal), and restarts the worker when a test needs a supervisor.
"""

from __future__ import annotations

import json
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

from celery_stable.jobs import JobStore, redis_client

WORKER_ARGS = [
    "-m",
    "celery",
    "-A",
    "celery_stable.celery_app",
    "worker",
    "--pool=solo",
    "--concurrency=1",
    "--without-gossip",
    "--without-mingle",
    "--without-heartbeat",
    "--hostname=worker@test",
    "--queues=videos",
    "--loglevel=INFO",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        # appendfsync always: a restart mid-test keeps every acknowledged write, as a
        # production Redis with persistence would.
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.workdir),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--protected-mode",
                "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
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
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    redis.Redis.from_url(redis_server.url).flushall()
    return redis_server.url


@pytest.fixture
def store(redis_url: str) -> JobStore:
    return JobStore(redis_client(redis_url))


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

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class Harness:
    """Builds environments, workers and CLI runs for one test."""

    def __init__(self, redis_url: str, tmp: Path, notify: NotifyListener) -> None:
        self.redis_url = redis_url
        self.tmp = tmp
        self.notify = notify
        self.output_dir = tmp / "videos"
        self.workers: list[Worker] = []

    def env(self, **overrides: str) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            # PYTHONFAULTHANDLER too: the tracebacks must come from the app's own set-up.
            if not key.startswith(
                (
                    "CELERY_STABLE_",
                    "NOTIFY_SOCKET",
                    "WATCHDOG_",
                    "SERVICE_RESULT",
                    "EXIT_",
                    "PYTHONFAULTHANDLER",
                )
            )
        }
        env.update(
            {
                "CELERY_STABLE_BROKER_URL": self.redis_url,
                "CELERY_STABLE_OUTPUT_DIR": str(self.output_dir),
                "CELERY_STABLE_FAULT_HOOKS": "1",
                "CELERY_STABLE_HEARTBEAT_INTERVAL_SEC": "1",
                "CELERY_STABLE_STATS_INTERVAL_SEC": "60",
                "NOTIFY_SOCKET": self.notify.path,
                "PYTHONUNBUFFERED": "1",
                "OMP_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1",
                "OPENBLAS_NUM_THREADS": "1",
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
        assert worker.proc is not None
        wait_for(
            lambda: self.notify.count("READY=1") > before or worker.exited(),
            30,
            "READY=1",
        )
        # Once READY, a worker may already be crashing on its first video: that's the test's.
        assert self.notify.count("READY=1") > before, worker.output()
        return worker

    def cli(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "celery_stable", *args],
            env=env or self.env(),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def submit(self, spec: dict[str, Any]) -> str:
        path = self.tmp / f"spec-{time.monotonic_ns()}.json"
        path.write_text(json.dumps(spec))
        result = self.cli("submit", str(path))
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()


@pytest.fixture
def harness(redis_url: str, tmp_path: Path, notify: NotifyListener) -> Iterator[Harness]:
    h = Harness(redis_url, tmp_path, notify)
    yield h
    h.close()
