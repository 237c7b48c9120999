"""Reaping dead workers' videos and recovering stuck ones, against a real Redis."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import psutil
from helpers import video_spec

from celery_stable.jobs import JobStore, Owner
from celery_stable.reaper import DeathCause, reap, resolve
from celery_stable.recovery import recover
from celery_stable.settings import Settings, SystemdEnv

HOST = socket.gethostname()


def dead_owner() -> Owner:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.2)"])
    started = psutil.Process(proc.pid).create_time()
    proc.wait()
    return Owner(HOST, proc.pid, started)


def live_owner() -> Owner:
    parent = psutil.Process(os.getppid())
    return Owner(HOST, parent.pid, parent.create_time())


def processing(store: JobStore, owner: Owner) -> str:
    record = store.create(video_spec())
    assert store.begin(record.id, record.token, owner).ok
    return record.id


def test_crash_requeues_then_poison_fails_at_max_crashes(store: JobStore) -> None:
    settings = Settings.from_env({})
    sent: list[tuple[str, str]] = []
    job = processing(store, dead_owner())
    cause = DeathCause.from_systemd(
        SystemdEnv(service_result="core-dump", exit_code="dumped", exit_status="SEGV")
    )
    [first] = reap(store, settings, cause, lambda *a: sent.append(a), host=HOST)
    record = store.get(job)
    assert record is not None
    assert (first.action, record.state, record.crashes) == ("requeued", "queued", 1)
    assert sent == [(job, record.token)]
    assert store.begin(job, record.token, dead_owner()).ok
    [second] = reap(store, settings, cause, lambda *a: sent.append(a), host=HOST)
    record = store.get(job)
    assert record is not None
    assert (second.action, record.state, record.crashes) == ("failed", "failed", 2)
    assert "killed the worker 2 times (last: signal SEGV)" in record.error
    assert f"celery-stable retry {job}" in record.error
    assert len(sent) == 1


def test_watchdog_and_oom_fail_at_once(store: JobStore) -> None:
    settings = Settings.from_env({})
    hung = processing(store, dead_owner())
    reap(
        store,
        settings,
        DeathCause.from_systemd(SystemdEnv(service_result="watchdog")),
        lambda *a: None,
        host=HOST,
    )
    # Killed at once, well before the 900 s limit: the reason must not claim the limit passed.
    error = store.get(hung).error  # type: ignore[union-attr]
    assert "stopped answering the watchdog 0 s into the render" in error
    assert "killed by the systemd watchdog before the hard limit of 900 s" in error
    assert "hung past" not in error
    late = store.get(processing(store, dead_owner()))
    assert late is not None
    cause = DeathCause.from_systemd(SystemdEnv(service_result="watchdog"))
    resolution = resolve(store, late, cause, settings, lambda *a: None, now=time.time() + 901)
    assert resolution is not None
    assert "hung past the hard time limit of 900 s / watchdog" in resolution.reason
    oom = processing(store, dead_owner())
    reap(
        store,
        settings,
        DeathCause.from_systemd(SystemdEnv(service_result="oom-kill")),
        lambda *a: None,
        host=HOST,
    )
    assert "out-of-memory" in store.get(oom).error  # type: ignore[union-attr]


def test_live_owners_and_other_hosts_are_left_alone(store: JobStore) -> None:
    settings = Settings.from_env({})
    alive = processing(store, live_owner())
    elsewhere = processing(store, Owner("other-host", 1, 1.0))
    reused = processing(store, Owner(HOST, os.getppid(), 1.0))  # same pid, other start time
    done = reap(store, settings, DeathCause("crash", "test"), lambda *a: None, host=HOST)
    assert [r.job_id for r in done] == [reused]
    assert store.get(alive).state == "processing"  # type: ignore[union-attr]
    assert store.get(elsewhere).state == "processing"  # type: ignore[union-attr]


def test_recover_fails_only_videos_without_recent_progress(store: JobStore) -> None:
    stuck = processing(store, live_owner())
    healthy = processing(store, live_owner())
    now = time.time()
    store.heartbeat(stuck, store.get(stuck).token, now=now - 400)  # type: ignore[union-attr]
    store.heartbeat(healthy, store.get(healthy).token, now=now - 10)  # type: ignore[union-attr]
    changes = recover(store, 300, now=now)
    assert [c.job_id for c in changes] == [stuck]
    assert "no progress for 400 s" in store.get(stuck).error  # type: ignore[union-attr]
    assert store.get(healthy).state == "processing"  # type: ignore[union-attr]
