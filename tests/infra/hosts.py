#!/usr/bin/env python3
"""The test drivers' hands on the project's own containers: ``docker exec`` only.

Shared by the fault matrix (tests/faults/matrix.py), the fleet run (molecule/fleet/fleet.py) and
the refused-run check (molecule/resources/tasks/refused-run.yml, through the command line at the
bottom): one way to run a command on a host, read a unit, read the journal, wait, and prove that
ansible-playbook refused an input before changing anything. The roles' own tests use it to run
their check playbooks on this machine alone (``local_answer``). Standard library only: it runs
on the controller's Python.

    python3 tests/infra/hosts.py refused-run --hosts H1 H2 --task "Check ..." --message REGEX \
        -- ansible-playbook -i INVENTORY playbooks/site.yml -e VAR=VALUE
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class HostError(Exception):
    """A command on a host failed; the message has its exit code and the end of its stderr."""


class Host:
    """One of the project's containers, reached with ``docker exec`` only."""

    def __init__(self, container: str) -> None:
        self.container = container

    def __str__(self) -> str:
        return self.container

    def sh(
        self, script: str, stdin: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        argv = ["docker", "exec", *(["-i"] if stdin is not None else []), self.container]
        argv += ["bash", "-c", script]
        proc = subprocess.run(argv, input=stdin, text=True, capture_output=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise HostError(f"{self.container}: {script!r} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
        return proc

    def out(self, script: str, **kwargs: Any) -> str:
        return self.sh(script, **kwargs).stdout.strip()

    def show(self, unit: str, *props: str) -> dict[str, str]:
        text = self.out(f"systemctl show {shlex.quote(unit)} -p {','.join(props)}")
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def prop(self, unit: str, name: str) -> str:
        return self.show(unit, name).get(name, "")

    def journal_records(self, since: float, *selectors: str) -> list[dict[str, Any]]:
        """The journal entries matching any selector since ``since``, with all their fields
        (MESSAGE, _PID, _COMM...) and ``t``, their time in seconds."""
        sel = " ".join(shlex.quote(s) for s in selectors)
        text = self.sh(f"journalctl --no-pager -o json --since @{int(since) - 1} {sel}", timeout=60).stdout
        records = []
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            message = entry.get("MESSAGE", "")
            if isinstance(message, list):  # non-UTF-8 bytes
                message = bytes(message).decode(errors="replace")
            entry["MESSAGE"] = str(message or "")
            entry["t"] = int(entry.get("__REALTIME_TIMESTAMP", "0")) / 1e6
            if entry["t"] >= since:
                records.append(entry)
        return records

    def journal(self, since: float, *selectors: str) -> list[tuple[float, str]]:
        """(time, message) of the journal entries matching any selector, since ``since``."""
        return [(entry["t"], entry["MESSAGE"]) for entry in self.journal_records(since, *selectors)]

    def wait_booted(self, timeout: float = 120) -> None:
        """Wait for systemd in the container to finish booting (after a restart)."""
        state = poll(lambda: self._booted(), timeout, interval=1)
        if not state:
            raise HostError(f"{self.container}: systemd did not finish booting in {timeout:.0f} s")

    def _booted(self) -> bool:
        proc = self.sh("systemctl is-system-running --wait", check=False, timeout=60)
        return proc.stdout.strip() in ("running", "degraded")

    def fingerprint(self) -> str:
        """What a refused deploy must leave as it was: services, env file, units, wheels, venv."""
        return self.out(
            "for unit in celery-worker celery-beat; do "
            'echo "$unit $(systemctl show -P ActiveState $unit) pid=$(systemctl show -P MainPID $unit)"; done; '
            "md5sum /etc/celery-stable/celery-stable.env /etc/systemd/system/celery-*.service "
            "/etc/systemd/system/celery-*.timer /opt/celery-stable/dist/*/* "
            "/opt/celery-stable/requirements/* 2>/dev/null; "
            'echo "venv python: $(readlink -f /opt/celery-stable/venv/bin/python)"'
        )


def poll(predicate: Callable[[], T], timeout: float, interval: float = 0.5) -> T | None:
    """The predicate's first truthy value within ``timeout`` seconds, else its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def first(entries: list[tuple[float, str]], pattern: str, after: float = 0.0) -> float | None:
    regex = re.compile(pattern)
    for stamp, message in entries:
        if stamp >= after and regex.search(message):
            return stamp
    return None


def count(entries: list[tuple[float, str]], pattern: str) -> int:
    regex = re.compile(pattern)
    return sum(1 for _, message in entries if regex.search(message))


# --- ansible-playbook runs, read from its JSON callback -------------------------------------------


@dataclass
class PlaybookRun:
    """An ansible-playbook run, read from the ansible.posix.json callback (no scraping of
    PLAY RECAP): its exit code, the first failed task, and each host's change count."""

    rc: int
    task: str = ""
    host: str = ""
    message: str = ""
    changed: dict[str, int] = field(default_factory=dict)
    output: str = ""
    # (seconds, task name) of every task (its last host's end), in the order they ran.
    durations: list[tuple[float, str]] = field(default_factory=list)

    @property
    def total_changed(self) -> int:
        return sum(self.changed.values())

    @classmethod
    def parse(cls, rc: int, stdout: str, stderr: str = "") -> PlaybookRun:
        run = cls(rc, output=(stdout + stderr)[-6000:])
        try:
            report = json.loads(stdout[stdout.index("{") :])
        except ValueError:
            run.message = "no JSON report (ansible-playbook did not get to run a play)"
            return run
        for play in report.get("plays", []):
            for task in play.get("tasks", []):
                run.durations.append((_span(task["task"]), task["task"]["name"]))
                for host, result in task.get("hosts", {}).items():
                    if result.get("failed") and not run.task:
                        run.task, run.host = task["task"]["name"], host
                        # A loop's own msg is only "One or more items failed": take the item's.
                        failed_items = [item for item in result.get("results", []) if item.get("failed")]
                        msg = failed_items[0].get("msg", "") if failed_items else result.get("msg", "")
                        run.message = " ".join(str(msg).split())
        run.changed = {host: int(stats.get("changed", 0)) for host, stats in report.get("stats", {}).items()}
        return run

    def refused(self, task: str, message: str) -> list[str]:
        """Problems with this run as a refusal at ``task`` with ``message`` (a regex); [] if clean."""
        problems = []
        if self.rc == 0:
            problems.append("the run succeeded")
        if not self.task.endswith(task):
            problems.append(f"it failed at {self.task!r}, not {task!r}")
        if not re.search(message, self.message):
            problems.append(f"its message does not match {message!r}: {self.message!r}")
        if self.total_changed:
            problems.append(f"it changed something: {self.changed}")
        return problems


def _span(task: dict[str, Any]) -> float:
    """Seconds a task took, from the JSON callback's ISO timestamps."""
    duration = task.get("duration") or {}
    try:
        start, end = (datetime.fromisoformat(duration[k].replace("Z", "+00:00")) for k in ("start", "end"))
    except (KeyError, ValueError, AttributeError):
        return 0.0
    return (end - start).total_seconds()


def run_playbook(argv: Sequence[str], *, cwd: str | None = None, env: dict[str, str] | None = None) -> PlaybookRun:
    """Run ``argv`` (an ansible-playbook command) with the JSON callback, and read it."""
    environment = dict(os.environ if env is None else env)
    environment.update(
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_CALLBACKS_ENABLED="ansible.posix.json",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_NOCOLOR="1",
    )
    proc = subprocess.run(
        list(argv), cwd=cwd, env=environment, capture_output=True, text=True, timeout=600, check=False
    )
    return PlaybookRun.parse(proc.returncode, proc.stdout, proc.stderr)


def local_answer(playbook: Path, variable: str, *, extra_vars: Path | None = None,
                 env: dict[str, str] | None = None) -> Any:  # fmt: skip
    """Run ``playbook`` on this machine alone (localhost, the repository's roles) and return
    ``variable`` as its last task printed it (``debug: var=``). The playbook must succeed."""
    command = shutil.which("ansible-playbook") or str(Path(sys.executable).parent / "ansible-playbook")
    if not Path(command).exists():
        raise RuntimeError("ansible-playbook is not installed: run scripts/bootstrap.sh first")
    # Not the repository's ansible.cfg: its profile_tasks output would break the JSON.
    environment = {key: value for key, value in os.environ.items() if key != "ANSIBLE_CONFIG"}
    environment.update(
        env or {},
        ANSIBLE_ROLES_PATH=str(Path(__file__).resolve().parents[2] / "roles"),
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_LOCALHOST_WARNING="false",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
    )
    argv = [command, "-i", "localhost,", str(playbook), *(["-e", f"@{extra_vars}"] if extra_vars else [])]
    proc = subprocess.run(argv, cwd=playbook.parent, env=environment, capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip
    if proc.returncode != 0:
        raise AssertionError(f"{playbook.name} exited {proc.returncode}: {proc.stdout[-4000:]}{proc.stderr[-4000:]}")
    last = json.loads(proc.stdout)["plays"][0]["tasks"][-1]
    return last["hosts"]["localhost"][variable]


def refused_run(
    hosts: Sequence[Host], argv: Sequence[str], task: str, message: str, **kwargs: Any
) -> tuple[PlaybookRun, list[str]]:
    """Run a deploy that must be refused; (the run, problems): [] when it was refused at
    ``task`` with ``message``, changed nothing, and every host's fingerprint is unchanged."""
    before = {str(host): host.fingerprint() for host in hosts}
    run = run_playbook(argv, **kwargs)
    after = {str(host): host.fingerprint() for host in hosts}
    problems = run.refused(task, message)
    problems += [
        f"{name} changed: {before[name]!r} -> {after[name]!r}" for name in before if before[name] != after[name]
    ]
    return run, problems


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="refused-run: prove a deploy is refused before any change")
    sub = parser.add_subparsers(dest="command", required=True)
    refused = sub.add_parser("refused-run")
    refused.add_argument("--hosts", nargs="+", required=True)
    refused.add_argument("--task", required=True, help="the task that must refuse (its name's end)")
    refused.add_argument("--message", required=True, help="a regex its message must match")
    refused.add_argument("playbook", nargs=argparse.REMAINDER, help="-- ansible-playbook ARGS...")
    args = parser.parse_args(argv)
    command = args.playbook[1:] if args.playbook[:1] == ["--"] else args.playbook
    run, problems = refused_run([Host(h) for h in args.hosts], command, args.task, args.message)
    print(f"{shlex.join(command)}: exit {run.rc}, changed={run.total_changed} {run.changed}")
    print(f"failed at [{run.host}] {run.task!r}")
    print(run.message)
    if problems:
        print("NOT REFUSED CLEANLY: " + "; ".join(problems))
        print(run.output)
        return 1
    print("refused before any change: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
