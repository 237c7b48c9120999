"""The worker's life cycle under solo: init, READY, per-task bookkeeping, recycle, shutdown.

One :class:`WorkerRuntime` per Celery app, built by :func:`celery_stable.celery_app.create_app`
and driven by Celery's worker signals; nothing here is module-level state.
"""

from __future__ import annotations

import logging
import socket
import time

import psutil
from kombu.utils.url import maybe_sanitize_url
from redis import exceptions as redis_errors

from .jobs import JobStore, Owner, redis_client
from .monitor import Monitor, TaskTracker
from .native_init import init_worker_process
from .reaper import DeathCause, Enqueue, reap
from .recycle import recycle_reason, reexec, request_warm_stop
from .sdnotify import Notifier
from .settings import Settings, SystemdEnv

log = logging.getLogger(__name__)

STARTUP_RETRY_SEC = 2.0
# A re-exec starts Python, Celery and OpenCV again (seconds) while systemd's watchdog keeps
# running: a WatchdogSec shorter than that start-up would kill the recycling worker (an abnormal
# exit that spends StartLimitBurst). The watchdog is widened to this for the start-up and set
# back to the unit's value at READY.
REEXEC_WATCHDOG_SEC = 90


class WorkerRuntime:
    def __init__(self, settings: Settings, enqueue: Enqueue) -> None:
        self.settings = settings
        self.enqueue = enqueue
        self.tracker = TaskTracker(max_tasks=settings.max_tasks_per_child)
        self.notifier = Notifier(settings.systemd.notify_socket)
        self.monitor: Monitor | None = None
        self.owner: Owner | None = None
        self.recycle: str | None = None
        self.stop_requested = False
        self._store: JobStore | None = None

    @property
    def store(self) -> JobStore:
        if self._store is None:
            self._store = JobStore(redis_client(self.settings.broker_url))
        return self._store

    def on_process_init(self) -> None:
        init_worker_process(self.settings.address_space_limit_mb)
        process = psutil.Process()
        self.owner = Owner(socket.gethostname(), process.pid, process.create_time())
        # The monitor's own client gives up fast: while it waits on Redis it cannot ping the
        # watchdog, and a Redis outage must not get a healthy worker killed.
        monitor_store = JobStore(redis_client(self.settings.broker_url, retry_seconds=2))
        self.monitor = Monitor(
            self.tracker,
            monitor_store,
            self.notifier,
            watchdog_usec=self.settings.systemd.watchdog_usec,
            heartbeat_interval_sec=self.settings.heartbeat_interval_sec,
            stats_interval_sec=self.settings.stats_interval_sec,
            metrics_file=self.settings.metrics_file,
        )
        self.monitor.start()
        self._reap_before_consuming()

    def _reap_before_consuming(self) -> None:
        assert self.owner is not None
        cause = DeathCause.from_systemd(SystemdEnv())
        # Short client retries, so that the wait for a missing broker is logged every few seconds.
        store = JobStore(redis_client(self.settings.broker_url, retry_seconds=2))
        while True:
            try:
                reap(
                    store,
                    self.settings,
                    cause,
                    self.enqueue,
                    host=self.owner.host,
                    at_startup=True,
                )
                return
            except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
                # The monitor keeps extending the start timeout meanwhile.
                log.warning(
                    "waiting for broker at %s (%s): start Redis or fix CELERY_STABLE_BROKER_URL; "
                    "videos of dead workers are resolved before consuming",
                    maybe_sanitize_url(self.settings.broker_url),
                    exc,
                )
                time.sleep(STARTUP_RETRY_SEC)

    def on_ready(self) -> None:
        self.tracker.ready = True
        lines = ["READY=1", f"STATUS={self.tracker.status(self._rss_mb())}"]
        watchdog_usec = self.settings.systemd.watchdog_usec
        if watchdog_usec:
            # Back to the unit's WatchdogSec after a re-exec widened it (a no-op otherwise).
            lines.append(f"WATCHDOG_USEC={watchdog_usec}")
        self.notifier.send(*lines)
        log.info(
            "ready: consuming %s (pid %d)", self.settings.queue, self.owner.pid if self.owner else 0
        )

    def on_stop_requested(self) -> None:
        # A stop asked by systemd or an operator (SIGTERM, SIGINT, SIGQUIT) must stop the worker
        # even when a recycle is also due: the re-exec would otherwise swallow it.
        self.stop_requested = True

    def on_render_finished(self) -> None:
        self.tracker.tasks_done += 1
        self.check_recycle()

    def check_recycle(self) -> None:
        rss_kb = psutil.Process().memory_info().rss // 1024
        reason = recycle_reason(
            self.tracker.tasks_done,
            self.settings.max_tasks_per_child,
            rss_kb,
            self.settings.max_memory_per_child_kb,
        )
        if reason is None or self.recycle:
            return
        self.recycle = reason
        self.tracker.recycling = reason
        self.notifier.send(f"STATUS=recycling: {reason}")
        log.warning("recycling after this task: %s", reason)
        request_warm_stop()

    def on_shutdown(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()
        if self.recycle and not self.stop_requested:
            watchdog_usec = self.settings.systemd.watchdog_usec
            if watchdog_usec:
                widened = max(watchdog_usec, REEXEC_WATCHDOG_SEC * 1_000_000)
                self.notifier.send("WATCHDOG=1", f"WATCHDOG_USEC={widened}")
            reexec()
        self.notifier.send("STOPPING=1", "STATUS=stopping")

    @staticmethod
    def _rss_mb() -> float:
        return psutil.Process().memory_info().rss / (1024 * 1024)
