"""What the video tests drive: the video app's workers, submissions and records.

The machinery (a real redis-server, real worker processes, the sd_notify socket the test owns
as systemd would) is :mod:`celery_stable.testing`, as for the runtime's own tests
(app/runtime/tests/runtime_harness.py); this module points it at the video app. It has its own
name so both suites can run in one pytest session.
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Any

from celery_stable.ledger import Ledger, TaskRecord
from celery_stable.testing import (
    NotifyListener,
    RedisServer,
    WorkerHarness,
    WorkerProcess,
    wait_for,
    worker_args,
)

from video_renderer.celery_app import QUEUE, app
from video_renderer.jobs import VideoRecord, VideoStore
from video_renderer.tasks import RENDER_TASK

__all__ = [
    "INIT_LINES",
    "WORKER_ARGS",
    "Harness",
    "NotifyListener",
    "RedisServer",
    "WorkerProcess",
    "ffprobe",
    "partial_name",
    "video_spec",
    "wait_for",
]

WORKER_ARGS = worker_args(QUEUE)
INIT_LINES = (
    "Worker process initialized avec optimisations anti-crash",
    "OpenCV configuré en single-thread",
    "Limite mémoire processus configurée (1GB)",
)


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


def partial_name(video_id: str, attempt: int, pid: int) -> str:
    """The temp file an attempt of ``video_id`` renders to, by a worker of this host."""
    return f".{video_id}.attempt{attempt}.{socket.gethostname()}.{pid}.partial.mp4"


def ffprobe(path: Path) -> dict[str, Any]:
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
         "stream=codec_name,width,height,pix_fmt,nb_read_frames:format=duration", "-of", "json",
         str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
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


class Harness(WorkerHarness):
    """Workers of the video app, video submissions, both commands (the app's and the runtime's)."""

    queue = QUEUE

    def __init__(
        self, server: RedisServer, store: VideoStore, tmp: Path, notify: NotifyListener
    ) -> None:
        super().__init__(server, tmp, notify)
        self.store = store
        self.ledger: Ledger = store.ledger
        self.output_dir = tmp / "videos"

    def base_env(self) -> dict[str, str]:
        return {
            "CELERY_BROKER_URL": self.server.url(0),
            "CELERY_STABLE_APP_MODULE": "video_renderer.celery_app",
            "CELERY_STABLE_GIVEUP_TASK": "video_renderer.mark_given_up",
            "VIDEO_RENDERER_OUTPUT_DIR": str(self.output_dir),
            "VIDEO_RENDERER_FAULT_HOOKS": "1",
        }

    def env(self, **overrides: str) -> dict[str, str]:
        env = super().env(**overrides)
        # The app's own variables come from the test only, never from the developer's shell.
        own = {**self.base_env(), **overrides}
        for key in [k for k in env if k.startswith("VIDEO_RENDERER_") and k not in own]:
            del env[key]
        return env

    def cli(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """The app's own command, ``video-renderer``."""
        return self.run("video_renderer", *args, **kwargs)

    def submit(self, spec: dict[str, Any]) -> str:
        """What ``video-renderer submit`` does, in-process (the CLI has tests of its own)."""
        record = self.store.create(spec)
        app.send_task(RENDER_TASK, args=[record.id], task_id=record.id)
        return record.id

    def video(self, video_id: str) -> VideoRecord:
        record = self.store.get(video_id)
        assert record is not None, video_id
        return record

    def task(self, video_id: str) -> TaskRecord:
        record = self.ledger.get(video_id)
        assert record is not None, video_id
        return record

    def wait_video(self, video_id: str, states: tuple[str, ...], timeout: float) -> VideoRecord:
        def check() -> VideoRecord | None:
            record = self.store.get(video_id)
            return record if record and record.state in states else None

        return wait_for(check, timeout, f"video {video_id} to be {'/'.join(states)}")

    def wait_task(self, video_id: str, states: tuple[str, ...], timeout: float) -> TaskRecord:
        def check() -> TaskRecord | None:
            record = self.ledger.get(video_id)
            return record if record and record.state in states else None

        return wait_for(check, timeout, f"task {video_id} to be {'/'.join(states)} in the ledger")

    def files_of(self, video_id: str) -> list[str]:
        """Everything under the output directory named after the video (temp files included)."""
        if not self.output_dir.exists():
            return []
        return sorted(path.name for path in self.output_dir.iterdir() if video_id in path.name)
