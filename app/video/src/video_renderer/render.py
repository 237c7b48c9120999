"""The renderer: OpenCV draws the frames, the system ffmpeg encodes them to H.264."""

from __future__ import annotations

import contextlib
import math
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import cv2
import numpy as np

from .spec import Slide, VideoSpec

FADE_SEC = 0.25
FONT = cv2.FONT_HERSHEY_SIMPLEX

Progress = Callable[[int, int], None]


class RenderError(Exception):
    """The video cannot be made; the message is the reason stored on the job."""


@dataclass(frozen=True)
class RenderResult:
    path: Path
    frames: int
    seconds: float


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


PARTIAL_SUFFIX = ".partial.mp4"


def output_path(output_dir: Path, name: str) -> Path:
    return output_dir / f"{name}.mp4"


def partial_path(output_dir: Path, name: str, attempt: int) -> Path:
    """This attempt's own temp file: named by attempt, host and PID, so that attempts on hosts
    sharing the output directory (whose PIDs may well be equal) never write the same file."""
    host = socket.gethostname()
    return output_dir / f".{name}.attempt{attempt}.{host}.{os.getpid()}{PARTIAL_SUFFIX}"


def _partial_owner(path: Path, name: str) -> tuple[int | None, str | None, int] | None:
    """(attempt, host, pid) of a temp file of ``name``; attempt and host None for the name an
    older version gave it (``.<name>.<pid>.partial.mp4``, this host's); None: not one."""
    middle = path.name.removeprefix(f".{name}.").removesuffix(PARTIAL_SUFFIX)
    if middle.isdigit():
        return None, None, int(middle)
    attempt, _, rest = middle.removeprefix("attempt").partition(".")
    host, _, pid = rest.rpartition(".")
    if not middle.startswith("attempt") or not attempt.isdigit() or not host or not pid.isdigit():
        return None
    return int(attempt), host, int(pid)


def stale_partials(output_dir: Path, name: str, *, before_attempt: int = 0) -> list[Path]:
    """Temp files of ``name`` that no attempt will ever publish.

    Those of an attempt numbered below ``before_attempt``, on any host: the runtime's ledger has
    moved past it, so the compare-and-set it publishes under can only refuse it, even if it is
    still running (stalled somewhere, then resumed). And this host's files whose render is over:
    its worker died, or it is this process (called between tasks, as solo runs one at a time, so
    a file with this PID was left by an attempt this image, or the one it replaced in place, did
    not finish). A live worker's current attempt is left alone, whichever host it runs on.
    """
    here = socket.gethostname()
    stale = []
    for path in sorted(output_dir.glob(f".{name}.*{PARTIAL_SUFFIX}")):
        owner = _partial_owner(path, name)
        if owner is None:
            continue
        attempt, host, pid = owner
        superseded = attempt is not None and attempt < before_attempt
        local = host in (None, here)
        if superseded or (local and (pid == os.getpid() or not _pid_alive(pid))):
            stale.append(path)
    return stale


def publish(partial: Path, final: Path) -> Path:
    """Put a finished render at its final path in one step (same directory: a rename)."""
    os.replace(partial, final)
    return final


def time_limit_reason(limit_sec: float) -> str:
    return f"exceeded the hard time limit of {limit_sec:g} s"


def _fit_text(text: str, width: int, height: int, share: float) -> tuple[float, int]:
    """Font scale and thickness that make ``text`` span at most ``share`` of the frame."""
    (text_w, text_h), _ = cv2.getTextSize(text or " ", FONT, 1.0, 2)
    scale = min(width * share / max(text_w, 1), height * share * 0.25 / max(text_h, 1))
    return max(scale, 0.2), max(1, round(scale * 2))


def _put_centered(
    frame: np.ndarray, text: str, colour: tuple[int, int, int], y: int, share: float
) -> None:
    height, width = frame.shape[:2]
    scale, thickness = _fit_text(text, width, height, share)
    (text_w, text_h), _ = cv2.getTextSize(text, FONT, scale, thickness)
    origin = ((width - text_w) // 2, y + text_h // 2)
    cv2.putText(frame, text, origin, FONT, scale, colour, thickness, cv2.LINE_AA)


def draw_slide(spec: VideoSpec, slide: Slide) -> tuple[np.ndarray, np.ndarray]:
    """The slide's empty background and its full frame (the fade blends the two)."""
    background = np.empty((spec.height, spec.width, 3), dtype=np.uint8)
    background[:] = slide.background
    full = background.copy()
    if slide.text:
        _put_centered(full, slide.text, slide.color, spec.height // 2, 0.8)
    if spec.title:
        _put_centered(full, spec.title, slide.color, spec.height // 10, 0.5)
    return background, full


def frames(spec: VideoSpec) -> Iterator[np.ndarray]:
    fade = max(1, round(FADE_SEC * spec.fps))
    for slide, count in zip(spec.slides, spec.slide_frames(), strict=True):
        background, full = draw_slide(spec, slide)
        steps = min(fade, count // 3)
        for index in range(count):
            if index < steps:
                alpha = (index + 1) / (steps + 1)
                yield cv2.addWeighted(full, alpha, background, 1.0 - alpha, 0.0)
            else:
                # The same array every time: encoding, not drawing, is the cost of a still slide.
                yield full


def ffmpeg_command(ffmpeg: str, spec: VideoSpec, output: Path) -> list[str]:
    return [
        ffmpeg,
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "bgr24",
        "-s",
        f"{spec.width}x{spec.height}",
        "-r",
        str(spec.fps),
        "-i",
        "pipe:0",
        "-an",
        # One thread everywhere: native thread pools are what crashed the guide's workers.
        "-threads",
        "1",
        "-filter_threads",
        "1",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-pix_fmt",
        "yuv420p",
        "-movflags",
        "+faststart",
        "-f",
        "mp4",
        str(output),
    ]


def _ffmpeg_error(log: IO[bytes], code: int | None) -> str:
    log.seek(0)
    lines = log.read().decode(errors="replace").strip().splitlines()
    return f"ffmpeg failed (exit {code}): {lines[-1] if lines else 'no message'}"


def render_video(
    spec: VideoSpec,
    output_dir: Path,
    name: str,
    *,
    ffmpeg: str,
    deadline: float,
    time_limit_sec: float,
    progress: Progress | None = None,
    attempt: int = 0,
    publish_output: bool = True,
) -> RenderResult:
    """Render ``spec`` to ``output_dir/name.mp4`` before ``deadline`` (``time.monotonic()``;
    ``math.inf``: none, outside the runtime).

    The deadline is checked between frames and bounds the wait for ffmpeg, so an over-long render
    fails with a clear reason before the runtime's hard limit ends it (the task passes the
    deadline of ``celery_stable.remaining()``, and ``time_limit_sec``, the limit the reason names,
    from ``celery_stable.time_limit()``). The output appears only complete: ffmpeg writes this
    attempt's own temp file (:func:`partial_path`) in the same directory, renamed into place
    once done; a worker killed mid-render leaves that temp file (``stale_partials`` finds it for
    the next attempt or the give-up hook). With ``publish_output`` False the result's path is
    that finished temp file, for the caller to :func:`publish` only once it knows the output is
    still wanted (the task: once the video's compare-and-set recorded it), or to remove.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    final = output_path(output_dir, name)
    temp = partial_path(output_dir, name, attempt)
    total = spec.total_frames
    started = time.monotonic()
    finished = False
    with tempfile.TemporaryFile() as log:
        try:
            proc = subprocess.Popen(
                ffmpeg_command(ffmpeg, spec, temp),
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        except OSError as exc:
            raise RenderError(f"cannot start ffmpeg ({ffmpeg}): {exc.strerror}") from None
        assert proc.stdin is not None
        try:
            for index, frame in enumerate(frames(spec)):
                if spec.fault is not None:
                    spec.fault.fire(index)
                if time.monotonic() > deadline:
                    raise RenderError(time_limit_reason(time_limit_sec))
                try:
                    proc.stdin.write(frame.data)
                except BrokenPipeError:
                    raise RenderError(_ffmpeg_error(log, proc.wait())) from None
                if progress:
                    progress(index + 1, total)
            proc.stdin.close()
            try:
                left = None if math.isinf(deadline) else max(0.1, deadline - time.monotonic())
                code = proc.wait(timeout=left)
            except subprocess.TimeoutExpired:
                raise RenderError(time_limit_reason(time_limit_sec)) from None
            if code != 0:
                raise RenderError(_ffmpeg_error(log, code))
            path = publish(temp, final) if publish_output else temp
            finished = True
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            with contextlib.suppress(OSError):
                proc.stdin.close()
            if not finished:
                temp.unlink(missing_ok=True)
    return RenderResult(path=path, frames=total, seconds=time.monotonic() - started)
