"""Test support for an app under the runtime: a real Redis, real workers, the test as systemd.

What ``celery.contrib.testing`` is to Celery, for the runtime: an app's own tests start a real
``redis-server``, real worker processes (``celery-stable worker`` under solo, as the role's
unit runs them) and own the ``NOTIFY_SOCKET`` the worker reports to, so they can
assert on READY, STATUS and the watchdog pings as systemd would see them. The runtime's tests
and the demo app's use it; nothing here runs in production.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil
import redis

# Variables a test environment never inherits from the machine running the tests: the worker
# must get its configuration, its faulthandler and its systemd context from the test only.
FOREIGN_PREFIXES = (
    "CELERY_",
    "NOTIFY_SOCKET",
    "WATCHDOG_",
    "SERVICE_RESULT",
    "EXIT_",
    "PYTHONFAULTHANDLER",
)


def wait_for(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker_args(queue: str, *, by_hand: bool = False) -> list[str]:
    """The role's worker command line (``celery-stable worker``), for ``sys.executable``; with
    ``by_hand``, the one an operator may type: ``celery -A celery_stable.attach worker``."""
    command = ["-m", "celery", "-A", "celery_stable.attach"] if by_hand else ["-m", "celery_stable"]
    return [
        *command, "worker", "--pool=solo", "--concurrency=1",
        "--without-gossip", "--without-mingle", "--without-heartbeat", "--hostname=worker@test",
        f"--queues={queue}", "--loglevel=INFO",
    ]  # fmt: skip


class RedisServer:
    """A real redis-server on a free loopback port, persisting every write (appendfsync always),
    so that a restart in the middle of a test keeps what a production Redis would keep."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        if not shutil.which("redis-server"):
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",  # noqa: S607
             "--dir", str(self.workdir), "--save", "", "--appendonly", "yes",
             "--appendfsync", "always", "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port)
        wait_for(lambda: self._ping(client), 10, "redis-server")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ensure_running(self) -> None:
        if not self.running():
            self.start()

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


class WorkerProcess:
    """One worker process, its output in a file (the journal)."""

    def __init__(
        self, args: list[str], env: Mapping[str, str], log: Path, launcher: Sequence[str] = ()
    ) -> None:
        self.args = args
        self.env = dict(env)
        self.log = log
        # What runs the interpreter (e.g. `unshare --uts` for a worker on another "host").
        self.launcher = list(launcher)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*self.launcher, sys.executable, *self.args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
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

    def kill(self) -> None:
        """The end of a test: no warm shutdown to wait for, and no child of it left running."""
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(psutil.NoSuchProcess):
                for child in psutil.Process(self.proc.pid).children(recursive=True):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        child.kill()
            self.proc.kill()
            self.proc.wait(10)


class WorkerHarness:
    """Environments, workers and command runs for one test; a suite subclasses it with its
    app's variables (``base_env``) and its queue."""

    queue = "celery"

    def __init__(self, server: RedisServer, tmp: Path, notify: NotifyListener) -> None:
        self.server = server
        self.tmp = tmp
        self.notify = notify
        self.workers: list[WorkerProcess] = []

    def base_env(self) -> dict[str, str]:
        return {"CELERY_BROKER_URL": self.server.url(0)}

    def env(self, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_PREFIXES)}
        env.update(
            {
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
        env.update(self.base_env())
        env.update(overrides)
        return env

    def worker(self, **overrides: str) -> WorkerProcess:
        return self.start_worker(worker_args(self.queue), self.env(**overrides))

    def start_worker(
        self, args: list[str], env: Mapping[str, str], launcher: Sequence[str] = ()
    ) -> WorkerProcess:
        log = self.tmp / f"worker-{len(self.workers)}.log"
        worker = WorkerProcess(args, env, log, launcher).start()
        self.workers.append(worker)
        return worker

    def ready_worker(self, *, launcher: Sequence[str] = (), **overrides: str) -> WorkerProcess:
        before = self.notify.count("READY=1")
        worker = self.start_worker(worker_args(self.queue), self.env(**overrides), launcher)
        wait_for(lambda: self.notify.count("READY=1") > before or worker.exited(), 30, "READY=1")
        # Once READY, a worker may already be crashing on its first task: that's the test's.
        assert self.notify.count("READY=1") > before, worker.output()
        return worker

    def run(
        self,
        module: str,
        *args: str,
        env: Mapping[str, str] | None = None,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", module, *args], env=dict(env or self.env()), input=stdin,
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    def runtime_cli(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """``celery-stable`` on the test's environment."""
        return self.run("celery_stable", *args, **kwargs)

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()


def on_another_host(hostname: str) -> list[str]:
    """A launcher that runs a worker under a hostname of its own (a UTS namespace: root only),
    so that one machine can play a second host of the fleet."""
    return ["unshare", "--uts", "--", "sh", "-c", 'hostname "$0" && exec "$@"', hostname]
