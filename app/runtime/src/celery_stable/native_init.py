"""Worker init: the guide's anti-crash settings, applied before the worker takes any task.

Run by the runtime's worker bootstep, after the pool exists (so after the app's own
``worker_process_init`` handlers, which solo sends once from the main process) and before the
consumer starts.
"""

from __future__ import annotations

import faulthandler
import importlib.util
import logging
import os
import resource

log = logging.getLogger(__name__)

STDERR_FD = 2
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _human_mb(megabytes: int) -> str:
    return f"{megabytes // 1024}GB" if megabytes % 1024 == 0 else f"{megabytes}MB"


def limit_address_space(megabytes: int) -> int | None:
    """Set RLIMIT_AS (ffmpeg children inherit it); the soft limit now in force, read back.

    None when the kernel (or an emulator: qemu-user accepts setrlimit(RLIMIT_AS) and applies
    nothing) does not keep it; the caller says so rather than claim a limit that is not there.
    """
    wanted = megabytes * 1024 * 1024
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    # An unprivileged process cannot raise its hard limit; a lower one set by systemd wins.
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_AS, (wanted, hard))
    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    return None if soft == resource.RLIM_INFINITY else soft


def init_worker_process(address_space_limit_mb: int) -> None:
    # The libraries read these when they load, so the environment file is the real fix; setting
    # them here still covers what this process starts later (ffmpeg) and any late import.
    for name in THREAD_VARIABLES:
        os.environ[name] = "1"
    # Celery replaces sys.stderr with a logging proxy that has no file descriptor; fd 2 is the
    # journal, where a SIGSEGV/SIGABRT traceback must land.
    faulthandler.enable(file=STDERR_FD, all_threads=True)
    log.info("Worker process initialized avec optimisations anti-crash")
    # OpenCV's own thread pool ignores OMP_NUM_THREADS; set it where the app can import cv2
    # (the runtime does not need it, and an app without it must not pay for the import).
    if importlib.util.find_spec("cv2") is not None:
        import cv2  # noqa: PLC0415

        cv2.setNumThreads(1)
        log.info("OpenCV configuré en single-thread")
    limit = limit_address_space(address_space_limit_mb)
    if limit is None:
        log.warning(
            "RLIMIT_AS of %s was not kept by this platform (qemu-user emulation ignores it): "
            "only the unit's MemoryMax bounds this worker's memory",
            _human_mb(address_space_limit_mb),
        )
        return
    log.info("Limite mémoire processus configurée (%s)", _human_mb(limit // (1024 * 1024)))
