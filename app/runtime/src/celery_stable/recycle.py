"""Recycling under solo: drain, then re-exec the worker in place.

Celery's ``max_tasks_per_child`` and ``max_memory_per_child`` only work in prefork. Here the
worker finishes and acks its task, stops warm (prefetched, unacked messages go back to the
queue), then replaces its own image, as Celery's own SIGHUP restart does
(``celery/apps/worker.py``): same PID, fresh memory, READY=1 again. systemd never sees a stop,
so ``StartLimitBurst`` stays for real crashes.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Mapping
from typing import NoReturn

log = logging.getLogger(__name__)

# What systemd and operators stop a worker with. From the last look at "was a stop asked?" to
# the new image's first one, they are blocked: one that comes in between stays pending across
# execve (the mask and pending signals survive it) instead of being lost to the new image.
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGQUIT})


def hold_stop_signals() -> set[signal.Signals]:
    """Block the stop signals in this thread; those already pending (asked, not yet acted on)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    return set(signal.sigpending()) & STOP_SIGNALS


def act_on_held_stop() -> None:
    """In a new image, before any work: a stop that came during the re-exec ends it here (exit
    0, as a warm stop would, with nothing taken); otherwise the stop signals are unblocked (its
    children, an ffmpeg..., must get them too)."""
    pending = set(signal.sigpending()) & STOP_SIGNALS
    if pending:
        names = ", ".join(sorted(sig.name for sig in pending))
        log.warning("%s came during the re-exec: stopping before taking any work", names)
        for handler in logging.getLogger().handlers:
            handler.flush()
        if sys.__stderr__ is not None:
            sys.__stderr__.flush()
        os._exit(0)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def recycle_reason(tasks_done: int, max_tasks: int, rss_kb: int, max_rss_kb: int) -> str | None:
    """Every limit this task reached, or None. Both are named when both hold: an RSS past its
    limit stays in the journal even on the task that also made the count."""
    reasons = []
    if tasks_done >= max_tasks:
        reasons.append(f"{tasks_done} tasks done")
    if rss_kb >= max_rss_kb:
        reasons.append(f"RSS {rss_kb // 1024} MB >= {max_rss_kb // 1024} MB")
    return ", ".join(reasons) or None


def request_warm_stop() -> None:
    """Make the consumer loop stop after this task, the way SIGTERM's warm shutdown does.

    ``state.should_stop`` is read by the event loop between messages (celery/worker/loops.py,
    ``maybe_shutdown``); the task running now is still acked, because the ack is sent when the
    task returns, before the loop checks the flag.
    """
    from celery.worker import state  # noqa: PLC0415 (worker-only import)

    state.should_stop = 0


def command() -> list[str]:
    """The interpreter's own command line, exactly as it was started (``python -m celery``,
    a console script...), so the new image is the same program."""
    return [sys.executable, *sys.orig_argv[1:]]


def reexec(reason: str, env: Mapping[str, str] | None = None) -> NoReturn:
    """Replace this process with a fresh copy of itself (callable from any thread), on ``env``
    (the environment file as it is now) when given."""
    argv = command()
    log.warning("re-executing in place (%s): %s", reason, " ".join(argv))
    for handler in logging.getLogger().handlers:
        handler.flush()
    for stream in (sys.__stdout__, sys.__stderr__):
        if stream is not None:
            stream.flush()
    # As Celery's SIGHUP restart: no descriptor but the standard streams survives into the
    # new image (a library's socket opened without O_CLOEXEC would otherwise leak).
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    if env is None:
        os.execv(sys.executable, argv)  # noqa: S606 (argv list, no shell)
    os.execve(sys.executable, argv, dict(env))  # noqa: S606
