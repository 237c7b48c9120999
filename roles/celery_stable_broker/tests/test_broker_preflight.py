"""The broker role's refusals (meta/argument_specs.yml, tasks/preflight.yml), run for real on this
machine before anything would change: each names the variable, the risk and the fix, and never
shows a password. Addresses here are only strings (192.0.2.0/24 is reserved for documentation):
nothing is reached."""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
ROLES = HERE.parent.parent
# The one way the tests run a playbook on this machine (tests/infra/hosts.py).
sys.path.insert(0, str(ROLES.parent / "tests" / "infra"))
from hosts import local_answer  # noqa: E402

SECRET = "s3cret-never-shown"
EXPOSED = {"celery_stable_broker_bind": ["192.0.2.10"]}


def run_case(extra_vars: dict[str, Any], directory: Path, name: str) -> str:
    case = directory / f"{name}.json"
    case.write_text(json.dumps(extra_vars))
    return local_answer(HERE / "preflight.yml", "_celery_stable_broker_test_answer", extra_vars=case)


def pem(directory: Path, name: str) -> str:
    path = directory / name
    path.write_text("PEM\n")
    return str(path)


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("broker-preflight")
    absent_ca = str(tmp / "made-here" / "ca.crt")
    cases: dict[str, dict[str, Any]] = {
        "defaults": {},
        "not-systemd": {"service_mgr": "sysvinit"},
        "bad-type": {"celery_stable_broker_port": "many"},
        "exposed-without-password": {
            **EXPOSED,
            "celery_stable_broker_tls": True,
            "celery_stable_broker_tls_ca_cert": absent_ca,
        },
        "exposed-in-clear": {**EXPOSED, "celery_stable_broker_password": SECRET},
        "exposed-with-tls-and-password": {
            **EXPOSED,
            "celery_stable_broker_password": SECRET,
            "celery_stable_broker_tls": True,
            "celery_stable_broker_tls_ca_cert": absent_ca,
        },
        "acl-without-password": {"celery_stable_broker_acl": True},
        "user-default": {"celery_stable_broker_user": "default"},
        "user-with-a-space": {"celery_stable_broker_user": "celery stable"},
        "app-key-with-a-space": {"celery_stable_broker_app_keys": ["videos*", "my app:*"]},
        "cert-without-key": {"celery_stable_broker_tls": True, "celery_stable_broker_tls_cert": pem(tmp, "broker.crt")},
        "own-files-absent": {
            "celery_stable_broker_tls": True,
            "celery_stable_broker_tls_ca_cert": str(tmp / "absent" / "ca.crt"),
            "celery_stable_broker_tls_cert": pem(tmp, "broker.crt"),
            "celery_stable_broker_tls_key": pem(tmp, "broker.key"),
        },
        "ca-without-its-key": {
            "celery_stable_broker_tls": True,
            "celery_stable_broker_tls_ca_cert": pem(tmp, "ca.crt"),
        },
    }
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {key: pool.submit(run_case, extra, tmp, key) for key, extra in cases.items()}
        found = {key: future.result() for key, future in futures.items()}
    for answer in found.values():
        assert SECRET not in answer
    return found


def test_the_defaults_and_a_protected_exposed_broker_pass(answers: dict[str, str]) -> None:
    assert answers["defaults"] == "ok"
    # No CA yet on the controller: the role makes one (tasks/ca.yml).
    assert answers["exposed-with-tls-and-password"] == "ok"


def test_a_host_without_systemd_is_refused(answers: dict[str, str]) -> None:
    got = answers["not-systemd"]
    assert got.startswith("refused: localhost is managed by sysvinit, not systemd"), got
    assert "Target a systemd host." in got


def test_a_wrong_type_is_refused_by_the_argument_specs(answers: dict[str, str]) -> None:
    got = answers["bad-type"]
    assert got.startswith("refused:"), got
    assert "celery_stable_broker_port" in got
    assert "int" in got


def test_an_exposed_broker_needs_a_password(answers: dict[str, str]) -> None:
    got = answers["exposed-without-password"]
    assert "celery_stable_broker_bind ['192.0.2.10'] goes beyond loopback but" in got, got
    assert "celery_stable_broker_password is empty" in got
    assert "Nothing was changed." in got


def test_an_exposed_broker_needs_tls(answers: dict[str, str]) -> None:
    got = answers["exposed-in-clear"]
    assert "goes beyond loopback without TLS" in got, got
    assert "Set celery_stable_broker_tls: true" in got


def test_acl_users_need_a_password(answers: dict[str, str]) -> None:
    got = answers["acl-without-password"]
    assert "celery_stable_broker_acl is on but celery_stable_broker_password is empty" in got, got


def test_the_workers_user_is_a_plain_name_redis_does_not_keep(answers: dict[str, str]) -> None:
    assert "celery_stable_broker_user (default) must be a plain name" in answers["user-default"]
    got = answers["user-with-a-space"]
    assert "celery_stable_broker_user (celery stable) must be a plain name" in got, got


def test_an_app_key_pattern_is_one_word(answers: dict[str, str]) -> None:
    got = answers["app-key-with-a-space"]
    assert "each must be one Redis key pattern without spaces" in got, got
    assert "my app:*" in got


def test_an_own_certificate_comes_with_its_key_and_files(answers: dict[str, str]) -> None:
    got = answers["cert-without-key"]
    assert "Give both celery_stable_broker_tls_cert and celery_stable_broker_tls_key" in got, got
    got = answers["own-files-absent"]
    assert "absent/ca.crt does not exist on the controller" in got, got


def test_a_ca_without_its_key_cannot_sign(answers: dict[str, str]) -> None:
    got = answers["ca-without-its-key"]
    assert "ca.crt exists but its key" in got, got
    assert "ca.key does not: the role cannot sign" in got
