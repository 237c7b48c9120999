"""The app's own settings: three variables, each refused with its name, its value and the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from celery_stable.settings import ConfigError

from video_renderer.settings import VideoSettings

from .video_harness import WORKER_ARGS, Harness


def test_defaults() -> None:
    settings = VideoSettings.from_env({})
    assert settings == VideoSettings(Path("/var/lib/celery-stable/videos"), "ffmpeg", False)
    assert VideoSettings.from_env({"VIDEO_RENDERER_FAULT_HOOKS": "1"}).fault_hooks
    assert VideoSettings.defaults() == {
        "VIDEO_RENDERER_OUTPUT_DIR": "/var/lib/celery-stable/videos",
        "VIDEO_RENDERER_FFMPEG": "ffmpeg",
        "VIDEO_RENDERER_FAULT_HOOKS": "0",
    }


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("VIDEO_RENDERER_OUTPUT_DIR", "videos", "expected an absolute path"),
        ("VIDEO_RENDERER_FFMPEG", " ", "it is empty"),
        ("VIDEO_RENDERER_FAULT_HOOKS", "yes", "expected 1 (on) or 0 / empty (off)"),
    ],
)
def test_a_bad_value_names_the_variable_the_value_and_the_fix(
    name: str, value: str, allowed: str
) -> None:
    with pytest.raises(ConfigError) as error:
        VideoSettings.from_env({name: value})
    message = str(error.value)
    assert f"{name} = {value!r} is not valid: {allowed}" in message
    assert "celery_stable_app_env" in message
    assert "unset it to get the default" in message


def test_every_bad_value_at_once() -> None:
    with pytest.raises(ConfigError) as error:
        VideoSettings.from_env({"VIDEO_RENDERER_OUTPUT_DIR": "x", "VIDEO_RENDERER_FFMPEG": ""})
    assert len(str(error.value).splitlines()) == 2


def test_the_worker_refuses_to_start_on_a_bad_value(harness: Harness) -> None:
    result = subprocess.run(
        [sys.executable, *WORKER_ARGS],
        env=harness.env(VIDEO_RENDERER_OUTPUT_DIR="videos"),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    # The runtime's configuration error (EX_CONFIG): systemd's Restart=on-abnormal does not loop.
    assert result.returncode == 78, result.stderr
    assert "VIDEO_RENDERER_OUTPUT_DIR = 'videos' is not valid" in result.stderr
    assert harness.notify.count("READY=1") == 0
