"""The team's tasks, including the ways real tasks go wrong (each does the real thing)."""

import ctypes
import json
import os
import time

from .celery_app import app

MIB = 1024 * 1024
_kept = []  # what `leak` keeps alive across tasks, as a real leak does


@app.task(name="proj.add")
def add(x, y):
    return x + y


@app.task(name="proj.sleep")
def sleep(seconds):
    time.sleep(seconds)
    return seconds


@app.task(name="proj.crash_once")
def crash_once(marker):
    """SIGSEGV on the first run (no marker file yet), success after."""
    if not os.path.exists(marker):
        with open(marker, "w") as handle:
            handle.write("crashed once\n")
        ctypes.string_at(0)
    return "survived"


@app.task(name="proj.crash_always")
def crash_always(video_id):
    ctypes.string_at(0)


@app.task(name="proj.hang_gil")
def hang_gil(seconds):
    # A native call that keeps the GIL: no Python thread can run meanwhile.
    ctypes.PyDLL(None).sleep(ctypes.c_uint(int(seconds)))


@app.task(name="proj.limited", time_limit=2)
def limited(seconds):
    """A task with its own hard limit (2 s), shorter than the operator's."""
    time.sleep(seconds)


@app.task(name="proj.leak")
def leak(megabytes):
    _kept.append(bytearray(b"\xa5") * (megabytes * MIB))
    return len(_kept)


@app.task(name="proj.flaky", bind=True, max_retries=3)
def flaky(self, succeed_on):
    if self.request.retries + 1 < succeed_on:
        raise self.retry(countdown=0)
    return self.request.retries


@app.task(name="proj.fails")
def fails():
    raise ValueError("the team's own bug")


@app.task(name="proj.on_given_up")
def on_given_up(task_name, task_id, args, kwargs, cause, reason):  # noqa: PLR0917 (the hook's contract)
    """The team's hook: what the runtime gave up, appended to a JSON-lines file."""
    with open(os.environ["PROJ_HOOK_LOG"], "a") as handle:
        handle.write(
            json.dumps(
                {
                    "task_name": task_name,
                    "task_id": task_id,
                    "args": args,
                    "kwargs": kwargs,
                    "cause": cause,
                    "reason": reason,
                }
            )
            + "\n"
        )


@app.task(name="proj.exits")
def exits(code):
    """A task that calls sys.exit(): under solo Celery lets it end the whole worker."""
    raise SystemExit(code)


@app.task(name="proj.hog")
def hog(megabytes):
    """An allocation bomb: touches memory until RLIMIT_AS (MemoryError) stops it."""
    hoard = []
    while len(hoard) < megabytes // 16:
        hoard.append(bytearray(b"\x5a") * (16 * MIB))
    return len(hoard)


@app.task(name="proj.env")
def env(name):
    """What this worker's environment says (a reload must bring the new environment file)."""
    return os.environ.get(name)


@app.task(name="proj.write")
def write(path, kilobytes):
    """The app's output: a file of this size, written the way any app writes one."""
    with open(path, "wb") as out:
        for _ in range(kilobytes):
            out.write(b"\0" * 1024)
    return path
