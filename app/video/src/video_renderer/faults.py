"""Test-only fault hooks: real crashes, hangs and memory growth inside a render.

A video spec may carry ``"fault": {"kind": ..., "at_frame": N, ...}`` only when the worker runs
with ``VIDEO_RENDERER_FAULT_HOOKS=1``; the render loop calls :meth:`Fault.fire` before every
frame, so each fault strikes inside a real render, with ffmpeg running.
They exist so the fault matrix can prove each limit on a real host, so each one does the real
thing (a real SIGSEGV, a real GIL-holding native call), never a simulation.
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

MIB = 1024 * 1024

KINDS = ("segfault", "hang_gil", "hang", "hold", "slow", "leak", "alloc_bomb", "raise")

# Memory a `leak` fault keeps alive across tasks, as a real leak would, so RSS recycling fires.
_retained: list[bytearray] = []


def reset_leaks() -> None:
    _retained.clear()


def segfault() -> None:
    ctypes.string_at(0)


def hang_holding_gil(seconds: float) -> None:
    # PyDLL keeps the GIL across the call: no Python thread (the monitor included) can run.
    ctypes.PyDLL(None).sleep(ctypes.c_uint(max(1, round(seconds))))


def hold(path: str, seconds: float) -> None:
    """Wait until ``path`` exists, at most ``seconds``: a render that lasts exactly as long as
    the test needs it to (a deploy during it, however slow the machine), never a guess."""
    deadline = time.monotonic() + seconds
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.2)


def leak(megabytes: int) -> None:
    # Multiplying writes every byte, so the pages count in RSS (a zeroed calloc would not).
    _retained.append(bytearray(b"\xa5") * (megabytes * MIB))


def alloc_bomb(megabytes: int) -> None:
    """Allocate and touch memory until RLIMIT_AS (MemoryError) or the OOM killer stops it."""
    hoard: list[bytearray] = []
    chunk = 16 * MIB
    limit = megabytes * MIB if megabytes else 1 << 62
    while len(hoard) * chunk < limit:
        hoard.append(bytearray(b"\x5a") * chunk)


@dataclass(frozen=True)
class Fault:
    kind: str
    at_frame: int = 0
    seconds: float = 3600.0
    mb: int = 0
    # `hold`: the file whose creation releases the render (absolute; the worker must see it).
    path: str = ""
    # Fire only on the first N attempts (0: always): a transient crash, to show a requeued
    # video rendering on its next attempt, where a poison video keeps crashing.
    on_attempts: int = 0

    def active(self, attempt: int) -> bool:
        """Whether it fires on ``attempt``: the runtime ledger's attempt number for the video's
        task (every admitted delivery counts, a crash's redelivery and an operator's retry
        included; Celery's ``request.retries`` counts neither). 0 (no ledger, a direct call)
        counts as the first attempt."""
        return not self.on_attempts or max(attempt, 1) <= self.on_attempts

    @classmethod
    def parse(cls, raw: object) -> Fault:
        if not isinstance(raw, Mapping):
            raise ValueError('fault: expected an object such as {"kind": "segfault"}')
        unknown = set(raw) - {"kind", "at_frame", "seconds", "mb", "path", "on_attempts"}
        if unknown:
            raise ValueError(f"fault: unknown key(s) {sorted(unknown)}")
        kind = raw.get("kind")
        if kind not in KINDS:
            raise ValueError(f"fault.kind: expected one of {', '.join(KINDS)}, got {kind!r}")
        at_frame = raw.get("at_frame", 0)
        seconds = raw.get("seconds", 3600.0)
        mb = raw.get("mb", 0)
        on_attempts = raw.get("on_attempts", 0)
        path = raw.get("path", "")
        if type(at_frame) is not int or at_frame < 0:
            raise ValueError("fault.at_frame: expected a whole number >= 0")
        if type(seconds) not in (int, float) or not 0 <= seconds <= 86400:
            raise ValueError("fault.seconds: expected a number of seconds from 0 to 86400")
        if type(mb) is not int or not 0 <= mb <= 1 << 20:
            raise ValueError("fault.mb: expected a whole number of MiB from 0 to 1048576")
        if type(on_attempts) is not int or on_attempts < 0:
            raise ValueError("fault.on_attempts: expected a whole number >= 0 (0: every attempt)")
        if not isinstance(path, str) or (kind == "hold") != os.path.isabs(path):
            raise ValueError(
                "fault.path: expected an absolute file path for kind hold (the file that "
                "releases the render), and no path for any other kind"
            )
        return cls(
            kind=kind,
            at_frame=at_frame,
            seconds=float(seconds),
            mb=mb,
            path=path,
            on_attempts=on_attempts,
        )

    def fire(self, frame: int) -> None:
        if self.kind == "slow" and frame >= self.at_frame:
            time.sleep(self.seconds)
            return
        if frame != self.at_frame:
            return
        if self.kind == "segfault":
            segfault()
        elif self.kind == "hang_gil":
            hang_holding_gil(self.seconds)
        elif self.kind == "hang":
            time.sleep(self.seconds)
        elif self.kind == "hold":
            hold(self.path, self.seconds)
        elif self.kind == "leak":
            leak(self.mb)
        elif self.kind == "raise":
            # A bug in the render code: an exception nobody planned for.
            raise RuntimeError(f"fault hook: unexpected error at frame {frame}")
        elif self.kind == "alloc_bomb":
            alloc_bomb(self.mb)
