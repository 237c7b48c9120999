"""``celery-worker.service``: a host's solo workers (``celery-worker@1``, ``@2``...) seen as one.

Each instance is its own unit, with its own cgroup, MemoryMax, watchdog, restart cap and
STATUS line. An operator still asks ``systemctl status celery-worker`` for the whole host: this
process (that unit's ExecStart) reads every instance's state from systemd and publishes one
STATUS line with all of them, and writes each change of an instance to its journal, which
``systemctl status`` shows beneath.
"""

from __future__ import annotations

import logging
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .sdnotify import Notifier

log = logging.getLogger(__name__)

UNIT = "celery-worker@{}.service"
GROUP = "celery-worker.service"
_INSTANCE = re.compile(r"^celery-worker@(.+)[.]service$")
PROPERTIES = ("Id", "ActiveState", "SubState", "StatusText", "MainPID", "NRestarts", "Result")
POLL_SEC = 2.0


@dataclass(frozen=True)
class Instance:
    name: str
    active: str
    sub: str
    status: str
    pid: int
    restarts: int
    result: str

    @property
    def running(self) -> bool:
        return self.active == "active" and self.sub == "running"

    def describe(self) -> str:
        if self.running and self.status:
            return f"@{self.name} {self.status}"
        extra = f", {self.restarts} restart(s)" if self.restarts else ""
        result = f", result {self.result}" if self.result not in ("", "success") else ""
        return f"@{self.name} {self.active} ({self.sub}{extra}{result})"

    def change_from(self, old: Instance | None) -> str | None:
        """The journal line for what changed, or None (STATUS text alone is not a change)."""
        if old is not None and (old.active, old.sub, old.pid, old.restarts) == (
            self.active,
            self.sub,
            self.pid,
            self.restarts,
        ):
            return None
        before = f"{old.active}/{old.sub}" if old else "-"
        line = f"{UNIT.format(self.name)}: {before} -> {self.active}/{self.sub}, pid {self.pid}"
        if old is not None and self.restarts != old.restarts:
            line += f", restarted by systemd ({old.restarts} -> {self.restarts}, {self.result})"
        return line


Show = Callable[[Sequence[str]], str]


def systemctl_show(units: Sequence[str]) -> str:
    return subprocess.run(
        ["systemctl", "show", "--property=" + ",".join(PROPERTIES), *units],  # noqa: S607
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout


def wanted_by_group(run: Callable[[list[str]], str] | None = None) -> list[str]:
    """The instances celery-worker.service wants now (its Wants=, which the role writes): read
    every round, so that a deploy that changes their number needs only a daemon-reload here."""
    text = (run or _systemctl)(["show", "--property=Wants", "--value", GROUP])
    names = [m.group(1) for unit in text.split() if (m := _INSTANCE.match(unit))]
    return sorted(
        names, key=lambda name: (not name.isdigit(), int(name) if name.isdigit() else 0, name)
    )


def _systemctl(args: list[str]) -> str:
    return subprocess.run(
        ["systemctl", *args],  # noqa: S607
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout


def read(names: Sequence[str], show: Show = systemctl_show) -> list[Instance]:
    """Every instance's state, from one ``systemctl show`` of them all (blocks in order)."""
    if not names:
        return []
    text = show([UNIT.format(name) for name in names])
    blocks = [block for block in text.strip().split("\n\n") if block.strip()]
    instances = []
    for name, block in zip(names, blocks, strict=True):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        instances.append(
            Instance(
                name=name,
                active=props.get("ActiveState", "?"),
                sub=props.get("SubState", "?"),
                status=props.get("StatusText", ""),
                pid=int(props.get("MainPID") or 0),
                restarts=int(props.get("NRestarts") or 0),
                result=props.get("Result", ""),
            )
        )
    return instances


def summary(instances: Sequence[Instance]) -> str:
    running = sum(instance.running for instance in instances)
    parts = " | ".join(instance.describe() for instance in instances)
    return f"{running}/{len(instances)} workers running: {parts}"


def watch(
    names: Sequence[str] | Callable[[], Sequence[str]],
    notifier: Notifier,
    *,
    show: Show = systemctl_show,
    rounds: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
    beacon: Callable[[], None] | None = None,
) -> None:
    """Publish the instances' states as STATUS, their changes to the journal; READY after the
    first reading; ``beacon`` (the host's sign of life) every round. ``names``: the instances,
    or what returns them each round. ``rounds`` bounds the loop (tests); None runs until
    stopped."""
    last: dict[str, Instance] = {}
    status = ""
    done = 0
    while rounds is None or done < rounds:
        if beacon is not None:
            beacon()
        try:
            instances = read(names() if callable(names) else names, show)
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            log.warning("could not read the workers' states: %s", exc)
            instances = []
        for instance in instances:
            change = instance.change_from(last.get(instance.name))
            if change:
                log.warning(change)
            last[instance.name] = instance
        if instances:
            text = summary(instances)
            if text != status:
                notifier.send(f"STATUS={text}", *(["READY=1"] if not status else []))
                status = text
        done += 1
        sleep(POLL_SEC)
