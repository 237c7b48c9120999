"""The Python provider chosen per platform (tasks/python_provider.yml), for platforms this
machine cannot run: the role's own tasks, run on localhost with pretend distribution and
architecture facts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROLES = HERE.parent.parent

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
    "debian-13-forced-distro": ("Debian-13", "aarch64", "distro", "3.12", "refused"),
    "debian-12-forced-deadsnakes": ("Debian-12", "x86_64", "deadsnakes", "3.12", "refused"),
}


def ansible_playbook() -> str:
    found = shutil.which("ansible-playbook") or str(Path(sys.executable).parent / "ansible-playbook")
    if not Path(found).exists():
        pytest.skip("ansible-playbook is not installed (scripts/bootstrap.sh)")
    return found


@pytest.fixture(scope="module")
def answers() -> dict[str, str]:
    cases = [
        {"id": key, "os": os_key, "arch": arch, "provider": provider, "version": version}
        for key, (os_key, arch, provider, version, _want) in CASES.items()
    ]
    env = dict(
        os.environ,
        CELERY_STABLE_PROVIDER_CASES=json.dumps(cases),
        ANSIBLE_ROLES_PATH=str(ROLES),
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_LOCALHOST_WARNING="false",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
    )
    # Not the repository's ansible.cfg (run from here, none given): its profile_tasks output
    # would break the JSON.
    env.pop("ANSIBLE_CONFIG", None)
    run = subprocess.run(
        [ansible_playbook(), "-i", "localhost,", str(HERE / "python_provider.yml")],
        env=env,
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    report = json.loads(run.stdout)
    last = report["plays"][0]["tasks"][-1]
    return last["hosts"]["localhost"]["_celery_stable_test_answers"]


@pytest.mark.parametrize("case", CASES)
def test_provider(answers: dict[str, str], case: str) -> None:
    want = CASES[case][-1]
    got = answers[case]
    if want == "refused":
        assert got.startswith("refused: celery_stable_python_provider"), got
        assert "Nothing was installed" in got
    else:
        assert got == want
