"""What the video tests drive: a real redis-server, real worker processes, an sd_notify socket.

The shapes are the runtime's test fixtures (app/runtime/tests/conftest.py), pointed at this app;
the module has its own name so both suites can run in one pytest session. The test plays
systemd: it owns the NOTIFY_SOCKET datagram socket the worker reports to, reads the worker's
output (the journal), and starts a new worker when a test needs a supervisor.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import redis
from celery_stable.ledger import Ledger, TaskRecord

from video_renderer.celery_app import QUEUE, app
from video_renderer.jobs import VideoRecord, VideoStore
from video_renderer.tasks import RENDER_TASK

WORKER_ARGS = [
    "-m", "celery", "-A", "celery_stable.attach", "worker", "--pool=solo", "--concurrency=1",
    "--without-gossip", "--without-mingle", "--without-heartbeat", "--hostname=worker@test",
    f"--queues={QUEUE}", "--loglevel=INFO",
]  # fmt: skip
INIT_LINES = (
    "Worker process initialized avec optimisations anti-crash",
    "OpenCV configuré en single-thread",
    "Limite mémoire processus configurée (1GB)",
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


def video_spec(
    seconds: float = 1.0,
    fault: dict[str, Any] | None = None,
    *,
    width: int = 96,
    height: int = 64,
    fps: int = 10,
    text: str = "hello",
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "title": "test",
        "width": width,
        "height": height,
        "fps": fps,
        "slides": [
            {"text": text, "duration": seconds, "background": "#203040", "color": "#ffffff"}
        ],
    }
    if fault is not None:
        spec["fault"] = fault
    return spec


def ffprobe(path: Path) -> dict[str, Any]:
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
         "stream=codec_name,width,height,pix_fmt,nb_read_frames:format=duration", "-of", "json",
         str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    data = json.loads(result.stdout)
    stream = data["streams"][0]
    return {
        "codec": stream["codec_name"],
        "width": stream["width"],
        "height": stream["height"],
        "pix_fmt": stream["pix_fmt"],
        "frames": int(stream["nb_read_frames"]),
        "duration": float(data["format"]["duration"]),
    }


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

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

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


class Worker:
    def __init__(self, env: dict[str, str], log: Path, args: list[str] = WORKER_ARGS) -> None:
        self.env = env
        self.log = log
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, *self.args], env=self.env, stdout=out, stderr=subprocess.STDOUT
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
        """The end of a test: no warm shutdown to wait for (the next test starts from an empty
        Redis), and no ffmpeg of it left running."""
        if self.proc and self.proc.poll() is None:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()
            self.proc.kill()
            self.proc.wait(10)


class Harness:
    """Environments, workers, CLI runs and video submissions for one test."""

    def __init__(
        self, server: RedisServer, store: VideoStore, tmp: Path, notify: NotifyListener
    ) -> None:
        self.server = server
        self.store = store
        self.ledger: Ledger = store.ledger
        self.tmp = tmp
        self.notify = notify
        self.output_dir = tmp / "videos"
        self.workers: list[Worker] = []

    def env(self, **overrides: str) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            # PYTHONFAULTHANDLER too: the tracebacks must come from the runtime's own set-up.
            if not key.startswith(
                ("CELERY_", "VIDEO_RENDERER_", "NOTIFY_SOCKET", "WATCHDOG_", "SERVICE_RESULT",
                 "EXIT_", "PYTHONFAULTHANDLER")
            )
        }  # fmt: skip
        env.update(
            {
                "CELERY_BROKER_URL": self.server.url(0),
                "CELERY_STABLE_APP_MODULE": "video_renderer.celery_app",
                "CELERY_STABLE_GIVEUP_TASK": "video_renderer.mark_given_up",
                "CELERY_STABLE_HEARTBEAT_INTERVAL_SEC": "1",
                "CELERY_STABLE_STATS_INTERVAL_SEC": "60",
                "VIDEO_RENDERER_OUTPUT_DIR": str(self.output_dir),
                "VIDEO_RENDERER_FAULT_HOOKS": "1",
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
        return self.start_worker(WORKER_ARGS, self.env(**overrides))

    def start_worker(self, args: list[str], env: dict[str, str]) -> Worker:
        log = self.tmp / f"worker-{len(self.workers)}.log"
        worker = Worker(env, log, args).start()
        self.workers.append(worker)
        return worker

    def ready_worker(self, **overrides: str) -> Worker:
        before = self.notify.count("READY=1")
        worker = self.worker(**overrides)
        wait_for(lambda: self.notify.count("READY=1") > before or worker.exited(), 30, "READY=1")
        # Once READY, a worker may already be crashing on its first video: that's the test's.
        assert self.notify.count("READY=1") > before, worker.output()
        return worker

    def run(
        self, module: str, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", module, *args], env=env or self.env(), input=stdin,
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    def cli(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """The app's own command, ``video-renderer``."""
        return self.run("video_renderer", *args, **kwargs)

    def runtime_cli(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """The runtime's command, ``celery-stable``, on the same environment."""
        return self.run("celery_stable", *args, **kwargs)

    def submit(self, spec: dict[str, Any]) -> str:
        """What ``video-renderer submit`` does, in-process (the CLI has tests of its own)."""
        record = self.store.create(spec)
        app.send_task(RENDER_TASK, args=[record.id], task_id=record.id)
        return record.id

    def video(self, video_id: str) -> VideoRecord:
        record = self.store.get(video_id)
        assert record is not None, video_id
        return record

    def task(self, video_id: str) -> TaskRecord:
        record = self.ledger.get(video_id)
        assert record is not None, video_id
        return record

    def wait_video(self, video_id: str, states: tuple[str, ...], timeout: float) -> VideoRecord:
        def check() -> VideoRecord | None:
            record = self.store.get(video_id)
            return record if record and record.state in states else None

        return wait_for(check, timeout, f"video {video_id} to be {'/'.join(states)}")

    def wait_task(self, video_id: str, states: tuple[str, ...], timeout: float) -> TaskRecord:
        def check() -> TaskRecord | None:
            record = self.ledger.get(video_id)
            return record if record and record.state in states else None

        return wait_for(check, timeout, f"task {video_id} to be {'/'.join(states)} in the ledger")

    def files_of(self, video_id: str) -> list[str]:
        """Everything under the output directory named after the video (temp files included)."""
        if not self.output_dir.exists():
            return []
        return sorted(path.name for path in self.output_dir.iterdir() if video_id in path.name)

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
