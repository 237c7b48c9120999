"""The renderer alone: real frames through the system ffmpeg, checked with ffprobe."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from video_renderer.render import RenderError, render_video, stale_partials
from video_renderer.spec import validate_spec

from .video_harness import ffprobe, video_spec


def test_renders_an_h264_mp4_of_the_right_size_length_and_frames(tmp_path: Path) -> None:
    raw = video_spec(1.0, width=160, height=90, fps=12)
    raw["slides"].append(
        {"text": "two", "duration": 0.5, "background": "#ff0000", "color": "#00ff00"}
    )
    spec = validate_spec(raw, allow_fault=False)
    seen: list[int] = []
    result = render_video(
        spec,
        tmp_path,
        "job1",
        ffmpeg="ffmpeg",
        deadline=time.monotonic() + 60,
        time_limit_sec=60,
        progress=lambda frame, _total: seen.append(frame),
    )
    assert result.path == tmp_path / "job1.mp4"
    info = ffprobe(result.path)
    assert info == {
        "codec": "h264",
        "width": 160,
        "height": 90,
        "pix_fmt": "yuv420p",
        "frames": 18,
        "duration": pytest.approx(1.5, abs=0.05),
    }
    assert seen == list(range(1, 19))
    assert [p.name for p in tmp_path.iterdir()] == ["job1.mp4"]


def test_cooperative_deadline_fails_cleanly_and_leaves_no_file(tmp_path: Path) -> None:
    spec = validate_spec(video_spec(30.0, {"kind": "slow", "seconds": 0.05}), allow_fault=True)
    started = time.monotonic()
    with pytest.raises(RenderError, match="exceeded the hard time limit of 1 s"):
        render_video(
            spec, tmp_path, "slow", ffmpeg="ffmpeg", deadline=started + 1, time_limit_sec=1
        )
    assert time.monotonic() - started < 3
    assert list(tmp_path.iterdir()) == []


def test_a_hold_fault_renders_on_once_its_file_appears(tmp_path: Path) -> None:
    release = tmp_path / "release"
    fault = {"kind": "hold", "at_frame": 2, "path": str(release), "seconds": 60}
    spec = validate_spec(video_spec(0.5, fault), allow_fault=True)
    out = tmp_path / "videos"
    out.mkdir()
    threading.Timer(1.5, release.touch).start()
    started = time.monotonic()
    render_video(spec, out, "held", ffmpeg="ffmpeg", deadline=started + 60, time_limit_sec=60)
    # Held until the file appeared (1.5 s), not for its 60-s cap.
    assert 1.5 <= time.monotonic() - started < 10
    assert [p.name for p in out.iterdir()] == ["held.mp4"]


def test_missing_ffmpeg_is_a_clear_error(tmp_path: Path) -> None:
    spec = validate_spec(video_spec(), allow_fault=False)
    with pytest.raises(RenderError, match="cannot start ffmpeg"):
        render_video(
            spec,
            tmp_path,
            "x",
            ffmpeg="/nonexistent/ffmpeg",
            deadline=time.monotonic() + 10,
            time_limit_sec=10,
        )


def fake_ffmpeg(tmp_path: Path, body: str) -> str:
    script = tmp_path / "ffmpeg"
    script.write_text(f"#!/bin/sh\ncat >/dev/null\n{body}\n")
    script.chmod(0o755)
    return str(script)


def test_ffmpeg_is_bounded_by_the_remaining_time(tmp_path: Path) -> None:
    spec = validate_spec(video_spec(0.5), allow_fault=False)
    started = time.monotonic()
    with pytest.raises(RenderError, match="exceeded the hard time limit of 2 s"):
        render_video(spec, tmp_path / "out", "x", ffmpeg=fake_ffmpeg(tmp_path, "sleep 60"),
                     deadline=started + 2, time_limit_sec=2)  # fmt: skip
    assert time.monotonic() - started < 4


def test_ffmpeg_failure_is_reported_with_its_message(tmp_path: Path) -> None:
    spec = validate_spec(video_spec(0.5), allow_fault=False)
    ffmpeg = fake_ffmpeg(tmp_path, "echo 'Unknown encoder libx264' >&2; exit 3")
    with pytest.raises(RenderError, match=r"ffmpeg failed \(exit 3\): Unknown encoder libx264"):
        render_video(spec, tmp_path / "out", "x", ffmpeg=ffmpeg,
                     deadline=time.monotonic() + 10, time_limit_sec=10)  # fmt: skip
    assert list((tmp_path / "out").iterdir()) == []


def test_stale_partials_are_older_attempts_anywhere_or_dead_workers_here(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    alive = os.getppid()
    here = socket.gethostname()
    stale = [
        f".v1.attempt2.{here}.{dead.pid}.partial.mp4",  # its worker died
        f".v1.attempt3.{here}.{os.getpid()}.partial.mp4",  # this process's unfinished attempt
        f".v1.attempt1.{here}.{alive}.partial.mp4",  # a live but superseded attempt
        f".v1.attempt2.other.host.example.{alive}.partial.mp4",  # superseded, on another host
        f".v1.{dead.pid}.partial.mp4",  # as an older version named them
    ]
    kept = [
        f".v1.attempt3.{here}.{alive}.partial.mp4",  # a live worker's current attempt
        f".v1.attempt3.other.host.example.{dead.pid}.partial.mp4",  # another host's PID space
        f".v1.{alive}.partial.mp4",
        f".v2.attempt1.{here}.{dead.pid}.partial.mp4",
        ".v1.attemptx.h.1.partial.mp4",
        "v1.mp4",
    ]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"")
    found = stale_partials(tmp_path, "v1", before_attempt=3)
    assert [p.name for p in found] == sorted(stale)
    assert stale_partials(tmp_path / "missing", "v1") == []


def test_an_unpublished_render_stays_in_its_own_temp_file(tmp_path: Path) -> None:
    spec = validate_spec(video_spec(0.3), allow_fault=False)
    result = render_video(spec, tmp_path, "v1", ffmpeg="ffmpeg", deadline=time.monotonic() + 60,
                          time_limit_sec=60, attempt=4, publish_output=False)  # fmt: skip
    own = f".v1.attempt4.{socket.gethostname()}.{os.getpid()}.partial.mp4"
    assert result.path == tmp_path / own
    assert ffprobe(result.path)["frames"] == 3
    assert [p.name for p in tmp_path.iterdir()] == [result.path.name]
