"""The runtime, attached to one Celery app: a worker bootstep and signals scoped to that app.

:func:`protect` installs it. The bootstep runs after the pool exists and before the consumer
starts: it applies the native limits, starts the monitor thread, resolves the tasks of dead
workers of this host, then wraps the worker's ``process_task``, so that every task of the app,
whatever its name, runs inside the runtime: admitted by the crash ledger, timed against its
hard limit, counted toward the recycle.
"""

from __future__ import annotations

import atexit
import contextlib
import faulthandler
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psutil
from celery import Celery, bootsteps, platforms, signals
from celery.concurrency.solo import TaskPool as SoloPool
from celery.exceptions import ImproperlyConfigured
from celery.worker import state as worker_state
from kombu.utils.url import maybe_sanitize_url
from redis import exceptions as redis_errors

from . import broker, diskspace, peers, recycle, reload
from .attach import EX_CONFIG
from .ledger import NOW, Ledger, Owner, TaskRecord, merge_tags, redis_client
from .monitor import ENFORCE_SLACK_SEC, CurrentTask, Monitor, Reporter, TaskTracker
from .native_init import STDERR_FD, init_worker_process
from .reaper import DeathCause, owner_gone, reap
from .resolution import Context, give_up, retry_hint
from .sdnotify import Notifier
from .settings import VISIBILITY_MARGIN_SEC, Settings, SystemdEnv, command_problems

log = logging.getLogger(__name__)

STARTUP_RETRY_SEC = 2.0
# A re-exec starts Python, Celery and the app again (seconds) while systemd's watchdog keeps
# running: a WatchdogSec shorter than that start-up would kill the recycling worker (an
# abnormal exit that spends StartLimitBurst). The watchdog is widened to this for the start-up
# and set back to the unit's value at READY.
REEXEC_WATCHDOG_SEC = 90
# Past the hard limit the monitor re-executes the worker; should it be unable to run (the task
# holds the GIL) and no systemd watchdog kill it, SIGALRM ends the process this much later.
NATIVE_GUARD_EXTRA_SEC = 10.0

_current: Runtime | None = None


def current() -> Runtime | None:
    """The runtime of this worker process (None outside a protected worker)."""
    return _current


def _set_current(runtime: Runtime | None) -> None:
    global _current  # noqa: PLW0603 (one worker per process; tests reset it)
    _current = runtime


@contextmanager
def native_hang_guard(seconds: float) -> Iterator[None]:
    """Kill the worker ``seconds`` from now, even if a native call holds the GIL meanwhile.

    faulthandler's C thread still prints every thread's stack, and the kernel's SIGALRM
    (default action: terminate) ends the process by a signal, which systemd counts as
    abnormal, so ``Restart=on-abnormal`` starts a new one.
    """
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    faulthandler.dump_traceback_later(seconds, exit=False, file=STDERR_FD)
    signal.setitimer(signal.ITIMER_REAL, seconds + 0.5)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        faulthandler.cancel_dump_traceback_later()


class ProtectStep(bootsteps.StartStopStep):
    """Worker bootstep: after the pool, before the consumer (which is always last)."""

    label = "celery-stable"
    requires = ("celery.worker.components:Pool",)

    def create(self, worker: Any) -> None:
        runtime: Runtime | None = getattr(worker.app, "_celery_stable", None)
        if runtime is not None:
            runtime.on_worker_init(worker)

    def start(self, worker: Any) -> None:
        # After Celery installed its own signal handlers (the blueprint's on_start), before
        # the consumer: SIGHUP becomes the runtime's graceful reload.
        runtime: Runtime | None = getattr(worker.app, "_celery_stable", None)
        if runtime is not None:
            platforms.signals["SIGHUP"] = runtime.on_reload_signal

    def stop(self, worker: Any) -> None:
        pass


class Runtime:
    def __init__(self, app: Celery, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.tracker = TaskTracker(max_tasks=settings.max_tasks_per_child)
        self.notifier = Notifier(settings.systemd.notify_socket)
        self.monitor: Monitor | None = None
        self.reporter: Reporter | None = None
        self.owner: Owner | None = None
        self.recycle: str | None = None
        self.stop_requested = False
        self._ledger: Ledger | None = None
        self._outcomes: dict[str, tuple[str, Any]] = {}
        # The variables the process got from the environment file, so that a re-exec can
        # drop those the file no longer has.
        self._file_keys = reload.file_keys(os.environ, settings.env_file)
        self._reloading = threading.Lock()

    # --- plumbing ------------------------------------------------------------------------------

    @property
    def broker_url(self) -> str:
        """The app's own broker (its code may set one), else the environment's."""
        url = self.app.conf.broker_url or self.settings.broker_url
        return str(url).split(";")[0].strip()

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = Ledger(redis_client(self.broker_url), keep=self.settings.ledger_keep)
        return self._ledger

    def context(self, ledger: Ledger | None = None) -> Context:
        return Context(
            ledger or self.ledger, self.settings, self.app, self.app.connection_for_write
        )

    def time_limit_for(self, request: Any) -> float:
        """The task's own hard limit, as Celery would take it (its message's header, the task's
        ``time_limit``, the app's ``task_time_limit``), else the operator's."""
        hard = (
            (request.time_limits or (None, None))[0]
            or getattr(request.task, "time_limit", None)
            or self.app.conf.task_time_limit
        )
        return float(hard or self.settings.time_limit_sec)

    # --- worker life cycle ---------------------------------------------------------------------

    def on_worker_init(self, worker: Any) -> None:
        pool = worker.pool_cls
        if not (isinstance(pool, type) and issubclass(pool, SoloPool)) or worker.concurrency != 1:
            raise ImproperlyConfigured(
                "celery-stable protects solo workers, one task at a time: start the worker with "
                "--pool=solo --concurrency=1 (the role's celery-worker unit does)."
            )
        if not self.broker_url.startswith(("redis://", "rediss://", "unix://")):
            raise ImproperlyConfigured(
                f"celery-stable needs a Redis broker (its crash ledger lives there); this app's "
                f"broker is {maybe_sanitize_url(self.broker_url)}."
            )
        self._refuse_without_required_commands()
        _set_current(self)
        init_worker_process(self.settings.address_space_limit_mb)
        self._widen_visibility_timeout()
        process = psutil.Process()
        self.owner = Owner(socket.gethostname(), process.pid, process.create_time())
        # The reporter's own client gives up fast: a heartbeat that waits on a partition is
        # stale anyway, and the next one is due in seconds.
        reporter_ledger = Ledger(
            redis_client(self.broker_url, retry_seconds=2), keep=self.settings.ledger_keep
        )
        self.monitor = Monitor(
            self.tracker,
            self.notifier,
            watchdog_usec=self.settings.systemd.watchdog_usec,
            on_time_limit=self.on_time_limit,
        )
        self.reporter = Reporter(
            self.tracker,
            reporter_ledger,
            heartbeat_interval_sec=self.settings.heartbeat_interval_sec,
            stats_interval_sec=self.settings.stats_interval_sec,
            metrics_file=self.settings.metrics_file,
            every_beat=lambda: self._every_beat(reporter_ledger),
        )
        self.monitor.start()
        self.reporter.start()
        self._reap_before_consuming()
        worker.process_task = self._wrap(worker.process_task)

    def _refuse_without_required_commands(self) -> None:
        """Before the consumer exists: a worker whose app cannot run a command it needs would
        take tasks only to fail each one. EX_CONFIG, not a signal: systemd's
        Restart=on-abnormal does not start it again until the host is fixed."""
        path = os.environ.get("PATH") or os.defpath
        problems = command_problems(self.settings.required_commands, path)
        if not problems:
            return
        message = " ".join(problems)
        log.critical("configuration error, not consuming: %s", message)
        self.notifier.send(f"STATUS=configuration error: {message}"[:400])
        raise SystemExit(EX_CONFIG)

    def _every_beat(self, ledger: Ledger) -> None:
        """Reporter thread, every heartbeat interval: this host is alive; the tasks of hosts
        that are not are put back (``peers``)."""
        assert self.owner is not None
        ledger.host_beacon(self.owner.host)
        if self.tracker.ready:
            peers.reap_lost_hosts(self.context(ledger), my_host=self.owner.host)

    def _widen_visibility_timeout(self) -> None:
        """Redis must never hand a running task to a second worker: the visibility timeout
        outlives the longest hard limit of any task of the app."""
        limits = [self.settings.time_limit_sec, self.app.conf.task_time_limit or 0] + [
            task.time_limit for task in self.app.tasks.values() if task.time_limit
        ]
        needed = int(max(limits)) + VISIBILITY_MARGIN_SEC
        options = dict(self.app.conf.broker_transport_options or {})
        if options.get("visibility_timeout", 3600) < needed:
            options["visibility_timeout"] = needed
            self.app.conf.broker_transport_options = options
        log.info(
            "hard limit %d s for tasks without their own; broker visibility timeout %d s",
            self.app.conf.task_time_limit or self.settings.time_limit_sec,
            options.get("visibility_timeout", 3600),
        )

    def _reap_before_consuming(self) -> None:
        assert self.owner is not None
        cause = DeathCause.from_systemd(SystemdEnv())
        # Short client retries, so that the wait for a missing broker is logged every few seconds.
        ledger = Ledger(
            redis_client(self.broker_url, retry_seconds=2), keep=self.settings.ledger_keep
        )
        while True:
            try:
                reap(
                    self.context(ledger),
                    cause,
                    host=self.owner.host,
                    instance=self.settings.instance,
                    at_startup=True,
                )
                return
            except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
                # The monitor keeps extending the start timeout meanwhile.
                log.warning(
                    "waiting for the broker at %s (%s): start Redis or fix CELERY_BROKER_URL; "
                    "tasks of dead workers are resolved before consuming",
                    maybe_sanitize_url(self.broker_url),
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
        log.info("ready: consuming (pid %d)", self.owner.pid if self.owner else 0)

    def on_stop_requested(self) -> None:
        # A stop asked by systemd or an operator (SIGTERM, SIGINT, SIGQUIT) must stop the worker
        # even when a recycle is also due: the re-exec would otherwise swallow it.
        self.stop_requested = True

    def on_shutdown(self) -> None:
        for thread in (self.monitor, self.reporter):
            if thread is not None:
                thread.stop()
        if self.recycle and not self.stop_requested:
            # Celery's own SIGHUP restart does the same: re-exec once the worker has stopped.
            atexit.register(self._reexec, f"recycle: {self.recycle}")
            return
        self.notifier.send("STOPPING=1", "STATUS=stopping")

    def _reexec(self, reason: str) -> None:
        # The re-exec window: a stop asked from here on is held (pending) until the new image
        # looks at it first thing (recycle.act_on_held_stop), and one asked before is obeyed.
        held = recycle.hold_stop_signals()
        pause = self.settings.test_reexec_pause_sec
        if pause:
            log.warning("test hook: %d s in the re-exec window", pause)
            time.sleep(pause)
            held |= set(signal.sigpending()) & recycle.STOP_SIGNALS
        if self.stop_requested or held:
            log.warning("a stop came before the re-exec (%s): stopping instead", reason)
            self.notifier.send("STOPPING=1", "STATUS=stopping")
            for handler in logging.getLogger().handlers:
                handler.flush()
            os._exit(0)
        watchdog_usec = self.settings.systemd.watchdog_usec
        if watchdog_usec:
            widened = max(watchdog_usec, REEXEC_WATCHDOG_SEC * 1_000_000)
            self.notifier.send("WATCHDOG=1", f"WATCHDOG_USEC={widened}")
        # An interval timer survives execve: the hang guard's must not kill the new image.
        signal.setitimer(signal.ITIMER_REAL, 0)
        env = reload.environment_for_reexec(os.environ, self.settings.env_file, self._file_keys)
        recycle.reexec(reason, env)

    def on_reload_signal(self, *_: Any) -> None:
        """SIGHUP (``systemctl reload``): check the new image in a thread, the handler returns."""
        threading.Thread(target=self.reload, name="celery-stable-reload", daemon=True).start()

    def reload(self) -> bool:
        """Finish the running task, then re-exec on the new code and environment file; or, if
        that image would not start, refuse and go on as now. Whether the reload goes ahead."""
        if not self._reloading.acquire(blocking=False):
            return False
        try:
            self.notifier.send("STATUS=reload: checking the new code and environment file")
            try:
                env = reload.fresh_environment(os.environ, self.settings.env_file, self._file_keys)
                problem = reload.check_new_image(env)
            except Exception as exc:  # noqa: BLE001 (a reload must never take the worker down)
                problem = f"{type(exc).__name__}: {exc}"
            if problem is not None:
                log.critical(
                    "reload refused, going on with the running code and configuration: %s",
                    problem,
                )
                self.notifier.send(f"STATUS=reload refused: {problem}"[:400])
                return False
            log.warning("reload: the new image checks out; re-executing after the current task")
            self.recycle = self.recycle or "reload"
            self.tracker.recycling = "reload (after the current task)"
            recycle.request_warm_stop()
            return True
        finally:
            self._reloading.release()

    # --- one task ------------------------------------------------------------------------------

    def _wrap(self, process_task: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def protected(request: Any) -> Any:
            try:
                attempt = self.admit(request)
            except redis_errors.RedisError:
                log.exception("crash ledger unreachable: running %s unprotected", request.id)
                return process_task(request)
            if attempt is None:
                request.acknowledge()
                worker_state.task_ready(request)
                return None
            limit = self.time_limit_for(request)
            self.tracker.start(
                CurrentTask(request.id, request.name, attempt, limit, time.monotonic() + limit)
            )
            try:
                with native_hang_guard(limit + ENFORCE_SLACK_SEC + NATIVE_GUARD_EXTRA_SEC):
                    result = process_task(request)
            except Exception as exc:
                self.tracker.finish()
                self.on_escaped(request, attempt, exc)
                raise
            except BaseException:
                # A shutdown (WorkerShutdown, WorkerTerminate...): the record stays running and
                # the next start's reap puts the task back.
                self.tracker.finish()
                raise
            self.tracker.finish()
            self.after(request, attempt)
            return result

        return protected

    def on_escaped(self, request: Any, attempt: int, exc: Exception) -> None:
        """Something escaped Celery's own tracing (under solo, a task's ``sys.exit()`` ends in
        a TypeError and Celery stops the worker with exit 1, which systemd does not restart):
        give the task up and carry on in a fresh image, as prefork would with a fresh child."""
        log.critical(
            "task %s[%s] ended its worker (%s: %s): giving it up and re-executing in place",
            request.name, request.id, type(exc).__name__, exc, exc_info=True,
        )  # fmt: skip
        if isinstance(exc, MemoryError):
            # Celery treats a task's MemoryError as fatal to the whole worker.
            cause, why = (
                "memory",
                (
                    f"ran out of memory: the address-space limit is "
                    f"{self.settings.address_space_limit_mb} MB (RLIMIT_AS)"
                ),
            )
        else:
            cause, why = (
                "exit",
                (
                    f"ended its worker process ({type(exc).__name__}: {exc}; a task that calls "
                    "sys.exit()?)"
                ),
            )
        record = self.ledger.get(request.id)
        if record is not None and record.state == "running" and record.attempts == attempt:
            give_up(self.context(), record, cause, f"{why}; {retry_hint(request.id)}")
        if not self.stop_requested:
            self._reexec(f"task {request.id} ended its worker")

    def admit(self, request: Any) -> int | None:
        """Record the attempt in the ledger; its number, or None for a copy not to run."""
        assert self.owner is not None
        message = request.message
        tag = str(message.delivery_tag)
        fields: dict[str, object] = {
            "state": "running",
            "host": self.owner.host,
            "instance": self.settings.instance,
            "pid": self.owner.pid,
            "pid_started_at": repr(self.owner.pid_started_at),
            "started_at": NOW,
            "heartbeat_at": NOW,
            "finished_at": "",
            "time_limit": self.time_limit_for(request),
            "cause": "",
            "reason": "",
            "progress": "",
            "payload": broker.payload_of(message),
        }
        ledger = self.ledger
        for _ in range(5):
            record = ledger.get(request.id)
            if record is None:
                if ledger.create(request.id, request.name, {**fields, "tags": tag}).ok:
                    return 1
                continue
            decision = self._decide(record, tag)
            if decision is None:
                return None
            extra, incr = decision
            outcome = ledger.move(
                request.id,
                states=[record.state],
                attempt=record.attempts,
                set_fields={**fields, "tags": merge_tags(record.tags, tag), **extra},
                incr=incr,
            )
            if outcome.ok:
                return outcome.attempts
        raise redis_errors.RedisError(f"the ledger record of {request.id} kept changing")

    def _decide(
        self, record: TaskRecord, tag: str
    ) -> tuple[dict[str, object], dict[str, int]] | None:
        """(fields, increments) to start this delivery, or None to drop it."""
        if record.state in ("done", "failed"):
            if tag in record.tags:
                log.warning(
                    "ignored a redelivered copy of task %s[%s]: already %s",
                    record.name, record.id, record.state,
                )  # fmt: skip
                return None
            # A new message reusing the id: a new task as far as the ledger is concerned.
            log.info("task id %s sent again as a new message: a fresh ledger record", record.id)
            return {"attempts": 1, "crashes": 0, "notified": 1}, {}
        if record.state == "queued":
            return {}, {"attempts": 1}
        # Running: a second delivery while the first attempt runs, or the first one died.
        owner = record.owner
        assert self.owner is not None
        dead = owner is not None and (
            (owner.host == self.owner.host and owner_gone(owner))
            or (
                owner.host != self.owner.host
                and self.ledger.now() - (record.heartbeat_at or 0) > self.settings.stuck_after_sec
            )
        )
        if not dead:
            log.warning(
                "ignored another copy of task %s[%s]: running on %s pid %s",
                record.name, record.id, owner.host if owner else "?", owner.pid if owner else "?",
            )  # fmt: skip
            return None
        crashes = record.crashes + 1
        if crashes >= self.settings.max_crashes:
            give_up(
                self.context(),
                record,
                "crash",
                f"crashed the worker {crashes} times (last: its worker died; found when its "
                f"message came back); {retry_hint(record.id)}",
                crashes=crashes,
            )
            return None
        log.warning("task %s[%s]: its last worker died; attempt again", record.name, record.id)
        return {"crashes": crashes}, {"attempts": 1}

    def on_postrun(self, task_id: str, state: str, retval: Any) -> None:
        self._outcomes[task_id] = (state, retval)

    def after(self, request: Any, attempt: int) -> None:
        state, retval = self._outcomes.pop(request.id, ("", None))
        if state in ("SUCCESS", "IGNORED"):
            move = ("done", "", "")
        elif state == "RETRY":
            move = ("queued", "retry", "Celery retry")
        elif state == "REJECTED":
            move = ("done", "rejected", "rejected by the task")
        else:
            reason = f"{type(retval).__name__}: {retval}" if retval else "ended without a result"
            full = diskspace.full_paths(self.settings.app_write_paths)
            if full:
                reason = f"{'; '.join(full)}: {reason}"
            move = ("failed", "error", reason[:1000])
        try:
            outcome = self.ledger.finish(
                request.id, attempt, move[0], cause=move[1], reason=move[2]
            )
            if not outcome.ok:
                log.warning(
                    "task %s[%s] finished, but the ledger moved on (%s %s): outcome not recorded",
                    request.name, request.id, outcome.status, outcome.state,
                )  # fmt: skip
        except redis_errors.RedisError:
            log.exception("could not record the outcome of %s; recovery will", request.id)
        self.tracker.tasks_done += 1
        self.check_recycle()

    def check_recycle(self) -> None:
        rss_kb = psutil.Process().memory_info().rss // 1024
        reason = recycle.recycle_reason(
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
        recycle.request_warm_stop()

    def on_time_limit(self, task: CurrentTask) -> None:
        """Monitor thread, the task past its hard limit: fail it, then a fresh image, same PID.

        Under prefork Celery kills the child and the pool starts another; under solo the
        worker is the child, so it replaces its own image, as a recycle does, without a
        systemd restart. Should the task hold the GIL, this thread cannot run: the watchdog
        pings have stopped too, and systemd's watchdog (or the SIGALRM guard) ends the worker.
        """
        log.error(
            "task %s[%s] exceeded its hard time limit of %g s: failing it and re-executing "
            "this worker in place. Threads:",
            task.name, task.task_id, task.time_limit_sec,
        )  # fmt: skip
        faulthandler.dump_traceback(file=STDERR_FD, all_threads=True)
        try:
            record = self.ledger.get(task.task_id)
            if record is not None and record.state == "running" and record.attempts == task.attempt:
                give_up(
                    self.context(),
                    record,
                    "time-limit",
                    f"exceeded its hard time limit of {task.time_limit_sec:g} s; the worker "
                    f"was re-executed in place; {retry_hint(task.task_id)}",
                )
        except Exception:
            log.exception("could not record the time limit of %s; the reap will", task.task_id)
        # The task's children (an ffmpeg...) would outlive the image that fed them, and a
        # killed child nobody waits for stays a zombie of the new image.
        children = psutil.Process().children(recursive=True)
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        psutil.wait_procs(children, timeout=2)
        if self.stop_requested:
            self.notifier.send("STOPPING=1", "STATUS=stopping")
            os._exit(0)
        self.notifier.send(f"STATUS=re-executing: {task.name}[{task.task_id}] past its limit")
        self._reexec(f"task {task.task_id} past its hard time limit")

    @staticmethod
    def _rss_mb() -> float:
        return psutil.Process().memory_info().rss / (1024 * 1024)


def protect(app: Celery, settings: Settings | None = None) -> Runtime:
    """Put every task of ``app`` under the runtime; idempotent. The one line an app may add:

    celery_stable.protect(app)
    """
    # First thing in a re-executed image: a stop that came during the re-exec is obeyed now.
    recycle.act_on_held_stop()
    existing: Runtime | None = getattr(app, "_celery_stable", None)
    if existing is not None:
        return existing
    runtime = Runtime(app, settings or Settings.from_env(os.environ))
    if not app.conf.broker_url:
        # Celery's own default is amqp://localhost: the consumer and the ledger would then talk
        # to two brokers. One broker: the runtime's (CELERY_BROKER_URL, or its default).
        app.conf.broker_url = runtime.settings.broker_url
    app._celery_stable = runtime  # type: ignore[attr-defined]
    app.steps["worker"].add(ProtectStep)
    uid = f"celery-stable-{id(app)}"

    def on_ready(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is app:
            runtime.on_ready()

    def on_shutting_down(**_: Any) -> None:
        runtime.on_stop_requested()

    def on_shutdown(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is app:
            runtime.on_shutdown()

    def on_postrun(
        sender: Any = None, task_id: str = "", state: str = "", retval: Any = None, **_: Any
    ) -> None:
        if getattr(sender, "app", None) is app:
            runtime.on_postrun(task_id, state, retval)

    signals.worker_ready.connect(on_ready, weak=False, dispatch_uid=uid)
    signals.worker_shutting_down.connect(on_shutting_down, weak=False, dispatch_uid=uid)
    signals.worker_shutdown.connect(on_shutdown, weak=False, dispatch_uid=uid)
    signals.task_postrun.connect(on_postrun, weak=False, dispatch_uid=uid)
    log.debug("celery-stable protects app %s (%s)", app.main, sys.argv[0] if sys.argv else "")
    return runtime
