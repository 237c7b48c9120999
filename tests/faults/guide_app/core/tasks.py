"""The team's video task, as its users would write it: OpenCV frames piped into ffmpeg; the
guide's recovery job; and the few lines that mark a video failed when celery-stable gives its
task up.

No celery_stable code. The spec is the matrix's (the same JSON the demo app takes), and the
`fault` key is a test hook, doing the same real things as the demo's (a real SIGSEGV, a native
sleep holding the GIL...).
"""

import ctypes
import os
import subprocess
import time

import cv2
import numpy as np
from celery.utils.log import get_task_logger

from . import videos
from .celery_app import STUCK_AFTER_SEC, app

logger = get_task_logger(__name__)

OUTPUT_DIR = os.environ.get("GUIDE_OUTPUT_DIR", "/var/lib/guide-app/videos")
MIB = 1024 * 1024
_retained = []  # what a `leak` keeps alive across tasks, as a real leak does


def _colour(value):
    value = value.lstrip("#")
    red, green, blue = (int(value[i : i + 2], 16) for i in (0, 2, 4))
    return (blue, green, red)


def _fire(fault, frame, redelivered):
    if not fault:
        return
    if fault.get("on_attempts") and redelivered:
        return
    kind, at_frame = fault["kind"], fault.get("at_frame", 0)
    if kind == "slow" and frame >= at_frame:
        time.sleep(fault.get("seconds", 0.1))
        return
    if frame != at_frame:
        return
    if kind == "segfault":
        ctypes.string_at(0)
    elif kind == "hang_gil":
        ctypes.PyDLL(None).sleep(ctypes.c_uint(int(fault.get("seconds", 3600))))
    elif kind == "hang":
        time.sleep(fault.get("seconds", 3600))
    elif kind == "leak":
        _retained.append(bytearray(b"\xa5") * (fault.get("mb", 0) * MIB))
    elif kind == "alloc_bomb":
        hoard, limit = [], (fault.get("mb") or 1 << 42) * MIB
        while len(hoard) * 16 * MIB < limit:
            hoard.append(bytearray(b"\x5a") * (16 * MIB))
    elif kind == "raise":
        raise RuntimeError(f"fault hook: unexpected error at frame {frame}")


@app.task(name="core.tasks.generate_video", bind=True)
def generate_video(self, video_id, spec):
    videos.mark(video_id, "processing")
    try:
        result = _render(self, video_id, spec)
    except Exception as exc:
        videos.mark(video_id, "failed", f"{type(exc).__name__}: {exc}")
        raise
    videos.mark(video_id, "done")
    return result


def _render(self, video_id, spec):
    width, height, fps = spec["width"], spec["height"], spec["fps"]
    os.makedirs(OUTPUT_DIR, exist_ok=True)
    output = os.path.join(OUTPUT_DIR, f"{video_id}.mp4")
    ffmpeg = subprocess.Popen(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "bgr24",
            "-s",
            f"{width}x{height}",
            "-r",
            str(fps),
            "-i",
            "pipe:0",
            "-an",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-pix_fmt",
            "yuv420p",
            output,
        ],
        stdin=subprocess.PIPE,
    )
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    # Not the guide's: a probe so the matrix can count how often each video runs (the guide's
    # command line logs at WARNING, so Celery's own "received" lines are not printed).
    logger.warning("guide render start %s (redelivered=%s)", self.request.id, redelivered)
    frame_no = 0
    try:
        for slide in spec["slides"]:
            image = np.full((height, width, 3), _colour(slide["background"]), dtype=np.uint8)
            cv2.putText(
                image,
                slide["text"],
                (10, height // 2),
                cv2.FONT_HERSHEY_SIMPLEX,
                1.0,
                _colour(slide["color"]),
                2,
                cv2.LINE_AA,
            )
            for _ in range(round(slide["duration"] * fps)):
                _fire(spec.get("fault"), frame_no, redelivered)
                ffmpeg.stdin.write(image.tobytes())
                frame_no += 1
        ffmpeg.stdin.close()
        if ffmpeg.wait() != 0:
            raise RuntimeError(f"ffmpeg exited {ffmpeg.returncode}")
    finally:
        if ffmpeg.poll() is None:
            ffmpeg.kill()
            ffmpeg.wait()
    return {"output": output, "frames": frame_no}


@app.task(name="core.tasks.recover_stuck_videos")
def recover_stuck_videos():
    """The guide's recovery: every 3 minutes, videos stuck over 5 minutes are marked failed."""
    count = 0
    for video in videos.stuck():
        videos.mark(video["id"], "failed", f"stuck over {STUCK_AFTER_SEC:g} s: retry manuel")
        count += 1
    logger.warning("guide recovery: %d stuck video(s) marked failed", count)
    return count


@app.task(name="core.tasks.mark_video_failed")
def mark_video_failed(task_name, task_id, args, kwargs, cause, reason):
    """celery-stable gave a task up (celery_stable_giveup_task): the video waits for a manual retry."""
    if task_name == "core.tasks.generate_video":
        videos.mark(args[0], "failed", f"{cause}: {reason}")
