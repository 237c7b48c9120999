"""The worker's one background thread: watchdog, STATUS, job heartbeat, stats, hard limit.

It is the only part of the worker that keeps running while a task runs under the solo pool, so
every limit that must hold *during* a task is enforced here. It pings the systemd watchdog only
while the current task is within its hard limit; a native hang that holds the GIL stops this
thread too, so the pings stop by themselves and systemd kills the worker.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from redis import exceptions as redis_errors

from . import stats
from .jobs import JobStore
from .native_init import STDERR_FD
from .render import time_limit_reason
from .sdnotify import Notifier

log = logging.getLogger(__name__)

TICK_SEC = 0.25
EXTEND_EVERY_SEC = 10.0
EXTEND_USEC = 30_000_000
STATUS_REFRESH_SEC = 5.0
# The render loop checks the same deadline between frames; the monitor acts only if that
# cooperative check has not fired this long after it, i.e. when the main thread is stuck.
ENFORCE_SLACK_SEC = 2.0
# After WATCHDOG=trigger, how long systemd gets to kill us before we abort ourselves.
ABORT_GRACE_SEC = 5.0


@dataclass
class CurrentTask:
    job_id: str
    token: str
    time_limit_sec: float
    deadline: float
    frame: int = 0
    total: int = 0
    # Set when the job was taken away from this attempt (time limit, recovery); the render
    # loop reads it between frames and stops.
    abort_reason: str | None = None


@dataclass
class TaskTracker:
    """What the main thread is doing, shared with the monitor (plain attribute writes)."""

    max_tasks: int
    current: CurrentTask | None = None
    tasks_done: int = 0
    ready: bool = False
    recycling: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, job_id: str, token: str, time_limit_sec: float) -> CurrentTask:
        task = CurrentTask(job_id, token, time_limit_sec, time.monotonic() + time_limit_sec)
        with self.lock:
            self.current = task
        return task

    def finish(self) -> None:
        with self.lock:
            self.current = None

    def status(self, rss_mb: float) -> str:
        task = self.current
        if self.recycling:
            return f"recycling: {self.recycling}"
        if not self.ready:
            return "waiting for broker"
        counter = f"{self.tasks_done + (1 if task else 0)}/{self.max_tasks} tasks before recycle"
        if task is None:
            return f"idle · {counter} · RSS {rss_mb:.0f} MB"
        return (
            f"rendering {task.job_id} (frame {task.frame}/{task.total}) · {counter} · "
            f"RSS {rss_mb:.0f} MB"
        )


class Monitor(threading.Thread):
    def __init__(
        self,
        tracker: TaskTracker,
        store: JobStore,
        notifier: Notifier,
        *,
        watchdog_usec: int | None,
        heartbeat_interval_sec: float,
        stats_interval_sec: float,
        metrics_file: Path | None,
        abort: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(name="celery-stable-monitor", daemon=True)
        self.tracker = tracker
        self.store = store
        self.notifier = notifier
        self.ping_every = watchdog_usec / 4e6 if watchdog_usec else None
        self.heartbeat_every = heartbeat_interval_sec
        self.stats_every = stats_interval_sec
        self.metrics_file = metrics_file
        self.abort = abort or (lambda: os.kill(os.getpid(), signal.SIGABRT))
        self.process = psutil.Process()
        self.stopping = threading.Event()
        self._last_status = ("", 0.0)
        self._heartbeat = ("", -1, 0.0)  # job, frame, when
        self._enforced: set[str] = set()
        self._next: dict[str, float] = {}
        self._redis_down = False

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        self.process.cpu_percent(None)
        now = time.monotonic()
        self._next = {"ping": now, "extend": now, "stats": now + self.stats_every}
        while True:
            try:
                self.tick(time.monotonic())
                self._redis_down = False
            except redis_errors.RedisError as exc:
                # Once per outage: the render goes on, and so must the watchdog pings.
                if not self._redis_down:
                    log.warning("monitor: Redis unreachable, heartbeat and counts skipped: %s", exc)
                self._redis_down = True
            except Exception:
                # A bad sample must not end the thread that pings the watchdog.
                log.exception("monitor tick failed")
            if self.stopping.wait(TICK_SEC):
                return

    def tick(self, now: float) -> None:
        task = self.tracker.current
        due = self._next
        if not self.tracker.ready and now >= due["extend"]:
            # Waiting for the broker is not a hang: ask systemd for more start time.
            self.notifier.send(f"EXTEND_TIMEOUT_USEC={EXTEND_USEC}")
            due["extend"] = now + EXTEND_EVERY_SEC
        if self.ping_every and now >= due["ping"] and self._within_limit(task, now):
            self.notifier.send("WATCHDOG=1")
            due["ping"] = now + self.ping_every
        self._send_status(now)
        if task is not None:
            self._heartbeat_if_progressing(task, now)
            if now > task.deadline + ENFORCE_SLACK_SEC:
                self._enforce_limit(task)
        if now >= due["stats"]:
            due["stats"] = now + self.stats_every
            self.report_stats()

    @staticmethod
    def _within_limit(task: CurrentTask | None, now: float) -> bool:
        return task is None or now <= task.deadline

    def _send_status(self, now: float) -> None:
        text = self.tracker.status(self.process.memory_info().rss / stats.MB)
        last_text, last_sent = self._last_status
        # RSS moves every tick; resend unchanged-but-for-RSS text only now and then.
        if (
            text.split(" · RSS")[0] != last_text.split(" · RSS")[0]
            or now - last_sent >= STATUS_REFRESH_SEC
        ):
            self.notifier.send(f"STATUS={text}")
            self._last_status = (text, now)

    def _heartbeat_if_progressing(self, task: CurrentTask, now: float) -> None:
        job_id, frame, when = self._heartbeat
        if job_id != task.job_id:
            self._heartbeat = (task.job_id, task.frame, now)
            return
        # Only progress counts: a task stuck on one frame must look stuck to `recover`.
        if task.frame == frame or now - when < self.heartbeat_every:
            return
        self._heartbeat = (task.job_id, task.frame, now)
        outcome = self.store.heartbeat(task.job_id, task.token)
        if not outcome.ok and task.abort_reason is None:
            task.abort_reason = (
                f"the job was changed by someone else while rendering "
                f"(now {outcome.state or 'deleted'}); this attempt stops"
            )

    def _enforce_limit(self, task: CurrentTask) -> None:
        if task.job_id + task.token in self._enforced:
            return
        self._enforced.add(task.job_id + task.token)
        reason = time_limit_reason(task.time_limit_sec)
        task.abort_reason = reason
        log.error(
            "video %s %s and its task does not return; failing it and stopping this "
            "worker. Threads:",
            task.job_id,
            reason,
        )
        try:
            self.store.fail(task.job_id, task.token, f"{reason}; the worker was stopped (watchdog)")
        finally:
            faulthandler.dump_traceback(file=STDERR_FD, all_threads=True)
            self.notifier.send(f"STATUS=killing: {task.job_id} {reason}", "WATCHDOG=trigger")
        deadline = time.monotonic() + ABORT_GRACE_SEC
        while time.monotonic() < deadline:
            if self.tracker.current is not task:
                return
            time.sleep(TICK_SEC)
        log.critical(
            "still hung %.0f s after WATCHDOG=trigger: aborting the worker itself", ABORT_GRACE_SEC
        )
        self.abort()

    def report_stats(self) -> None:
        sample = stats.sample(self.process)
        try:
            jobs: dict[str, int] | None = self.store.counts()
        except redis_errors.RedisError:
            log.warning("stats: job counts unavailable (Redis unreachable)")
            jobs = None
        log.info(sample.log_line(jobs))
        if self.metrics_file is not None:
            stats.write_textfile(self.metrics_file, sample, jobs, self.tracker.tasks_done)
