"""The role's controller-side refusals (tasks/controller_check.yml, tasks/env_check.yml), run
for real on this machine: uv found or not, the requirements files, and every runtime variable
checked by the runtime's own table through the env file the role renders. Each refusal must
name the role variable and the fix, and never show a secret."""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
ROLES = HERE.parent.parent
TOP = ROLES.parent
# The one way the tests run a playbook on this machine (tests/infra/hosts.py).
sys.path.insert(0, str(ROLES.parent / "tests" / "infra"))
from hosts import local_answer  # noqa: E402

PLAIN_APP = TOP / "app" / "runtime" / "tests" / "plainapp"
DEMO_APP = TOP / "app" / "video"
RUNTIME_REQUIREMENTS = TOP / "app" / "runtime" / "requirements.txt"
SECRET = "s3cret-never-shown"
HASH = "--hash=sha256:" + "0" * 64

# A plain-directory app with nothing to install beyond the runtime's requirements.
PLAIN = {
    "celery_stable_app_source": str(PLAIN_APP),
    "celery_stable_app_module": "proj.celery_app",
    "celery_stable_app_requirements": "",
    "celery_stable_app_env": {},
}


def run_case(extra_vars: dict[str, Any], directory: Path) -> str:
    case = directory / f"case-{abs(hash(json.dumps(extra_vars, sort_keys=True)))}.json"
    case.write_text(json.dumps(extra_vars))
    return local_answer(HERE / "preflight.yml", "_celery_stable_test_answer", extra_vars=case)


def requirements(tmp: Path, name: str, text: str) -> str:
    path = tmp / name
    path.write_text(text)
    return str(path)


def non_executable(tmp: Path) -> str:
    path = tmp / "bin" / "ffmpeg"
    path.parent.mkdir(exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o644)
    return str(path)


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("preflight")
    cases: dict[str, dict[str, Any]] = {
        "plain-app": PLAIN,
        "plain-app-hashed-requirements": {
            **PLAIN,
            "celery_stable_app_requirements": requirements(
                tmp, "same-pin.txt", f"vine==5.1.0 \\\n    {HASH}\n    # via kombu\n"
            ),
        },
        "stats-interval-0": {**PLAIN, "celery_stable_stats_interval_sec": 0},
        "several-bad-limits": {
            **PLAIN,
            "celery_stable_max_tasks_per_child": 0,
            "celery_stable_address_space_limit_mb": 100,
        },
        "stuck-within-a-heartbeat": {**PLAIN, "celery_stable_stuck_after_sec": 10},
        "secret-broker-not-redis": {
            **PLAIN,
            "celery_stable_broker_url": f"amqp://user:{SECRET}@rabbit.example//",
        },
        "no-app-module": {**PLAIN, "celery_stable_app_module": ""},
        "unhashed-app-requirements": {
            **PLAIN,
            "celery_stable_app_requirements": requirements(tmp, "plain.txt", "vine==5.1.0\nflask>=3\n"),
        },
        "conflicting-pin": {
            **PLAIN,
            "celery_stable_app_requirements": requirements(tmp, "conflict.txt", f"vine==5.0.0 {HASH}\n"),
        },
        "missing-app-requirements": {
            **PLAIN,
            "celery_stable_app_requirements": str(tmp / "absent.txt"),
        },
        "app-env-sets-a-runtime-variable": {
            **PLAIN,
            "celery_stable_app_env": {"CELERY_STABLE_TIME_LIMIT_SEC": "5"},
        },
        "app-env-line-break": {**PLAIN, "celery_stable_app_env": {"MOTD": "two\nlines"}},
        "no-uv-on-the-controller": {**PLAIN, "_celery_stable_controller_uv": str(tmp / "no-uv")},
        "required-command-bad-name": {**PLAIN, "celery_stable_required_commands": ["ffmpeg;true"]},
        "required-command-missing": {
            **PLAIN,
            "celery_stable_required_commands": ["ffmpeg", "celery-stable-no-such-command"],
            "celery_stable_app_packages": [],
        },
        "required-command-not-executable": {
            **PLAIN,
            "celery_stable_required_commands": [non_executable(tmp)],
        },
        # Only strings: nothing is reached (broker.example is a reserved name).
        "broker-beyond-loopback-in-clear": {
            **PLAIN,
            "celery_stable_broker_url": f"redis://:{SECRET}@broker.example:6379/0",
        },
        "broker-on-loopback-in-clear": {**PLAIN, "celery_stable_broker_url": "redis://[::1]:6379/0"},
        "broker-tls-without-its-ca": {
            **PLAIN,
            "celery_stable_broker_url": f"rediss://:{SECRET}@broker.example:6379/0",
            "celery_stable_broker_tls_ca_cert": str(tmp / "absent-ca.crt"),
        },
        "broker-tls-with-its-ca": {
            **PLAIN,
            "celery_stable_broker_url": f"rediss://:{SECRET}@broker.example:6379/0",
            "celery_stable_broker_tls_ca_cert": requirements(tmp, "ca.crt", "PEM\n"),
        },
        "broker-tls-with-own-ssl-parameters": {
            **PLAIN,
            "celery_stable_broker_url": "rediss://broker.example:6379/0?ssl_cert_reqs=none",
            "celery_stable_broker_tls_ca_cert": requirements(tmp, "ca.crt", "PEM\n"),
        },
        "required-command-from-a-package-to-install": {
            **PLAIN,
            "celery_stable_required_commands": ["celery-stable-no-such-command"],
            "celery_stable_app_packages": ["celery-stable-no-such-package"],
        },
    }
    if (DEMO_APP / "pyproject.toml").is_file():
        cases["demo-defaults"] = {}
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {key: pool.submit(run_case, extra, tmp) for key, extra in cases.items()}
        return {key: future.result() for key, future in futures.items()}


def test_a_plain_app_with_the_runtimes_requirements_passes(answers: dict[str, str]) -> None:
    assert answers["plain-app"] == "ok"
    # The same pin as the runtime's file: uv takes it (hashes intersected), so the role does.
    assert answers["plain-app-hashed-requirements"] == "ok"


def test_the_demo_defaults_pass(answers: dict[str, str]) -> None:
    if "demo-defaults" not in answers:
        pytest.skip("app/video has no pyproject.toml yet")
    assert answers["demo-defaults"] == "ok"


def test_a_bad_limit_is_refused_naming_both_variables(answers: dict[str, str]) -> None:
    got = answers["stats-interval-0"]
    assert got.startswith("refused: localhost: the runtime cannot run with these values"), got
    assert "celery_stable_stats_interval_sec (CELERY_STABLE_STATS_INTERVAL_SEC) = '0' is not valid" in got
    assert "from 1 to 86400" in got
    assert "nothing was changed on any host" in got


def test_every_bad_limit_is_named_at_once(answers: dict[str, str]) -> None:
    got = answers["several-bad-limits"]
    assert "celery_stable_max_tasks_per_child (CELERY_STABLE_MAX_TASKS_PER_CHILD)" in got
    assert "celery_stable_address_space_limit_mb (CELERY_STABLE_ADDRESS_SPACE_LIMIT_MB)" in got


def test_a_relation_of_the_table_is_refused(answers: dict[str, str]) -> None:
    got = answers["stuck-within-a-heartbeat"]
    assert "celery_stable_stuck_after_sec (CELERY_STABLE_STUCK_AFTER_SEC)" in got
    assert "celery_stable_heartbeat_interval_sec" in got


def test_a_secret_is_named_never_shown(answers: dict[str, str]) -> None:
    got = answers["secret-broker-not-redis"]
    assert "celery_stable_broker_url (CELERY_BROKER_URL) = (hidden) is not valid" in got
    assert SECRET not in got


def test_the_app_module_is_required(answers: dict[str, str]) -> None:
    assert "celery_stable_app_module (CELERY_STABLE_APP_MODULE)" in answers["no-app-module"]


def test_unhashed_requirements_are_refused_with_the_fix(answers: dict[str, str]) -> None:
    got = answers["unhashed-app-requirements"]
    assert got.startswith("refused: celery_stable_app_requirements:"), got
    assert "without --hash: vine, flask" in got
    assert "not pinned with ==: flask" in got
    assert "uv pip compile --generate-hashes" in got


def test_a_conflicting_pin_is_refused_naming_both_files(answers: dict[str, str]) -> None:
    got = answers["conflicting-pin"]
    assert "celery_stable_app_requirements pins vine==5.0.0" in got
    assert "celery_stable_runtime_requirements pins vine==5.1.0" in got


def test_a_missing_requirements_file_is_refused(answers: dict[str, str]) -> None:
    got = answers["missing-app-requirements"]
    assert "celery_stable_app_requirements:" in got
    assert "does not exist on the controller" in got


def test_the_app_env_cannot_set_the_runtimes_variables(answers: dict[str, str]) -> None:
    got = answers["app-env-sets-a-runtime-variable"]
    assert "CELERY_STABLE_TIME_LIMIT_SEC" in got
    assert "come from their own role variables" in got


def test_a_line_break_is_refused_by_name(answers: dict[str, str]) -> None:
    got = answers["app-env-line-break"]
    assert "celery_stable_app_env.MOTD" in got
    assert "two" not in got.split("line break")[1]


def test_no_uv_on_the_controller_says_how_to_get_it(answers: dict[str, str]) -> None:
    got = answers["no-uv-on-the-controller"]
    assert "The controller has no working uv" in got
    assert "-m pip install uv" in got
    assert "requirements-dev.txt" in got


def test_a_bad_command_name_is_refused_on_the_controller(answers: dict[str, str]) -> None:
    got = answers["required-command-bad-name"]
    assert "celery_stable_required_commands (CELERY_STABLE_REQUIRED_COMMANDS) = 'ffmpeg;true'" in got
    assert "expected command names (looked up on PATH) or absolute paths" in got


def test_a_missing_command_is_refused_naming_it_and_the_fix(answers: dict[str, str]) -> None:
    got = answers["required-command-missing"]
    assert got.startswith("refused: localhost: a worker would refuse to start on this host"), got
    assert "nothing was changed on any host" in got
    assert "requires 'celery-stable-no-such-command', but it is not on PATH (/usr/local/sbin:" in got
    assert "install it on this host (the role installs celery_stable_app_packages)" in got
    assert "remove it from celery_stable_required_commands" in got
    assert "'ffmpeg'" not in got  # this machine has it, on the units' PATH


def test_a_command_that_is_not_executable_is_refused(answers: dict[str, str]) -> None:
    got = answers["required-command-not-executable"]
    assert got.startswith("refused: localhost: a worker would refuse to start on this host"), got
    assert "/bin/ffmpeg is not executable. Fix: make it executable (chmod 0755" in got


def test_a_command_a_package_still_to_install_may_bring_waits_for_the_install(
    answers: dict[str, str],
) -> None:
    # Checked again on the host by check-config (the env file's validate), once it is installed.
    assert answers["required-command-from-a-package-to-install"] == "ok"


def test_a_broker_beyond_loopback_in_clear_is_refused(answers: dict[str, str]) -> None:
    got = answers["broker-beyond-loopback-in-clear"]
    assert got.startswith("refused: celery_stable_broker_url reaches a broker beyond loopback"), got
    assert "Use rediss://" in got
    assert "Nothing was changed." in got
    assert SECRET not in got


def test_a_broker_on_loopback_may_be_reached_in_clear(answers: dict[str, str]) -> None:
    assert answers["broker-on-loopback-in-clear"] == "ok"


def test_a_tls_broker_needs_its_ca_on_the_controller(answers: dict[str, str]) -> None:
    got = answers["broker-tls-without-its-ca"]
    assert got.startswith("refused: celery_stable_broker_url is rediss:// but"), got
    assert "absent-ca.crt) is not a file on the controller" in got
    assert SECRET not in got
    assert answers["broker-tls-with-its-ca"] == "ok"


def test_the_role_keeps_the_tls_verification_to_itself(answers: dict[str, str]) -> None:
    got = answers["broker-tls-with-own-ssl-parameters"]
    assert got.startswith("refused: celery_stable_broker_url carries ssl_* parameters"), got
    assert "remove them" in got
