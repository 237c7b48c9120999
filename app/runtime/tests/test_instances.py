"""celery-worker.service's view of the host's workers, from systemctl show's own output."""

from __future__ import annotations

from collections.abc import Sequence

from celery_stable.instances import read, summary, wanted_by_group, watch
from celery_stable.sdnotify import Notifier
from celery_stable.testing import NotifyListener, wait_for

# `systemctl show --property=... celery-worker@1.service celery-worker@2.service`, as printed.
RUNNING = """Id=celery-worker@1.service
ActiveState=active
SubState=running
StatusText=running core.tasks.generate_video[3ae7] · 3/10 tasks before recycle · RSS 104 MB
MainPID=811
NRestarts=0
Result=success

Id=celery-worker@2.service
ActiveState=active
SubState=running
StatusText=idle · 1/10 tasks before recycle · RSS 84 MB
MainPID=812
NRestarts=0
Result=success
"""
CRASHED = RUNNING.replace(
    "ActiveState=active\nSubState=running\n"
    "StatusText=idle · 1/10 tasks before recycle · RSS 84 MB\n"
    "MainPID=812\nNRestarts=0\nResult=success",
    "ActiveState=activating\nSubState=auto-restart\nStatusText=\nMainPID=0\nNRestarts=1\n"
    "Result=core-dump",
)


def test_one_status_line_for_every_worker_of_the_host() -> None:
    states = read(["1", "2"], lambda _units: RUNNING)
    assert summary(states) == (
        "2/2 workers running: @1 running core.tasks.generate_video[3ae7] · 3/10 tasks before "
        "recycle · RSS 104 MB | @2 idle · 1/10 tasks before recycle · RSS 84 MB"
    )
    crashed = read(["1", "2"], lambda _units: CRASHED)
    assert summary(crashed).startswith("1/2 workers running: @1 running core.tasks.")
    assert summary(crashed).endswith(
        "| @2 activating (auto-restart, 1 restart(s), result core-dump)"
    )
    assert crashed[1].change_from(states[1]) == (
        "celery-worker@2.service: active/running -> activating/auto-restart, pid 0, restarted by "
        "systemd (0 -> 1, core-dump)"
    )
    assert states[0].change_from(states[0]) is None


def test_ready_after_the_first_reading_then_each_change(caplog) -> None:
    listener = NotifyListener()
    outputs = iter([RUNNING, RUNNING, CRASHED])
    asked: list[Sequence[str]] = []

    def show(units: Sequence[str]) -> str:
        asked.append(units)
        return next(outputs)

    try:
        caplog.set_level("WARNING")
        watch(["1", "2"], Notifier(listener.path), show=show, rounds=3, sleep=lambda _s: None)
        wait_for(lambda: len(listener.lines("STATUS=")) == 2, 5, "two STATUS lines")
    finally:
        listener.close()
    assert asked[0] == ["celery-worker@1.service", "celery-worker@2.service"]
    assert listener.count("READY=1") == 1
    assert listener.lines("STATUS=")[1].startswith("STATUS=1/2 workers running")
    assert "celery-worker@2.service: active/running -> activating/auto-restart" in caplog.text


def test_the_instances_are_those_the_group_unit_wants_now() -> None:
    # `systemctl show --property=Wants --value celery-worker.service` after a deploy to 3 (the
    # order is systemd's: a set).
    asked: list[list[str]] = []

    def run(args: list[str]) -> str:
        asked.append(args)
        return "celery-worker@10.service celery-worker@2.service celery-worker@1.service\n"

    assert wanted_by_group(run) == ["1", "2", "10"]
    assert asked == [["show", "--property=Wants", "--value", "celery-worker.service"]]
    assert wanted_by_group(lambda _args: "\n") == []
    assert read([], lambda _units: RUNNING) == []
