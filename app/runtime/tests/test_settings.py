"""The one table of variables: parsed once, every refusal naming the role variable and the fix."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from celery_stable import settings as settings_module
from celery_stable.settings import (
    VARIABLES,
    ConfigError,
    Settings,
    SystemdEnv,
    check_file,
    command_problems,
    effective_env,
    find_command,
    parse_env_file,
)

SETTINGS_PY = Path(settings_module.__file__)


def test_defaults_are_the_guides() -> None:
    settings = Settings.from_env({})
    assert (settings.max_tasks_per_child, settings.max_memory_per_child_kb) == (10, 256000)
    assert (settings.time_limit_sec, settings.address_space_limit_mb) == (900, 1024)
    assert (settings.max_crashes, settings.stuck_after_sec, settings.stats_interval_sec) == (
        2,
        300,
        120,
    )
    assert settings.broker_url == "redis://127.0.0.1:6379/0"
    assert settings.app_module is None
    assert settings.metrics_file is None


def test_every_variable_of_the_table_has_a_role_variable_but_the_derived_ones() -> None:
    derived = [v.env for v in VARIABLES if v.role_var is None]
    assert derived == [
        "CELERY_STABLE_APP_PATH",
        "CELERY_STABLE_ENV_FILE",
        "CELERY_STABLE_INSTANCE",
        # Test only: never deployed (the role has no variable for it, the env file no line).
        "CELERY_STABLE_TEST_REEXEC_PAUSE_SEC",
    ]
    for variable in VARIABLES:
        if variable.role_var:
            assert variable.role_var.startswith("celery_stable_"), variable


def test_every_bad_value_is_named_at_once_with_the_role_variable_and_the_fix() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(
            {
                "CELERY_STABLE_STATS_INTERVAL_SEC": "0",
                "CELERY_STABLE_MAX_TASKS_PER_CHILD": "ten",
                "CELERY_BROKER_URL": "amqp://guest:s3cret@localhost//",
            },
            "the inventory",
        )
    lines = str(caught.value).splitlines()
    assert lines == [
        "celery_stable_broker_url (CELERY_BROKER_URL) = (hidden) is not valid: expected a Redis "
        "URL such as redis://:PASSWORD@broker.example:6379/0 (redis://, rediss:// or unix://): "
        "the crash ledger lives in the broker's Redis. Fix it in the inventory; unset it to get "
        "the default 'redis://127.0.0.1:6379/0'.",
        "celery_stable_max_tasks_per_child (CELERY_STABLE_MAX_TASKS_PER_CHILD) = 'ten' is not "
        "valid: expected a whole number of tasks from 1 to 1000000. Fix it in the inventory; "
        "unset it to get the default '10'.",
        "celery_stable_stats_interval_sec (CELERY_STABLE_STATS_INTERVAL_SEC) = '0' is not valid: "
        "expected a whole number of seconds from 1 to 86400. Fix it in the inventory; unset it "
        "to get the default '120'.",
    ]
    assert "s3cret" not in str(caught.value)


def test_stuck_after_must_exceed_the_heartbeat() -> None:
    with pytest.raises(ConfigError, match="must be above celery_stable_heartbeat_interval_sec"):
        Settings.from_env(
            {"CELERY_STABLE_STUCK_AFTER_SEC": "10", "CELERY_STABLE_HEARTBEAT_INTERVAL_SEC": "10"}
        )


def test_app_module_and_paths_are_checked() -> None:
    values = {"CELERY_STABLE_APP_MODULE": "core celery", "CELERY_STABLE_METRICS_FILE": "rel/x.prom"}
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(values)
    assert "celery_stable_app_module (CELERY_STABLE_APP_MODULE) = 'core celery'" in str(
        caught.value
    )
    assert "celery_stable_metrics_file" in str(caught.value)
    ok = Settings.from_env({"CELERY_STABLE_APP_MODULE": "core.celery_app:app"})
    assert ok.app_module == "core.celery_app:app"


def test_systemd_environment_watchdog_belongs_to_its_pid() -> None:
    assert (
        SystemdEnv.from_env({"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "1"}, pid=2).watchdog_usec
        is None
    )
    assert SystemdEnv.from_env({"WATCHDOG_USEC": "5000000"}, pid=2).watchdog_usec == 5_000_000


def test_env_file_syntax_as_systemd_reads_it() -> None:
    text = '# c\n\nA="x y"\nB=\'q"\'\nC="a\\"b"\nD=plain\nE="long \\\nline"\n'
    assert parse_env_file(text) == {
        "A": "x y",
        "B": 'q"',
        "C": 'a"b',
        "D": "plain",
        "E": "long line",
    }
    with pytest.raises(ConfigError, match="line 1: expected KEY=value"):
        parse_env_file("not a line")
    with pytest.raises(ConfigError, match="missing closing quote"):
        parse_env_file('A="open')


def test_the_cli_reads_the_file_only_without_a_broker_in_the_environment(tmp_path: Path) -> None:
    env_file = tmp_path / "e.env"
    env_file.write_text('CELERY_BROKER_URL="redis://file/0"\nCELERY_STABLE_MAX_CRASHES="3"\n')
    assert effective_env({}, env_file)["CELERY_STABLE_MAX_CRASHES"] == "3"
    assert effective_env({"CELERY_BROKER_URL": "redis://env/0"}, env_file) == {
        "CELERY_BROKER_URL": "redis://env/0"
    }


def test_the_preflight_check_runs_on_a_bare_python(tmp_path: Path) -> None:
    """The controller may have no Celery: settings.py is run as a file, standard library only."""
    good, bad = tmp_path / "good.env", tmp_path / "bad.env"
    good.write_text(
        'CELERY_BROKER_URL="redis://:p@h:6379/0"\nCELERY_STABLE_APP_MODULE="core.celery_app"\n'
    )
    bad.write_text('CELERY_STABLE_STATS_INTERVAL_SEC="0"\nCELERY_BROKER_URL="redis://:p@h/0"\n')
    python = shutil.which("python3", path="/usr/bin") or sys.executable
    run = [python, "-I", "-S", str(SETTINGS_PY), "check"]
    assert subprocess.run([*run, str(good)], capture_output=True, check=False).returncode == 0
    result = subprocess.run(
        [*run, str(bad), "--source", "the inventory"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert result.stderr.startswith(
        "celery_stable_stats_interval_sec (CELERY_STABLE_STATS_INTERVAL_SEC) = '0'"
    )
    assert "Fix it in the inventory; unset it to get the default '120'." in result.stderr
    other = subprocess.run([*run, str(bad)], capture_output=True, text=True, check=False)
    assert (
        f"Fix it in the inventory and deploy again (it reached this host through {bad})"
        in other.stderr
    )
    assert check_file(tmp_path / "missing.env") == [
        f"{tmp_path / 'missing.env'} does not exist: name the file with --env-file."
    ]


def test_required_commands_are_names_or_absolute_paths() -> None:
    assert Settings.from_env({}).required_commands == ()
    both = Settings.from_env({"CELERY_STABLE_REQUIRED_COMMANDS": " ffmpeg, /opt/x/bin/tool  "})
    assert both.required_commands == ("ffmpeg", "/opt/x/bin/tool")
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"CELERY_STABLE_REQUIRED_COMMANDS": "ffmpeg bin/tool $(true)"})
    message = str(refused.value)
    assert message.startswith(
        "celery_stable_required_commands (CELERY_STABLE_REQUIRED_COMMANDS) = "
        "'ffmpeg bin/tool $(true)' is not valid: 'bin/tool', '$(true)': expected command names"
    )


def test_a_required_command_is_found_as_execvp_would(tmp_path: Path) -> None:
    """Not on PATH, on it but not executable, and a later executable one that wins."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    path = f"{first}:{second}"
    [missing] = command_problems(("tool",), path)
    assert missing == (
        "celery_stable_required_commands (CELERY_STABLE_REQUIRED_COMMANDS) requires 'tool', but "
        f"it is not on PATH ({path}). Fix: install it on this host (the role installs "
        "celery_stable_app_packages), or give its absolute path; or, if the app does not run it, "
        "remove it from celery_stable_required_commands."
    )
    (first / "tool").write_text("#!/bin/sh\n")
    (first / "tool").chmod(0o644)
    [blocked] = command_problems(("tool",), path)
    assert f"requires 'tool', but {first / 'tool'} is not executable. Fix: make it executable" in (
        blocked
    )
    (second / "tool").write_text("#!/bin/sh\n")
    (second / "tool").chmod(0o755)
    assert find_command("tool", path) == (str(second / "tool"), None)
    assert command_problems(("tool", str(second / "tool")), path) == []
    [absent] = command_problems((str(tmp_path / "nowhere"),), path)
    assert f"requires '{tmp_path / 'nowhere'}', but it does not exist." in absent


def test_the_roles_host_check_of_commands_runs_on_a_bare_python(tmp_path: Path) -> None:
    """`settings.py commands PATH CMD...`: 0 all run, 3 only missing, 2 one would not run."""
    (tmp_path / "off").write_text("")
    python = shutil.which("python3", path="/usr/bin") or sys.executable
    run = [python, "-I", "-S", str(SETTINGS_PY), "commands", str(tmp_path)]

    def code(*commands: str) -> int:
        return subprocess.run([*run, *commands], capture_output=True, check=False).returncode

    assert code() == 0
    assert code(str(shutil.which("sh"))) == 0
    assert code("nowhere", str(shutil.which("sh"))) == 3
    assert code("nowhere", "off") == 2
