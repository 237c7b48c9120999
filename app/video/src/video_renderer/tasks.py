"""The task bodies: render one video attempt, and the Beat canary's fleet report."""

from __future__ import annotations

import faulthandler
import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from .jobs import FINAL_STATES
from .monitor import ABORT_GRACE_SEC, ENFORCE_SLACK_SEC
from .native_init import STDERR_FD
from .reaper import DeathCause, owner_gone, resolve
from .render import RenderError, render_video
from .spec import SpecError, validate_spec
from .worker import WorkerRuntime

log = logging.getLogger(__name__)

RENDER_TASK = "celery_stable.render_video"
FLEET_TASK = "celery_stable.fleet_report"

NATIVE_GUARD_EXTRA_SEC = 5.0


@contextmanager
def native_hang_guard(seconds: float) -> Iterator[None]:
    """Kill the worker ``seconds`` from now, even if a native call holds the GIL meanwhile.

    Neither the render loop nor the monitor can act then. faulthandler's C thread still prints
    every thread's stack, and the kernel's SIGALRM (default action: terminate) ends the process
    by a signal, which systemd counts as abnormal, so ``Restart=on-abnormal`` starts a new one;
    faulthandler's own ``exit=True`` would exit 1, which it does not restart.
    """
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    faulthandler.dump_traceback_later(seconds, exit=False, file=STDERR_FD)
    signal.setitimer(signal.ITIMER_REAL, seconds + 0.5)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        faulthandler.cancel_dump_traceback_later()


def _accept(runtime: WorkerRuntime, job_id: str, token: str) -> bool:
    """Whether this message is the current attempt; acked and ignored (logged) otherwise."""
    record = runtime.store.get(job_id)
    if record is None:
        log.warning("ignored message for unknown video %s", job_id)
        return False
    if record.token != token:
        log.warning(
            "ignored stale message for video %s (state %s, attempt token %s is not "
            "the current one)",
            job_id,
            record.state,
            token,
        )
        return False
    if record.state in FINAL_STATES:
        log.warning("ignored duplicate message for video %s: already %s", job_id, record.state)
        return False
    if record.state == "processing":
        owner = record.owner
        assert runtime.owner is not None
        if owner and owner.host == runtime.owner.host and owner_gone(owner):
            # Redelivered by Redis after a death nothing reaped: resolve it as a crash now.
            cause = DeathCause("crash", "worker died; found on redelivery")
            log.warning(
                "video %s redelivered after its worker died: %s",
                job_id,
                resolve(runtime.store, record, cause, runtime.settings, runtime.enqueue),
            )
        else:
            log.warning(
                "ignored message for video %s: still processing on %s pid %s",
                job_id,
                owner.host if owner else "?",
                owner.pid if owner else "?",
            )
        return False
    outcome = runtime.store.begin(job_id, token, runtime.owner)  # type: ignore[arg-type]
    if not outcome.ok:
        log.warning(
            "ignored message for video %s: %s (state %s)", job_id, outcome.status, outcome.state
        )
    return outcome.ok


def run_render(runtime: WorkerRuntime, job_id: str, token: str) -> str:
    """One attempt; whatever goes wrong in Python, the video ends failed with the reason.

    An exception escaping the task would be acked by Celery and leave the record "processing"
    (or "queued") until recovery: a video silently parked. So anything unexpected fails the
    attempt here, with the exception as the reason an operator reads in `celery-stable status`.
    """
    try:
        return _render_attempt(runtime, job_id, token)
    except Exception as exc:
        log.exception("video %s: unexpected error", job_id)
        reason = f"internal error: {type(exc).__name__}: {exc}"
        try:
            outcome = runtime.store.fail(job_id, token, reason)
        except Exception:
            log.exception("video %s: could not record the failure; recovery will", job_id)
            raise exc from None
        return "failed" if outcome.ok else "ignored"


def _render_attempt(runtime: WorkerRuntime, job_id: str, token: str) -> str:
    if not _accept(runtime, job_id, token):
        return "ignored"
    settings, store = runtime.settings, runtime.store
    record = store.get(job_id)
    assert record is not None
    try:
        spec = validate_spec(record.spec, allow_fault=settings.fault_hooks)
    except SpecError as exc:
        store.fail(job_id, token, f"invalid spec: {exc}")
        log.error("video %s failed: invalid spec: %s", job_id, exc)
        return "failed"
    if spec.fault is not None and not spec.fault.active(record.attempts):
        spec = replace(spec, fault=None)
    task = runtime.tracker.start(job_id, token, settings.time_limit_sec)
    guard = native_hang_guard(
        settings.time_limit_sec + ENFORCE_SLACK_SEC + ABORT_GRACE_SEC + NATIVE_GUARD_EXTRA_SEC
    )
    log.info(
        "rendering video %s (attempt %d, %d frames)", job_id, record.attempts, spec.total_frames
    )

    def progress(frame: int, total: int) -> None:
        task.frame, task.total = frame, total

    error = None
    try:
        with guard:
            result = render_video(
                spec,
                settings.output_dir,
                job_id,
                ffmpeg=settings.ffmpeg,
                deadline=task.deadline,
                time_limit_sec=settings.time_limit_sec,
                progress=progress,
                should_abort=lambda: task.abort_reason,
            )
    except RenderError as exc:
        error = str(exc)
    except MemoryError:
        error = (
            f"ran out of memory: the address-space limit is "
            f"{settings.address_space_limit_mb} MB (RLIMIT_AS)"
        )
    finally:
        runtime.tracker.finish()
    if error is not None:
        outcome = store.fail(job_id, token, error)
        log.error(
            "video %s failed: %s%s",
            job_id,
            error,
            "" if outcome.ok else f" (record already {outcome.state})",
        )
        return "failed"
    outcome = store.finish(job_id, token, str(result.path))
    if not outcome.ok:
        # The job was taken from this attempt (recovery, retry): its output is not the result.
        result.path.unlink(missing_ok=True)
        log.warning(
            "video %s rendered but the record is now %s; output dropped", job_id, outcome.state
        )
        return "dropped"
    log.info(
        "video %s done: %s (%d frames in %.2f s)",
        job_id,
        result.path,
        result.frames,
        result.seconds,
    )
    return "done"


def fleet_report(runtime: WorkerRuntime) -> dict[str, int]:
    """Beat's canary: proves Beat, the broker and a worker all work, and logs the fleet."""
    counts = runtime.store.counts()
    depth = int(runtime.store.client.llen(runtime.settings.queue))
    log.info(
        "fleet: %s; %d message(s) waiting in queue %s",
        " ".join(f"{state}={count}" for state, count in counts.items()),
        depth,
        runtime.settings.queue,
    )
    return {**counts, "queue_depth": depth}
