"""The Python provider chosen per platform (tasks/python_provider.yml), for platforms this
machine cannot run: the role's own tasks, run on localhost with pretend distribution and
architecture facts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROLES = HERE.parent.parent
# The one way the tests run a playbook on this machine (tests/infra/hosts.py).
sys.path.insert(0, str(ROLES.parent / "tests" / "infra"))
from hosts import local_answer  # noqa: E402

# id: (os key, arch, provider asked, python version) -> expected answer (or refusal's start)
CASES = {
    "ubuntu-24.04-arm64": ("Ubuntu-24.04", "aarch64", "auto", "3.12", "distro"),
    "ubuntu-24.04-amd64": ("Ubuntu-24.04", "x86_64", "auto", "3.12", "distro"),
    "ubuntu-22.04-arm64": ("Ubuntu-22.04", "aarch64", "auto", "3.12", "deadsnakes"),
    "ubuntu-22.04-amd64": ("Ubuntu-22.04", "x86_64", "auto", "3.12", "deadsnakes"),
    "debian-12-arm64": ("Debian-12", "aarch64", "auto", "3.12", "uv"),
    "debian-12-amd64": ("Debian-12", "x86_64", "auto", "3.12", "uv"),
    "debian-13-arm64": ("Debian-13", "aarch64", "auto", "3.12", "uv"),
    "rocky-9-amd64": ("Rocky-9.4", "x86_64", "auto", "3.12", "uv"),
    "ubuntu-25.04-arm64": ("Ubuntu-25.04", "aarch64", "auto", "3.12", "uv"),
    "debian-12-forced-uv": ("Debian-12", "x86_64", "uv", "3.12", "uv"),
    "ubuntu-24.04-forced-uv": ("Ubuntu-24.04", "aarch64", "uv", "3.12", "uv"),
    "debian-12-wants-3.11": ("Debian-12", "aarch64", "auto", "3.11", "distro"),
    # 24.04 packages 3.12 as python3, not 3.11: deadsnakes builds the others for it.
    "ubuntu-24.04-wants-3.11": ("Ubuntu-24.04", "x86_64", "auto", "3.11", "deadsnakes"),
    "ubuntu-22.04-forced-distro": ("Ubuntu-22.04", "x86_64", "distro", "3.12", "refused"),
    "debian-13-amd64-forced-distro": ("Debian-13", "x86_64", "distro", "3.12", "refused"),
    "ubuntu-24.04-arm64-forced-deadsnakes": (
        "Ubuntu-24.04",
        "aarch64",
        "deadsnakes",
        "3.12",
        "deadsnakes",
    ),
    "debian-13-forced-distro": ("Debian-13", "aarch64", "distro", "3.12", "refused"),
    "debian-12-forced-deadsnakes": ("Debian-12", "x86_64", "deadsnakes", "3.12", "refused"),
}


# id: mirror inputs -> the variables every uv call (uv) and the pip call installing uv (pip) get,
# beyond uv's fixed ones (install dir, cache dir, no progress bar, system certificates).
UV_FIXED = {
    "UV_PYTHON_INSTALL_DIR": "/opt/celery-stable/python",
    "UV_CACHE_DIR": "/var/cache/celery-stable/uv",
    "UV_NO_PROGRESS": "1",
    "UV_SYSTEM_CERTS": "true",
}
UV_ENV_CASES = {
    "internet": ({}, {}, {}),
    "python-build-standalone-mirror": (
        {"uv_python_mirror": "https://artifacts.example/pbs"},
        {"UV_PYTHON_INSTALL_MIRROR": "https://artifacts.example/pbs"},
        {},
    ),
    "own-downloads-list": (
        {"downloads_json_url": "file:///srv/celery-stable-mirror/downloads.json"},
        {"UV_PYTHON_DOWNLOADS_JSON_URL": "file:///srv/celery-stable-mirror/downloads.json"},
        {},
    ),
    "index-and-wheelhouses": (
        {
            "pip_index_url": "https://artifacts.example/pypi/simple",
            "pip_find_links": ["/srv/wheels", "https://artifacts.example/wheels/"],
        },
        {
            "UV_DEFAULT_INDEX": "https://artifacts.example/pypi/simple",
            "UV_FIND_LINKS": "/srv/wheels,https://artifacts.example/wheels/",
        },
        {
            "PIP_INDEX_URL": "https://artifacts.example/pypi/simple",
            "PIP_FIND_LINKS": "/srv/wheels https://artifacts.example/wheels/",
        },
    ),
}


def run_playbook(playbook: str, **cases: str) -> dict:
    """Run one of this directory's playbooks; the last task's `_celery_stable_test_answers`."""
    return local_answer(HERE / playbook, "_celery_stable_test_answers", env=cases)


@pytest.fixture(scope="module")
def answers() -> dict[str, str]:
    cases = [
        {"id": key, "os": os_key, "arch": arch, "provider": provider, "version": version}
        for key, (os_key, arch, provider, version, _want) in CASES.items()
    ]
    return run_playbook("python_provider.yml", CELERY_STABLE_PROVIDER_CASES=json.dumps(cases))


@pytest.fixture(scope="module")
def uv_envs() -> dict[str, dict]:
    cases = [{"id": key, **inputs} for key, (inputs, _uv, _pip) in UV_ENV_CASES.items()]
    return run_playbook("uv_env.yml", CELERY_STABLE_UV_ENV_CASES=json.dumps(cases))


@pytest.mark.parametrize("case", CASES)
def test_provider(answers: dict[str, str], case: str) -> None:
    want = CASES[case][-1]
    got = answers[case]
    if want == "refused":
        assert got.startswith("refused: celery_stable_python_provider"), got
        assert "Nothing was installed" in got
    else:
        assert got == want


@pytest.mark.parametrize("case", UV_ENV_CASES)
def test_mirror_settings_reach_uv_and_pip(uv_envs: dict[str, dict], case: str) -> None:
    _inputs, uv, pip = UV_ENV_CASES[case]
    assert uv_envs[case]["uv"] == {**UV_FIXED, **uv}
    assert uv_envs[case]["pip"] == pip
