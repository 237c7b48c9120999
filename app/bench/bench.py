"""Benchmark of what the runtime costs the video renderer (not a test): prints its tables.

    python app/bench/bench.py [--runs 15] [--renders 40] [--rounds 4] [--only costs|throughput]
                              [--spec FILE] [--env-without NAME ...]

Starts its own redis-server on a loopback port and real worker processes, run as the role's
unit runs them (``celery-stable worker`` with
``CELERY_STABLE_APP_MODULE=video_renderer.celery_app``), listening on an sd_notify socket as
systemd would. Measures:
  * per-task overhead: submit-to-done through the worker vs calling the renderer directly;
  * recycle dead time: STATUS=recycling (sent as the task returns, just before its ack) to the
    READY=1 of the re-executed image;
  * idle worker RSS, after start and after a re-exec;
  * SIGSEGV to resolved (the runtime's ledger puts the video back): through the ExecStopPost
    hook (`celery-stable reap`) and through the start-up reap of the next worker;
  * throughput (``--only throughput`` runs this part alone): videos per minute for one batch of
    renders of app/examples/hello.json (``--spec``: another video, yours) with 1 and with 2 solo
    workers under the runtime (each its own CELERY_STABLE_INSTANCE, the role's Redis
    persistence), beside the physical limit: the
    renderer called directly in 2 processes, without Celery. Timed from the first submit to the
    last done with the video records' own times (workers READY before the batch; polling is one
    round trip every 0.5 s and times nothing), with where the CPU went.
The workers and the direct renderer run with the environment a host's env file gives them
(the role's ``celery_stable_native_env``: threads, malloc, FFmpeg; ``--env-without NAME`` drops
one, to measure what it costs), in a venv built as the role builds the host's
(role_venv.py: the pinned requirements, the two wheels, compiled bytecode), not in this one:
what the development venv holds besides changes what a worker's start costs. Needs the runtime
and the app installed here too (app/runtime, app/video: this process submits), uv,
redis-server and ffmpeg.
"""

from __future__ import annotations

import argparse
import json
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil
import yaml
from celery_stable.ledger import redis_client

from role_venv import REPO, role_venv
from video_renderer.celery_app import app
from video_renderer.jobs import VideoStore
from video_renderer.spec import SpecError, VideoSpec, validate_spec
from video_renderer.tasks import RENDER_TASK


def worker_args(hostname: str = "worker@bench", loglevel: str = "WARNING") -> list[str]:
    """The role's worker command line (``celery-stable worker``), for the workers' Python."""
    return [
        "-m", "celery_stable", "worker", "--pool=solo",
        "--concurrency=1", "--without-gossip", "--without-mingle", "--without-heartbeat",
        f"--hostname={hostname}", "--queues=videos", f"--loglevel={loglevel}",
    ]  # fmt: skip


WORKER = worker_args()
# What every host's environment file holds besides the runtime's own variables: threads,
# malloc, FFmpeg and OpenCV settings. The workers and the direct renderer both run with it.
ROLE_DEFAULTS = REPO / "roles" / "celery_stable" / "defaults" / "main.yml"


def native_env(without: frozenset[str] = frozenset()) -> dict[str, str]:
    """The role's ``celery_stable_native_env`` as the env file writes it, less ``without``."""
    defaults = yaml.safe_load(ROLE_DEFAULTS.read_text(encoding="utf-8"))
    native = {str(k): str(v) for k, v in defaults["celery_stable_native_env"].items()}
    unknown = without - native.keys()
    if unknown:
        raise ValueError(f"not in celery_stable_native_env: {', '.join(sorted(unknown))}")
    return {k: v for k, v in native.items() if k not in without}


EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "hello.json"
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
    def __init__(
        self,
        workdir: str,
        python: Path,
        *,
        role_persistence: bool = False,
        env_without: frozenset[str] = frozenset(),
    ) -> None:
        self.workdir = Path(workdir)
        self.env_without = env_without
        self.native = native_env(env_without)
        # The workers' and the direct renderer's interpreter (role_venv.py).
        self.python = str(python)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        # The role's redis.conf writes an append-only file, fsynced every second.
        persistence = ["--appendonly", "yes", "--appendfsync", "everysec"]
        # redis-server from PATH, as the tests find it.
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir",  # noqa: S607
             workdir, "--save", "",
             *(persistence if role_persistence else ["--appendonly", "no"])],
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
        # The module's app serves each Bench in turn (costs, then throughput): its pools would
        # keep the last Redis's port. Both go, as Celery drops them after a fork.
        app.close()
        app.amqp._producer_pool = None

    def _redis_up(self) -> bool:
        try:
            return bool(self.store.client.ping())
        except Exception:  # noqa: BLE001 (not up yet, whatever the error)
            return False

    def env(self, **extra: str) -> dict[str, str]:
        # PYTHONDONTWRITEBYTECODE (set in some shells and CI images) goes too: the unit never has
        # it, and with it each worker start would compile every module again.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CELERY_", "VIDEO_RENDERER_", "NOTIFY_SOCKET", "WATCHDOG_"))
            and k != "PYTHONDONTWRITEBYTECODE"
            and k not in self.env_without
        }
        env.update(
            CELERY_BROKER_URL=self.url,
            CELERY_STABLE_APP_MODULE="video_renderer.celery_app",
            CELERY_STABLE_GIVEUP_TASK="video_renderer.mark_given_up",
            VIDEO_RENDERER_OUTPUT_DIR=str(self.workdir / "videos"),
            VIDEO_RENDERER_FAULT_HOOKS="1",
            NOTIFY_SOCKET=self.notify.path,
        )
        env.update(self.native)
        env.update(extra)
        return env

    def start_worker(self, **extra: str) -> subprocess.Popen[bytes]:
        before = len(self.notify.times("READY=1"))
        proc = subprocess.Popen(
            [self.python, *WORKER],
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
    # The same footing as the worker: a warm process with OpenCV on one thread, started with the
    # worker's environment (glibc reads its MALLOC_* variables only when a process starts).
    renderer = DirectRenderer(bench, SPEC, bench.workdir / "direct", "d")
    renderer.wait_ready()
    direct, worker, inside = [], [], []
    for n in range(-1, runs):
        renderer.go(1)
        result = renderer.result()
        direct_time = result["finished"][0] - result["started"]
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
    renderer.close()
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
        subprocess.run([bench.python, "-m", "celery_stable", "reap"], env=env,
                       check=True, capture_output=True)  # fmt: skip
    else:
        bench.workers.append(
            subprocess.Popen([bench.python, *WORKER], env=bench.env(),
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


# --- throughput: 1 and 2 workers beside the renderer called directly in 2 processes ---------------

# One direct renderer process: the app's own render function, no Celery, no Redis. It imports
# and reports "ready" first, then waits for a line (how many videos to render now), so that
# its start-up is not timed (the workers are READY before their batch too); for each line it
# prints when the batch began, when each render ended, and its CPU.
DIRECT_CHILD = """
import json, math, resource, sys, time
from pathlib import Path
import cv2
from video_renderer.render import render_video
from video_renderer.spec import validate_spec
cv2.setNumThreads(1)
spec = validate_spec(json.loads(sys.argv[1]), allow_fault=False)
out, prefix = Path(sys.argv[2]), sys.argv[3]
cpu = lambda a, b: b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime
usage = lambda: tuple(map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))
print("ready", flush=True)
for batch, line in enumerate(sys.stdin):
    own0, kids0 = usage()
    started, finished = time.time(), []
    for n in range(int(line)):
        render_video(spec, out, f"{prefix}{batch}-{n}", ffmpeg="ffmpeg", deadline=math.inf,
                     time_limit_sec=math.inf)
        finished.append(time.time())
    own, kids = usage()
    print(json.dumps({"started": started, "finished": finished, "own": cpu(own0, own),
                      "ffmpeg": cpu(kids0, kids)}), flush=True)
"""


class DirectRenderer:
    """A process of the renderer called directly, in the workers' venv and environment."""

    def __init__(self, bench: Bench, spec: dict[str, Any], out: Path, prefix: str) -> None:
        env = bench.env()
        env.pop("NOTIFY_SOCKET")
        self.proc = subprocess.Popen(
            [bench.python, "-c", DIRECT_CHILD, json.dumps(spec), str(out), prefix],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def _stdio(self) -> tuple[IO[str], IO[str]]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        return self.proc.stdin, self.proc.stdout

    def wait_ready(self) -> None:
        if self._stdio()[1].readline().strip() != "ready":
            raise RuntimeError("a direct renderer process did not start")

    def go(self, count: int) -> None:
        stdin = self._stdio()[0]
        stdin.write(f"{count}\n")
        stdin.flush()

    def result(self) -> dict[str, Any]:
        """The batch's times and CPU, once it is done."""
        line = self._stdio()[1].readline()
        if not line:
            raise RuntimeError("a direct renderer process ended before its batch")
        return dict(json.loads(line))

    def close(self) -> None:
        self._stdio()[0].close()
        self.proc.wait(30)


# After READY (or the children's "ready"), before the batch: start-up's last CPU settles.
SETTLE_SEC = 1.0
# The bench polls the done count (one pipelined round trip) this often; times come from records.
POLL_SEC = 0.5
# Commands that are the bench's own polling and probes, not the app's or the runtime's.
BENCH_COMMANDS = {"scard", "info", "ping", "hello", "client|setinfo"}


def _busy(times: Any) -> float:
    """The machine's busy CPU time, all cores (guest time is already in user on Linux)."""
    return float(times.user + times.nice + times.system + times.irq + times.softirq)


@dataclass
class Snapshot:
    """Cumulative CPU seconds by consumer, and Redis's command counters, at one instant."""

    at: float
    render: float  # the Python process(es) that draw the frames: a direct child, or a worker
    ffmpeg: float  # the encoders those processes started and reaped
    redis: float
    bench: float
    busy: float  # the whole machine
    steal: float
    commands: dict[str, tuple[int, int]]  # per command: calls, server microseconds

    @classmethod
    def take(cls, bench: Bench, workers: list[int], direct: tuple[float, float] = (0, 0)) -> Any:
        own = ffmpeg = 0.0
        for pid in workers:
            times = psutil.Process(pid).cpu_times()
            own += times.user + times.system
            ffmpeg += times.children_user + times.children_system
        server = psutil.Process(bench.redis.pid).cpu_times()
        me = psutil.Process().cpu_times()
        machine = psutil.cpu_times()
        stats = bench.store.client.info("commandstats")
        return cls(
            at=time.monotonic(),
            render=own + direct[0],
            ffmpeg=ffmpeg + direct[1],
            redis=server.user + server.system,
            bench=me.user + me.system,
            busy=_busy(machine),
            steal=float(getattr(machine, "steal", 0.0)),
            commands={
                name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
                for name, v in stats.items()
            },
        )


@dataclass
class Batch:
    """One batch of renders, timed from the first submit (or "go") to the last done."""

    label: str
    videos: int
    seconds: float
    before: Snapshot
    after: Snapshot
    per_worker: list[int] = field(default_factory=list)
    recycles: int = 0
    start_cpu: float = 0.0  # one worker image's CPU from exec to READY (what a recycle costs)

    @property
    def per_minute(self) -> float:
        return self.videos / self.seconds * 60

    def cpu(self, what: str) -> float:
        """Core-seconds of ``what`` per video over the batch's window."""
        return (getattr(self.after, what) - getattr(self.before, what)) / self.videos

    @property
    def window(self) -> float:
        return self.after.at - self.before.at

    @property
    def foreign_cores(self) -> float:
        """Cores busy with work that is not this benchmark's, on average over the window."""
        ours = sum(self.cpu(what) for what in ("render", "ffmpeg", "redis", "bench")) * self.videos
        return max(0.0, self.after.busy - self.before.busy - ours) / self.window

    @property
    def steal_cores(self) -> float:
        return (self.after.steal - self.before.steal) / self.window

    def commands(self) -> dict[str, tuple[float, float]]:
        """Per video, by command: calls and server microseconds (the bench's polling left out)."""
        out = {}
        for name, (calls, usec) in self.after.commands.items():
            calls0, usec0 = self.before.commands.get(name, (0, 0))
            if name not in BENCH_COMMANDS and calls > calls0:
                out[name] = ((calls - calls0) / self.videos, (usec - usec0) / self.videos)
        return out


def run_direct(bench: Bench, spec: dict[str, Any], renders: int, processes: int) -> Batch:
    """The physical limit: the renderer in ``processes`` processes, the batch split evenly."""
    out = bench.workdir / "direct"
    counts = [renders // processes + (n < renders % processes) for n in range(processes)]
    children = [DirectRenderer(bench, spec, out, f"p{n}-") for n in range(processes)]
    for child in children:
        child.wait_ready()
    time.sleep(SETTLE_SEC)
    before = Snapshot.take(bench, [])
    started = time.time()
    for child, count in zip(children, counts, strict=True):
        child.go(count)
    results = []
    for child in children:
        results.append(child.result())
        child.close()
    own = sum(result["own"] for result in results)
    ffmpeg = sum(result["ffmpeg"] for result in results)
    after = Snapshot.take(bench, [], direct=(own, ffmpeg))
    ended = max(max(result["finished"]) for result in results)
    shutil.rmtree(out, ignore_errors=True)
    return Batch(f"direct, {processes} processes", renders, ended - started, before, after, counts)


def run_workers(
    bench: Bench, spec: dict[str, Any], renders: int, workers: int, **extra: str
) -> Batch:
    """``workers`` solo workers under the runtime, as the role's instances run them."""
    ready = len(bench.notify.times("READY=1"))
    procs = []
    for instance in range(1, workers + 1):
        log = (bench.workdir / f"worker{instance}.log").open("ab")
        procs.append(
            subprocess.Popen(
                [bench.python, *worker_args(f"worker{instance}@bench", "INFO")],
                env=bench.env(CELERY_STABLE_INSTANCE=str(instance), **extra),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        log.close()
    bench.workers.extend(procs)
    wait_for(lambda: len(bench.notify.times("READY=1")) >= ready + workers, 90, 0.1)
    time.sleep(SETTLE_SEC)
    pids = [proc.pid for proc in procs]
    start_cpu = statistics.mean(sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids)
    before = Snapshot.take(bench, pids)
    done_before, failed_before = bench.store.counts()["done"], bench.store.counts()["failed"]
    ready = len(bench.notify.times("READY=1"))
    ids = [bench.submit(spec) for _ in range(renders)]

    def finished() -> bool:
        counts = bench.store.counts()
        if counts["failed"] > failed_before:
            raise RuntimeError(f"a video failed; see {bench.workdir}/worker*.log")
        return counts["done"] >= done_before + renders

    wait_for(finished, 60 + renders * 30, POLL_SEC)
    records = [bench.store.get(video_id) for video_id in ids]
    tasks = [bench.store.ledger.get(video_id) for video_id in ids]
    first = min(record.created_at for record in records if record)
    last = max(record.finished_at or 0 for record in records if record)
    per_worker = [sum(1 for task in tasks if task and task.pid == pid) for pid in pids]
    # A worker recycles in place after every CELERY_STABLE_MAX_TASKS_PER_CHILD tasks: wait for
    # each of those re-executions to be READY, so that their CPU is in the window.
    limit = int(bench.env(**extra).get("CELERY_STABLE_MAX_TASKS_PER_CHILD", "10"))
    recycles = sum(count // limit for count in per_worker)
    wait_for(lambda: len(bench.notify.times("READY=1")) >= ready + recycles, 90, 0.1)
    time.sleep(SETTLE_SEC)
    after = Snapshot.take(bench, pids)
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.wait(30)
    shutil.rmtree(bench.workdir / "videos", ignore_errors=True)
    label = f"{workers} worker{'s' if workers > 1 else ''} under the runtime"
    return Batch(label, renders, last - first, before, after, per_worker, recycles, start_cpu)


def measure_throughput(
    renders: int, rounds: int, python: Path, spec: dict[str, Any], env_without: frozenset[str]
) -> list[dict[str, Batch]]:
    """Each round runs every configuration once; every other round in the reverse order, so a
    drift in the machine's load hits them alike."""
    workdir = tempfile.mkdtemp(prefix="vrthroughput", dir="/tmp")
    bench = Bench(workdir, python, role_persistence=True, env_without=env_without)
    # The goal's two batches side by side in either order: their ratio in one round is then
    # taken over the same minute of the machine's drift.
    plan: list[tuple[str, Callable[[], Batch]]] = [
        ("direct", lambda: run_direct(bench, spec, renders, 2)),
        ("2", lambda: run_workers(bench, spec, renders, 2)),
        # Diagnostic: the same 2 workers, but no recycle within the batch.
        ("2-norecycle", lambda: run_workers(
            bench, spec, renders, 2, CELERY_STABLE_MAX_TASKS_PER_CHILD=str(renders + 1))),
        ("1", lambda: run_workers(bench, spec, renders, 1)),
    ]  # fmt: skip
    results: list[dict[str, Batch]] = []
    try:
        for round_no in range(rounds):
            order = plan if round_no % 2 == 0 else plan[::-1]
            results.append({key: run() for key, run in order})
    finally:
        bench.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def paired(results: list[dict[str, Batch]], key: str, base: str) -> list[float]:
    """``key``'s rate over ``base``'s, round by round: each round ran both, minutes apart."""
    return [result[key].per_minute / result[base].per_minute for result in results]


def ratios(results: list[dict[str, Batch]]) -> tuple[float, float]:
    """The two figures printed last: medians of the per-round ratios. A ratio of medians would
    pair one round's batch with another's, and the machine's speed drifts between rounds (the
    direct batches of one run have ranged over 20 %)."""
    return (
        statistics.median(paired(results, "2", "1")),
        statistics.median(paired(results, "2", "direct")),
    )


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def throughput_rows(
    results: list[dict[str, Batch]], renders: int, spec: VideoSpec, spec_name: str
) -> list[tuple[str, str, str]]:
    def rate(key: str) -> float:
        return statistics.median(result[key].per_minute for result in results)

    def each(key: str) -> str:
        return ", ".join(f"{result[key].seconds:.2f} s" for result in results)

    def cpu(key: str, what: str) -> float:
        return statistics.median(result[key].cpu(what) for result in results)

    labels = {
        "direct": "renderer called directly, 2 processes (the limit)",
        "1": "1 worker under the runtime",
        "2": "2 workers under the runtime",
        "2-norecycle": "2 workers, no recycle in the batch (diagnostic)",
    }
    rows = [
        ("batch", f"{renders} x {spec_name} ({spec.width}x{spec.height}, "
         f"{spec.total_frames} frames), {len(results)} rounds", ""),
    ]  # fmt: skip
    for key, label in labels.items():
        rows.append((label, f"{rate(key):.1f} videos/min (batch {each(key)})", ""))

    def rounds(key: str, base: str) -> str:
        each = paired(results, key, base)
        return (f"{statistics.median(each) * 100:.1f} % (rounds: "
                f"{', '.join(f'{ratio * 100:.1f}' for ratio in each)})")  # fmt: skip

    two_vs_one = paired(results, "2", "1")
    rows.append(("2 workers vs 1 (median of rounds)", f"x {statistics.median(two_vs_one):.2f} "
                 f"(rounds: {', '.join(f'{ratio:.2f}' for ratio in two_vs_one)})", ""))  # fmt: skip
    rows.append(("2 workers vs direct parallel (median of rounds)", rounds("2", "direct"),
                 ">= 95 %"))  # fmt: skip
    rows.append(("2 workers, no recycle, vs direct parallel", rounds("2-norecycle", "direct"), ""))
    rows.append(
        ("videos per worker (rounds)",
         "; ".join(f"{'/'.join(map(str, r[k].per_worker))}" for r in results for k in ("2",)),
         ""),
    )  # fmt: skip
    rows.append(("CPU per video, core-ms", "render process + ffmpeg + redis + bench = total", ""))
    for key, label in labels.items():
        parts = [cpu(key, what) for what in ("render", "ffmpeg", "redis", "bench")]
        rows.append(
            (f"  {label.split(' (')[0]}",
             " + ".join(_ms(part) for part in parts) + f" = {_ms(sum(parts))}", "")
        )  # fmt: skip
    start = statistics.median(result["1"].start_cpu for result in results)
    recycles = statistics.median(result["2"].recycles for result in results)
    rows.append(
        ("  of the worker's: one image's start (a recycle)",
         f"{_ms(start)} core-ms, x {recycles:g} recycles / {renders} = "
         f"{_ms(start * recycles / renders)} per video", ""),
    )  # fmt: skip
    commands = results[-1]["2"].commands()
    total_calls = sum(calls for calls, _ in commands.values())
    total_usec = sum(usec for _, usec in commands.values())
    top = sorted(commands.items(), key=lambda item: -item[1][0])[:6]
    rows.append(
        ("Redis per video (2 workers, submit included)",
         f"{total_calls:.1f} commands, {total_usec / 1000:.2f} ms of server time", ""),
    )  # fmt: skip
    rows.append(("  by command", ", ".join(f"{name} {calls:.1f}" for name, (calls, _) in top), ""))
    foreign = [batch.foreign_cores for result in results for batch in result.values()]
    steal = [batch.steal_cores for result in results for batch in result.values()]
    rows.append(
        ("other work on the machine during batches",
         f"{statistics.mean(foreign):.2f} cores on average (max {max(foreign):.2f}), "
         f"steal {statistics.mean(steal):.2f}", ""),
    )  # fmt: skip
    return rows


def print_table(rows: list[tuple[str, str, str]]) -> None:
    width = max(len(row[0]) for row in rows)
    value_width = max(len(row[1]) for row in rows)
    print(f"{'measure':<{width}}  {'value':<{value_width}}  goal")
    for name, value, goal in rows:
        print(f"{name:<{width}}  {value:<{value_width}}  {goal}".rstrip())


def measure_costs(
    runs: int, python: Path, env_without: frozenset[str]
) -> list[tuple[str, str, str]]:
    """Per-task overhead, recycle dead time, idle RSS, SIGSEGV to resolved: one worker."""
    workdir = tempfile.mkdtemp(prefix="vrbench", dir="/tmp")
    bench = Bench(workdir, python, env_without=env_without)
    try:
        proc = bench.start_worker(CELERY_STABLE_MAX_TASKS_PER_CHILD="1000")
        time.sleep(2)
        idle_rss = psutil.Process(proc.pid).memory_info().rss / 2**20
        direct, worker, inside = measure_overhead(bench, runs)
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
    return [
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


def _load() -> str:
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="rounds of the per-task overhead")
    parser.add_argument("--renders", type=int, default=40, help="videos in a throughput batch")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of the throughput batches")
    parser.add_argument(
        "--spec", type=Path, default=EXAMPLE,
        help="the video of the throughput batches (default: app/examples/hello.json)",
    )  # fmt: skip
    parser.add_argument(
        "--env-without", action="append", default=[], metavar="NAME",
        help="run without this variable of the role's celery_stable_native_env (both the "
        "workers and the direct renderer), to measure what it costs; repeatable",
    )  # fmt: skip
    parser.add_argument(
        "--only", choices=("costs", "throughput"), help="run one part: the per-task costs "
        "(overhead, recycle, RSS, SIGSEGV) or the throughput with 1 and 2 workers",
    )  # fmt: skip
    args = parser.parse_args()
    if not shutil.which("redis-server") or not shutil.which("ffmpeg"):
        print("needs redis-server and ffmpeg on PATH", file=sys.stderr)
        return 2
    try:
        raw_spec = json.loads(args.spec.read_text(encoding="utf-8"))
        spec = validate_spec(raw_spec, allow_fault=False)
    except (OSError, ValueError, SpecError) as exc:
        print(f"--spec {args.spec}: {exc} (a video spec, as app/examples/hello.json)",
              file=sys.stderr)  # fmt: skip
        return 2
    env_without = frozenset(args.env_without)
    try:
        native = native_env(env_without)
    except ValueError as exc:
        print(f"--env-without: {exc}", file=sys.stderr)
        return 2
    dropped = f", without {', '.join(sorted(env_without))}" if env_without else ""
    print(f"environment of the workers and the direct renderer (the role's "
          f"celery_stable_native_env{dropped}): "
          + " ".join(f"{k}={v}" for k, v in native.items()))  # fmt: skip
    python = role_venv()
    load_before = _load()
    if args.only != "throughput":
        print_table(measure_costs(args.runs, python, env_without))
    figures: tuple[float, float] | None = None
    if args.only != "costs":
        if args.only is None:
            print()
        results = measure_throughput(args.renders, args.rounds, python, raw_spec, env_without)
        print_table(throughput_rows(results, args.renders, spec, args.spec.name))
        figures = ratios(results)
    print(f"load average (1 / 5 / 15 min): before {load_before}, after {_load()} "
          f"({os.cpu_count()} cores)")  # fmt: skip
    if figures is not None:
        print(f"throughput_2_vs_1: {figures[0]:.3f}")
        print(f"throughput_2_vs_direct_parallel: {figures[1]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
