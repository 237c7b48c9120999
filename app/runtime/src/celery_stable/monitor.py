"""The worker's two background threads: the monitor (watchdog, STATUS, hard limit) and the
reporter (heartbeat, stats), the only code that runs while a task runs under the solo pool.

The monitor pings the systemd watchdog only while the current task is within its hard limit; a
native call that holds the GIL stops it too, so the pings stop by themselves and systemd kills
the worker ``WatchdogSec`` later. It never waits on Redis: a Redis that drops packets (a
partition) blocks a client for its socket timeout and retries, and a watchdog fed from the same
thread would get a healthy worker killed. Everything that talks to Redis is the reporter's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from redis import exceptions as redis_errors

from . import stats
from .ledger import Ledger
from .sdnotify import Notifier

log = logging.getLogger(__name__)

TICK_SEC = 0.25
EXTEND_EVERY_SEC = 10.0
EXTEND_USEC = 30_000_000
STATUS_REFRESH_SEC = 5.0
# A task that checks its own deadline (celery_stable.remaining()) gets this long past it to
# fail cleanly before the runtime ends it.
ENFORCE_SLACK_SEC = 2.0


@dataclass
class CurrentTask:
    task_id: str
    name: str
    attempt: int
    time_limit_sec: float
    deadline: float  # time.monotonic()
    done: int = 0
    total: int = 0
    unit: str = ""

    @property
    def progress(self) -> str:
        if not self.total:
            return ""
        return f"{self.unit + ' ' if self.unit else ''}{self.done}/{self.total}"


@dataclass
class TaskTracker:
    """What the main thread is doing, shared with the monitor (plain attribute writes)."""

    max_tasks: int
    current: CurrentTask | None = None
    tasks_done: int = 0
    ready: bool = False
    recycling: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, task: CurrentTask) -> CurrentTask:
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
        progress = f" ({task.progress})" if task.progress else ""
        return f"running {task.name}[{task.task_id}]{progress} · {counter} · RSS {rss_mb:.0f} MB"


class Monitor(threading.Thread):
    """Watchdog pings, start-timeout extensions, STATUS, and the hard limit: no Redis here."""

    def __init__(
        self,
        tracker: TaskTracker,
        notifier: Notifier,
        *,
        watchdog_usec: int | None,
        on_time_limit: Callable[[CurrentTask], None],
    ) -> None:
        super().__init__(name="celery-stable-monitor", daemon=True)
        self.tracker = tracker
        self.notifier = notifier
        self.ping_every = watchdog_usec / 4e6 if watchdog_usec else None
        self.on_time_limit = on_time_limit
        self.process = psutil.Process()
        self.stopping = threading.Event()
        self._last_status = ("", 0.0)
        self._enforced: set[tuple[str, int]] = set()
        self._next: dict[str, float] = {}

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        now = time.monotonic()
        self._next = {"ping": now, "extend": now}
        while True:
            try:
                self.tick(time.monotonic())
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
        if self.ping_every and now >= due["ping"] and (task is None or now <= task.deadline):
            self.notifier.send("WATCHDOG=1")
            due["ping"] = now + self.ping_every
        self._send_status(now)
        if task is not None and now > task.deadline + ENFORCE_SLACK_SEC:
            self._enforce_limit(task)

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

    def _enforce_limit(self, task: CurrentTask) -> None:
        if (task.task_id, task.attempt) in self._enforced:
            return
        self._enforced.add((task.task_id, task.attempt))
        self.on_time_limit(task)


class Reporter(threading.Thread):
    """The running task's heartbeat in the ledger, and the stats: everything that waits on Redis."""

    def __init__(
        self,
        tracker: TaskTracker,
        ledger: Ledger,
        *,
        heartbeat_interval_sec: float,
        stats_interval_sec: float,
        metrics_file: Path | None,
        every_beat: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(name="celery-stable-reporter", daemon=True)
        # Run every heartbeat interval, task or not: the host's sign of life, the lost hosts.
        self.every_beat = every_beat
        self._next_beat = 0.0
        self.tracker = tracker
        self.ledger = ledger
        self.heartbeat_every = heartbeat_interval_sec
        self.stats_every = stats_interval_sec
        self.metrics_file = metrics_file
        self.process = psutil.Process()
        self.stopping = threading.Event()
        self._heartbeat: tuple[str, int, float] = ("", -1, 0.0)  # task, progress, when
        self._next_stats = 0.0
        self._redis_down = False

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        self.process.cpu_percent(None)
        self._next_stats = time.monotonic() + self.stats_every
        while True:
            try:
                self.tick(time.monotonic())
                self._redis_down = False
            except redis_errors.RedisError as exc:
                # Once per outage: the task goes on.
                if not self._redis_down:
                    log.warning("Redis unreachable, heartbeat and counts skipped: %s", exc)
                self._redis_down = True
            except Exception:
                log.exception("reporter tick failed")
            if self.stopping.wait(TICK_SEC):
                return

    def tick(self, now: float) -> None:
        task = self.tracker.current
        if task is not None and now <= task.deadline + ENFORCE_SLACK_SEC:
            self._heartbeat_if_alive(task, now)
        if self.every_beat is not None and now >= self._next_beat:
            self._next_beat = now + self.heartbeat_every
            self.every_beat()
        if now >= self._next_stats:
            self._next_stats = now + self.stats_every
            self.report_stats()

    def _heartbeat_if_alive(self, task: CurrentTask, now: float) -> None:
        """Beat every interval; a task that reports progress beats only when it progresses.

        Recovery fails a task whose heartbeat is too old: for a task that reports progress that
        means no progress, for one that does not, a worker that stopped (a lost host, a hang
        holding the GIL outside systemd).
        """
        task_id, done, when = self._heartbeat
        if task_id != task.task_id:
            self._heartbeat = (task.task_id, task.done, now)
            return
        if now - when < self.heartbeat_every or (task.total and task.done == done):
            return
        self._heartbeat = (task.task_id, task.done, now)
        outcome = self.ledger.heartbeat(task.task_id, task.attempt, task.progress)
        if not outcome.ok:
            log.warning(
                "task %s[%s] was taken from this attempt (ledger: %s %s); its outcome will be "
                "ignored",
                task.name,
                task.task_id,
                outcome.status,
                outcome.state,
            )

    def report_stats(self) -> None:
        sample = stats.sample(self.process)
        by_name: Mapping[str, Mapping[str, int]] | None
        try:
            by_name = self.ledger.counts_by_name()
        except redis_errors.RedisError:
            log.warning("stats: task counts unavailable (Redis unreachable)")
            by_name = None
        log.info(sample.log_line(by_name))
        if self.metrics_file is not None:
            stats.write_textfile(self.metrics_file, sample, by_name, self.tracker.tasks_done)
