"""Configuration: the guide's defaults, and bad values that stop start-up naming the variable."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from celery_stable.sdnotify import Notifier
from celery_stable.settings import ConfigError, Settings, SystemdEnv, parse_env_file

CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "contract.md"


def test_defaults_are_the_guides_and_the_contracts() -> None:
    settings = Settings.from_env({})
    assert settings.max_tasks_per_child == 10
    assert settings.max_memory_per_child_kb == 256000
    assert settings.time_limit_sec == 900
    assert settings.address_space_limit_mb == 1024
    assert settings.max_crashes == 2
    assert settings.stuck_after_sec == 300
    assert settings.stats_interval_sec == 120
    assert settings.visibility_timeout == 1200
    assert settings.metrics_file is None
    assert not settings.fault_hooks
    if CONTRACT.exists():
        rows = re.findall(
            r"^\| `(CELERY_STABLE_\w+)` \| `?([^`|]*?)`? \|", CONTRACT.read_text(), re.MULTILINE
        )
        documented = {
            name: ("" if default.startswith("empty") else default) for name, default in rows
        }
        assert documented == {
            k: v for k, v in Settings.defaults().items() if k != "CELERY_STABLE_FAULT_HOOKS"
        }


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("CELERY_STABLE_TIME_LIMIT_SEC", "abc", "whole number of seconds from 1"),
        ("CELERY_STABLE_TIME_LIMIT_SEC", "0", "whole number of seconds from 1"),
        ("CELERY_STABLE_MAX_CRASHES", "-1", "crashes from 1"),
        ("CELERY_STABLE_BROKER_URL", "amqp://x", "Redis URL"),
        ("CELERY_STABLE_OUTPUT_DIR", "videos", "absolute path"),
        ("CELERY_STABLE_FAULT_HOOKS", "yes", "expected 1"),
    ],
)
def test_bad_value_names_variable_value_and_what_is_allowed(
    name: str, value: str, allowed: str
) -> None:
    with pytest.raises(ConfigError) as error:
        Settings.from_env({name: value})
    assert name in str(error.value)
    assert value in str(error.value)
    assert allowed in str(error.value)


def test_env_file_syntax_of_systemd() -> None:
    text = """# comment
; other comment
CELERY_STABLE_QUEUE="vid eos"
CELERY_STABLE_FFMPEG=/usr/bin/ffmpeg
OPENCV_FFMPEG_CAPTURE_OPTIONS="rtsp_transport;udp"
QUOTED="a \\"b\\" c"
CONT=one\\
two
"""
    env = parse_env_file(text)
    assert env["CELERY_STABLE_QUEUE"] == "vid eos"
    assert env["CELERY_STABLE_FFMPEG"] == "/usr/bin/ffmpeg"
    assert env["OPENCV_FFMPEG_CAPTURE_OPTIONS"] == "rtsp_transport;udp"
    assert env["QUOTED"] == 'a "b" c'
    assert env["CONT"] == "onetwo"
    with pytest.raises(ConfigError, match="line 1"):
        parse_env_file("not a line")


def test_check_config_exit_codes(tmp_path: Path) -> None:
    good = tmp_path / "good.env"
    good.write_text('CELERY_STABLE_TIME_LIMIT_SEC="900"\nOMP_NUM_THREADS="1"\n')
    bad = tmp_path / "bad.env"
    bad.write_text('CELERY_STABLE_TIME_LIMIT_SEC="abc"\n')
    run = [sys.executable, "-m", "celery_stable", "check-config", "--env-file"]
    ok = subprocess.run([*run, str(good)], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    failed = subprocess.run([*run, str(bad)], capture_output=True, text=True, check=False)
    assert failed.returncode == 2
    assert "CELERY_STABLE_TIME_LIMIT_SEC='abc'" in failed.stderr


def test_worker_refuses_to_start_on_a_bad_value(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "CELERY_STABLE_TIME_LIMIT_SEC": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "celery_stable.celery_app", "worker", "--pool=solo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "CELERY_STABLE_TIME_LIMIT_SEC='0'" in result.stderr
    assert "from 1 to" in result.stderr


def test_watchdog_env_only_for_the_named_pid() -> None:
    assert SystemdEnv.from_env({"WATCHDOG_USEC": "4000000"}, pid=7).watchdog_usec == 4000000
    assert (
        SystemdEnv.from_env({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "8"}, pid=7).watchdog_usec
        is None
    )


def test_sd_notify_abstract_namespace() -> None:
    name = f"celery-stable-test-{id(object())}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        server.settimeout(2)
        assert Notifier("@" + name).send("READY=1", "STATUS=ok")
        assert server.recv(100) == b"READY=1\nSTATUS=ok"
    assert not Notifier(None).send("READY=1")
