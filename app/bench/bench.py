"""Benchmark of what the runtime costs the video renderer (not a test): prints one table.

    python app/bench/bench.py [--runs 15]

Starts its own redis-server on a loopback port and real worker processes, run as the role's
unit runs them (``celery -A celery_stable.attach worker`` with
``CELERY_STABLE_APP_MODULE=video_renderer.celery_app``), listening on an sd_notify socket as
systemd would. Measures:
  * per-task overhead: submit-to-done through the worker vs calling the renderer directly;
  * recycle dead time: STATUS=recycling (sent as the task returns, just before its ack) to the
    READY=1 of the re-executed image;
  * idle worker RSS, after start and after a re-exec;
  * SIGSEGV to resolved (the runtime's ledger puts the video back): through the ExecStopPost
    hook (`celery-stable reap`) and through the start-up reap of the next worker.
Needs the runtime and the app installed (app/runtime, app/video), redis-server and ffmpeg.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import psutil
from celery_stable.ledger import redis_client

from video_renderer.celery_app import app
from video_renderer.jobs import VideoStore
from video_renderer.render import render_video
from video_renderer.spec import validate_spec
from video_renderer.tasks import RENDER_TASK

WORKER = [
    "-m", "celery", "-A", "celery_stable.attach", "worker", "--pool=solo",
    "--concurrency=1", "--without-gossip", "--without-mingle", "--without-heartbeat",
    "--hostname=worker@bench", "--queues=videos", "--loglevel=WARNING",
]  # fmt: skip
SPEC: dict[str, Any] = {
    "title": "bench",
    "width": 640,
    "height": 360,
    "fps": 25,
    "slides": [
        {"text": f"slide {n}", "duration": 2.0, "background": f"#{n * 40:02x}3060",
         "color": "#ffffff"}
        for n in range(4)
    ],
}  # fmt: skip


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError("benchmark step timed out")


class Notify:
    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[tuple[float, str]] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            data = self.sock.recv(4096)
            now = time.monotonic()
            self.messages.extend((now, line) for line in data.decode().splitlines())

    def times(self, prefix: str) -> list[float]:
        return [when for when, line in list(self.messages) if line.startswith(prefix)]


class Bench:
    def __init__(self, workdir: str) -> None:
        self.workdir = Path(workdir)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        # redis-server from PATH, as the tests find it.
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir",  # noqa: S607
             workdir, "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.store = VideoStore(redis_client(self.url))
        wait_for(self._redis_up, 10, 0.05)
        self.notify = Notify(workdir)
        self.workers: list[subprocess.Popen[bytes]] = []
        # Celery prefers the environment's broker to the app's configuration.
        os.environ.pop("CELERY_BROKER_URL", None)
        app.conf.broker_url = self.url

    def _redis_up(self) -> bool:
        try:
            return bool(self.store.client.ping())
        except Exception:  # noqa: BLE001 (not up yet, whatever the error)
            return False

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CELERY_", "VIDEO_RENDERER_", "NOTIFY_SOCKET", "WATCHDOG_"))
        }
        env.update(
            CELERY_BROKER_URL=self.url,
            CELERY_STABLE_APP_MODULE="video_renderer.celery_app",
            CELERY_STABLE_GIVEUP_TASK="video_renderer.mark_given_up",
            VIDEO_RENDERER_OUTPUT_DIR=str(self.workdir / "videos"),
            VIDEO_RENDERER_FAULT_HOOKS="1",
            NOTIFY_SOCKET=self.notify.path,
            MALLOC_ARENA_MAX="2",
            OMP_NUM_THREADS="1",
            OPENBLAS_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            **extra,
        )
        return env

    def start_worker(self, **extra: str) -> subprocess.Popen[bytes]:
        before = len(self.notify.times("READY=1"))
        proc = subprocess.Popen(
            [sys.executable, *WORKER],
            env=self.env(**extra),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.workers.append(proc)
        wait_for(lambda: len(self.notify.times("READY=1")) > before, 60)
        return proc

    def submit(self, spec: dict[str, Any]) -> str:
        """What `video-renderer submit` does: record, then send with the video id as task id."""
        record = self.store.create(spec)
        app.send_task(RENDER_TASK, args=[record.id], task_id=record.id)
        return record.id

    def done(self, video_id: str) -> bool:
        record = self.store.get(video_id)
        return record is not None and record.state == "done"

    def requeued_or_done(self, video_id: str) -> bool:
        """The runtime resolved the crash: its ledger put the task back (or it already ran)."""
        task = self.store.ledger.get(video_id)
        return task is not None and task.state in ("queued", "done")

    def close(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
        self.redis.terminate()
        self.redis.wait(10)


def measure_overhead(bench: Bench, runs: int) -> tuple[float, float, float]:
    """Medians of direct renders and of worker runs, interleaved so drift hits both alike."""
    spec = validate_spec(SPEC, allow_fault=False)
    # The same footing as the worker: its init sets OpenCV to one thread, and it is warm.
    cv2.setNumThreads(1)
    direct, worker, inside = [], [], []
    for n in range(-1, runs):
        started = time.monotonic()
        render_video(spec, bench.workdir / "direct", f"d{n}", ffmpeg="ffmpeg",
                     deadline=started + 600, time_limit_sec=600)  # fmt: skip
        direct_time = time.monotonic() - started
        time.sleep(0.2)
        submitted = time.time()
        video_id = bench.submit(SPEC)
        # Poll gently and time from the record's own finished_at: a tight polling loop here
        # would steal one of the two cores from the worker and ffmpeg it measures.
        wait_for(lambda video_id=video_id: bench.done(video_id), 120, interval=0.05)
        record = bench.store.get(video_id)
        assert record is not None
        assert record.started_at
        assert record.finished_at
        worker_time = record.finished_at - submitted
        if n >= 0:  # the first round warms both sides up
            direct.append(direct_time)
            worker.append(worker_time)
            inside.append(record.finished_at - record.started_at)
        time.sleep(0.2)
    paired = statistics.median((w - d) / d for w, d in zip(worker, direct, strict=True))
    print(f"(paired: median of per-round (worker - direct) / direct = {paired * 100:+.1f} %)")
    return statistics.median(direct), statistics.median(worker), statistics.median(inside)


def measure_recycles(bench: Bench, count: int) -> list[float]:
    gaps = []
    for _ in range(count):
        recycling_before = len(bench.notify.times("STATUS=recycling"))
        ready_before = len(bench.notify.times("READY=1"))
        video_id = bench.submit({**SPEC, "slides": SPEC["slides"][:1]})
        wait_for(lambda video_id=video_id: bench.done(video_id), 120)
        wait_for(lambda n=ready_before: len(bench.notify.times("READY=1")) > n, 30)
        stop = bench.notify.times("STATUS=recycling")[recycling_before]
        ready = bench.notify.times("READY=1")[ready_before]
        gaps.append(ready - stop)
        time.sleep(0.5)
    return gaps


def measure_crash(bench: Bench, via_hook: bool) -> float:
    proc = bench.start_worker()
    fault = {"kind": "segfault", "at_frame": 5, "on_attempts": 1}
    video_id = bench.submit({**SPEC, "fault": fault})
    proc.wait(60)
    died = time.monotonic()
    if via_hook:
        env = bench.env(SERVICE_RESULT="core-dump", EXIT_CODE="dumped", EXIT_STATUS="SEGV")
        subprocess.run([sys.executable, "-m", "celery_stable", "reap"], env=env,
                       check=True, capture_output=True)  # fmt: skip
    else:
        bench.workers.append(
            subprocess.Popen([sys.executable, *WORKER], env=bench.env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )  # fmt: skip
    wait_for(lambda: bench.requeued_or_done(video_id), 60)
    resolved = time.monotonic() - died
    if via_hook:
        bench.start_worker()
    wait_for(lambda: bench.done(video_id), 120)
    for worker in bench.workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
    return resolved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    if not shutil.which("redis-server") or not shutil.which("ffmpeg"):
        print("needs redis-server and ffmpeg on PATH", file=sys.stderr)
        return 2
    workdir = tempfile.mkdtemp(prefix="vrbench", dir="/tmp")
    bench = Bench(workdir)
    try:
        proc = bench.start_worker(CELERY_STABLE_MAX_TASKS_PER_CHILD="1000")
        time.sleep(2)
        idle_rss = psutil.Process(proc.pid).memory_info().rss / 2**20
        direct, worker, inside = measure_overhead(bench, args.runs)
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        proc = bench.start_worker(CELERY_STABLE_MAX_TASKS_PER_CHILD="1")
        gaps = measure_recycles(bench, 3)
        time.sleep(2)
        reexec_rss = psutil.Process(proc.pid).memory_info().rss / 2**20
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        hook = measure_crash(bench, via_hook=True)
        startup = measure_crash(bench, via_hook=False)
    finally:
        bench.close()
        shutil.rmtree(workdir, ignore_errors=True)
    frames = validate_spec(SPEC, allow_fault=False).total_frames
    overhead = (worker - direct) / direct * 100
    rows = [
        ("video", f"{SPEC['width']}x{SPEC['height']}, {frames} frames", ""),
        ("renderer called directly (median)", f"{direct * 1000:.0f} ms", ""),
        ("through the worker, submit to done (median)", f"{worker * 1000:.0f} ms", ""),
        ("per-task overhead", f"{overhead:+.1f} %", "<= 3 %"),
        ("  of which outside the render (queue, ack, ledger)",
         f"{(worker - inside) * 1000:.0f} ms", ""),
        ("recycle dead time (recycling -> READY)", f"max {max(gaps) * 1000:.0f} ms "
         f"(median {statistics.median(gaps) * 1000:.0f} ms, {len(gaps)} recycles)", "<= 1.5 s"),
        ("idle worker RSS (fresh start)", f"{idle_rss:.0f} MB", "<= 150 MB"),
        ("idle worker RSS (after re-exec)", f"{reexec_rss:.0f} MB", "<= 150 MB"),
        ("SIGSEGV -> resolved, reap hook", f"{hook * 1000:.0f} ms", "<= 60 s"),
        ("SIGSEGV -> resolved, next worker start", f"{startup * 1000:.0f} ms", "<= 60 s"),
    ]  # fmt: skip
    width = max(len(row[0]) for row in rows)
    value_width = max(len(row[1]) for row in rows)
    print(f"{'measure':<{width}}  {'value':<{value_width}}  goal")
    for name, value, goal in rows:
        print(f"{name:<{width}}  {value:<{value_width}}  {goal}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
