"""Small helpers shared by the tests (pytest puts this directory on sys.path)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery_stable.jobs import JobStore


def wait_for(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = 0.05,
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def video_spec(
    seconds: float = 1.0,
    fault: dict[str, Any] | None = None,
    *,
    width: int = 96,
    height: int = 64,
    fps: int = 10,
    text: str = "hello",
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "title": "test",
        "width": width,
        "height": height,
        "fps": fps,
        "slides": [
            {"text": text, "duration": seconds, "background": "#203040", "color": "#ffffff"}
        ],
    }
    if fault is not None:
        spec["fault"] = fault
    return spec


def ffprobe(path: Path) -> dict[str, Any]:
    result = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,width,height,pix_fmt,nb_read_frames:format=duration",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(result.stdout)
    stream = data["streams"][0]
    return {
        "codec": stream["codec_name"],
        "width": stream["width"],
        "height": stream["height"],
        "pix_fmt": stream["pix_fmt"],
        "frames": int(stream["nb_read_frames"]),
        "duration": float(data["format"]["duration"]),
    }


def wait_state(
    store: JobStore,
    job_id: str,
    states: tuple[str, ...],
    timeout: float,
) -> Any:
    def check() -> Any:
        record = store.get(job_id)
        return record if record and record.state in states else None

    return wait_for(check, timeout, f"video {job_id} to be {'/'.join(states)}")
