"""Benchmark of the worker's costs (not a test): prints one table.

    python app/bench/bench.py [--runs 5]

Starts its own redis-server on a loopback port and real worker processes, listening on an
sd_notify socket as systemd would. Measures:
  * per-task overhead: submit-to-done through the worker vs calling the renderer directly;
  * recycle dead time: STATUS=recycling (sent as the task returns, just before its ack) to the
    READY=1 of the re-exec'd image;
  * idle worker RSS, after start and after a re-exec;
  * SIGSEGV to resolved: through the ExecStopPost hook (`celery-stable reap`) and through the
    start-up reap of the next worker.
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

from celery_stable.celery_app import create_app
from celery_stable.jobs import JobStore, redis_client
from celery_stable.render import render_video
from celery_stable.settings import Settings
from celery_stable.spec import validate_spec

WORKER = [
    "-m", "celery", "-A", "celery_stable.celery_app", "worker", "--pool=solo",
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
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             workdir, "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.store = JobStore(redis_client(self.url))
        wait_for(self._redis_up, 10, 0.05)
        self.notify = Notify(workdir)
        self.workers: list[subprocess.Popen[bytes]] = []
        self.app = create_app(Settings.from_env(self.env()))

    def _redis_up(self) -> bool:
        try:
            return bool(self.store.client.ping())
        except Exception:  # noqa: BLE001
            return False

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_STABLE_")}
        env.update(
            CELERY_STABLE_BROKER_URL=self.url,
            CELERY_STABLE_OUTPUT_DIR=str(self.workdir / "videos"),
            CELERY_STABLE_FAULT_HOOKS="1",
            NOTIFY_SOCKET=self.notify.path,
            PYTHONFAULTHANDLER="1",
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
        record = self.store.create(spec)
        self.app.enqueue(record.id, record.token)  # type: ignore[attr-defined]
        return record.id

    def done(self, job_id: str, states: tuple[str, ...] = ("done",)) -> bool:
        record = self.store.get(job_id)
        return record is not None and record.state in states

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
        job_id = bench.submit(SPEC)
        # Poll gently and time from the worker's own finished_at: a tight polling loop here
        # would steal one of the two cores from the worker and ffmpeg it measures.
        wait_for(lambda job_id=job_id: bench.done(job_id), 120, interval=0.05)
        record = bench.store.get(job_id)
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
        job_id = bench.submit({**SPEC, "slides": SPEC["slides"][:1]})
        wait_for(lambda job_id=job_id: bench.done(job_id), 120)
        wait_for(lambda n=ready_before: len(bench.notify.times("READY=1")) > n, 30)
        stop = bench.notify.times("STATUS=recycling")[recycling_before]
        ready = bench.notify.times("READY=1")[ready_before]
        gaps.append(ready - stop)
        time.sleep(0.5)
    return gaps


def measure_crash(bench: Bench, via_hook: bool) -> float:
    proc = bench.start_worker()
    fault = {"kind": "segfault", "at_frame": 5, "on_attempts": 1}
    job_id = bench.submit({**SPEC, "fault": fault})
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
    wait_for(lambda: bench.store.get(job_id).state in ("queued", "done"), 60)  # type: ignore[union-attr]
    resolved = time.monotonic() - died
    if via_hook:
        bench.start_worker()
    wait_for(lambda: bench.done(job_id), 120)
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
    workdir = tempfile.mkdtemp(prefix="csbench", dir="/tmp")
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
        ("  of which outside the render (queue, ack, CAS)", f"{(worker - inside) * 1000:.0f} ms",
         ""),
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
