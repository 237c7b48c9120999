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
