"""The operator's command line on any app's tasks: list, status, exit codes, clear refusals."""

from __future__ import annotations

import json

from runtime_harness import Harness, wait_record

from celery_stable.ledger import Ledger


def test_list_and_status_show_any_apps_tasks(harness: Harness, ledger: Ledger) -> None:
    harness.ready_worker()
    ok = harness.send("proj.add", 1, 2)
    bad = harness.send("proj.fails")
    wait_record(ledger, ok, ("done",), 30)
    wait_record(ledger, bad, ("failed",), 30)
    listing = harness.cli("list")
    assert listing.returncode == 0, listing.stderr
    assert "in the ledger: queued=0 running=0 done=1 failed=1" in listing.stdout
    [row] = [line.split() for line in listing.stdout.splitlines() if line.startswith(bad)]
    assert row[:5] == [bad, "failed", "1", "0", "proj.fails"]
    assert " ".join(row[5:]) == "ValueError: the team's own bug"
    failed = json.loads(harness.cli("list", "--state", "failed", "--json").stdout)
    assert [(r["id"], r["name"], r["cause"]) for r in failed] == [(bad, "proj.fails", "error")]
    by_name = json.loads(harness.cli("list", "--name", "proj.add", "--json").stdout)
    assert [r["id"] for r in by_name] == [ok]
    status = harness.cli("status", ok)
    assert "        name: proj.add" in status.stdout
    assert "       state: done" in status.stdout
    assert json.loads(harness.cli("status", ok, "--json").stdout)["attempts"] == 1
    assert harness.cli("status", "nope").returncode == 4


def test_a_missing_broker_is_a_clear_message(harness: Harness) -> None:
    env = harness.env(CELERY_BROKER_URL="redis://:s3cret@127.0.0.1:1/0")
    result = harness.cli("list", env=env)
    assert result.returncode == 3
    assert "cannot reach the broker at redis://:**@127.0.0.1:1/0" in result.stderr
    assert "fix CELERY_BROKER_URL" in result.stderr
    assert "s3cret" not in result.stderr


def test_check_config_names_every_bad_variable(harness: Harness) -> None:
    env_file = harness.tmp / "bad.env"
    env_file.write_text('CELERY_STABLE_MAX_CRASHES="0"\nCELERY_STABLE_TIME_LIMIT_SEC="x"\n')
    result = harness.cli("check-config", "--env-file", str(env_file))
    assert result.returncode == 2
    assert "celery_stable_max_crashes (CELERY_STABLE_MAX_CRASHES) = '0'" in result.stderr
    assert "celery_stable_time_limit_sec (CELERY_STABLE_TIME_LIMIT_SEC) = 'x'" in result.stderr
    env_file.write_text('CELERY_BROKER_URL="redis://h/0"\n')
    assert harness.cli("check-config", "--env-file", str(env_file)).returncode == 0
    bad_env = harness.env(CELERY_STABLE_MAX_CRASHES="0")
    refused = harness.cli("list", env=bad_env)
    assert refused.returncode == 2
    assert "celery_stable_max_crashes" in refused.stderr


def test_check_config_refuses_a_required_command_missing_or_not_executable(
    harness: Harness,
) -> None:
    env_file = harness.tmp / "app.env"
    env_file.write_text(
        'CELERY_BROKER_URL="redis://h/0"\nCELERY_STABLE_REQUIRED_COMMANDS="ffmpeg"\n'
    )
    bin_dir = harness.tmp / "bin"
    bin_dir.mkdir()
    env = harness.env(PATH=str(bin_dir))
    missing = harness.cli("check-config", "--env-file", str(env_file), env=env)
    assert missing.returncode == 2
    assert (
        "celery_stable_required_commands (CELERY_STABLE_REQUIRED_COMMANDS) requires 'ffmpeg', "
        f"but it is not on PATH ({bin_dir}). Fix: install it on this host" in missing.stderr
    )
    (bin_dir / "ffmpeg").write_text("#!/bin/sh\n")
    (bin_dir / "ffmpeg").chmod(0o644)
    blocked = harness.cli("check-config", "--env-file", str(env_file), env=env)
    assert blocked.returncode == 2
    assert f"but {bin_dir / 'ffmpeg'} is not executable. Fix: make it executable" in blocked.stderr
    # The system's own ffmpeg, later on the PATH, is the one a worker would run.
    fixed = harness.cli(
        "check-config",
        "--env-file",
        str(env_file),
        env=harness.env(PATH=f"{bin_dir}:/usr/bin:/bin"),
    )
    assert fixed.returncode == 0, fixed.stderr
    # A PATH in the file is the one the units' processes get.
    env_file.write_text(env_file.read_text() + f'PATH="{bin_dir}"\n')
    assert harness.cli("check-config", "--env-file", str(env_file)).returncode == 2
    # check-app, which a reload runs on the new image before re-executing into it, refuses too.
    app_env = harness.env(CELERY_STABLE_REQUIRED_COMMANDS="ffmpeg", PATH=str(bin_dir))
    refused = harness.cli("check-app", env=app_env)
    assert refused.returncode == 2
    assert f"but {bin_dir / 'ffmpeg'} is not executable" in refused.stderr
