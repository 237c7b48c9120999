"""A real worker process: render, refuse, ignore stale deliveries, report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import Harness, RedisServer
from helpers import ffprobe, video_spec, wait_for, wait_state

from celery_stable.celery_app import create_app
from celery_stable.jobs import JobStore
from celery_stable.settings import Settings

INIT_LINES = (
    "Worker process initialized avec optimisations anti-crash",
    "OpenCV configuré en single-thread",
    "Limite mémoire processus configurée (1GB)",
)


def test_renders_a_real_video_and_reports_to_systemd(harness: Harness, store: JobStore) -> None:
    worker = harness.ready_worker()
    spec = video_spec(2.0, width=128, height=72, fps=15)
    path = harness.tmp / "spec.json"
    path.write_text(json.dumps(spec))
    result = harness.cli("submit", str(path), "--wait", "60")
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.splitlines()[0]
    record = store.get(job_id)
    assert record is not None
    assert (record.state, record.attempts, record.pid) == ("done", 1, worker.pid)
    assert record.output == str(harness.output_dir / f"{job_id}.mp4")
    info = ffprobe(Path(record.output))
    assert (info["codec"], info["width"], info["height"], info["frames"]) == ("h264", 128, 72, 30)
    assert abs(info["duration"] - 2.0) < 0.05
    log = worker.output()
    for line in INIT_LINES:
        assert line in log
    wait_for(
        lambda: any(
            s.startswith("STATUS=idle · 1/10 tasks before recycle · RSS ")
            for s in harness.notify.lines("STATUS=")
        ),
        10,
        "idle STATUS",
    )
    assert any(
        s.startswith(f"STATUS=rendering {job_id} (frame ") or s.startswith("STATUS=idle")
        for s in harness.notify.lines("STATUS=")
    )
    assert harness.notify.count("READY=1") == 1
    assert harness.notify.lines("EXTEND_TIMEOUT_USEC=")
    status = harness.cli("status", job_id, "--json")
    assert status.returncode == 0
    assert json.loads(status.stdout)["state"] == "done"
    assert job_id in harness.cli("list", "--state", "done").stdout


def test_bad_spec_is_refused_and_nothing_recorded(harness: Harness, store: JobStore) -> None:
    path = harness.tmp / "bad.json"
    path.write_text(json.dumps(video_spec(width=33)))
    result = harness.cli("submit", str(path))
    assert result.returncode == 2
    assert "width: must be even" in result.stderr
    assert store.counts() == {"queued": 0, "processing": 0, "done": 0, "failed": 0}
    path.write_text("{not json")
    assert harness.cli("submit", str(path)).returncode == 2


def test_fault_spec_refused_by_a_worker_without_hooks(harness: Harness, store: JobStore) -> None:
    harness.ready_worker(CELERY_STABLE_FAULT_HOOKS="0")
    job_id = harness.submit(video_spec(fault={"kind": "segfault"}))
    record = wait_state(store, job_id, ("failed",), 30)
    assert "fault hooks are disabled on this worker" in record.error


def test_stale_and_duplicate_deliveries_are_acked_and_ignored(
    harness: Harness, store: JobStore
) -> None:
    worker = harness.ready_worker()
    job_id = harness.submit(video_spec(0.5))
    done = wait_state(store, job_id, ("done",), 30)
    app = create_app(Settings.from_env(harness.env()))
    app.enqueue(job_id, done.token)  # type: ignore[attr-defined]
    app.enqueue(job_id, "0123456789abcdef")  # type: ignore[attr-defined]
    wait_for(
        lambda: (
            "ignored stale message" in worker.output()
            and "ignored duplicate message" in worker.output()
        ),
        30,
        "both ignored",
    )
    assert store.get(job_id) == done
    assert store.client.llen("videos") == 0
    assert worker.output().count(f"rendering video {job_id}") == 1


def test_retry_from_failed_and_exit_codes(harness: Harness, store: JobStore) -> None:
    harness.ready_worker()
    job_id = harness.submit(video_spec(0.5, {"kind": "alloc_bomb", "mb": 4096, "on_attempts": 1}))
    failed = wait_state(store, job_id, ("failed",), 60)
    assert "ran out of memory: the address-space limit is 1024 MB (RLIMIT_AS)" in failed.error
    assert harness.cli("retry", "unknown").returncode == 4
    result = harness.cli("retry", job_id)
    assert result.returncode == 0, result.stderr
    record = wait_state(store, job_id, ("done",), 60)
    assert (record.attempts, record.crashes) == (2, 0)
    assert record.token != failed.token
    assert harness.cli("retry", job_id).returncode == 5
    assert harness.cli("status", "unknown").returncode == 4


def test_stats_to_the_log_and_the_textfile(harness: Harness, store: JobStore) -> None:
    metrics = harness.tmp / "metrics" / "celery_stable.prom"
    worker = harness.ready_worker(
        CELERY_STABLE_STATS_INTERVAL_SEC="1", CELERY_STABLE_METRICS_FILE=str(metrics)
    )
    harness.submit(video_spec(0.3))
    wait_for(
        lambda: metrics.exists() and 'celery_stable_jobs{state="done"} 1.0' in metrics.read_text(),
        30,
        "metrics with one done video",
    )
    text = metrics.read_text()
    assert f"celery_stable_worker_pid {float(worker.pid)}" in text
    for name in ("cpu_percent", "rss_bytes", "threads"):
        assert f"celery_stable_worker_{name} " in text
    assert f"stats pid={worker.pid} cpu=" in worker.output()
    assert " rss=" in worker.output()
    assert " threads=" in worker.output()


def test_broker_down_is_a_clear_message(harness: Harness, store: JobStore) -> None:
    env = harness.env(CELERY_STABLE_BROKER_URL="redis://127.0.0.1:1/0")
    path = harness.tmp / "ok.json"
    path.write_text(json.dumps(video_spec()))
    result = harness.cli("submit", str(path), env=env)
    assert result.returncode == 3
    assert "cannot reach the broker at redis://127.0.0.1:1/0" in result.stderr
    assert "CELERY_STABLE_BROKER_URL" in result.stderr
    assert store.counts()["queued"] == 0


def test_app_config_is_the_guides_under_solo() -> None:
    settings = Settings.from_env({"CELERY_STABLE_TIME_LIMIT_SEC": "600"})
    conf = create_app(settings).conf
    assert (conf.worker_pool, conf.worker_concurrency, conf.worker_prefetch_multiplier) == (
        "solo",
        1,
        1,
    )
    assert conf.task_acks_late
    assert conf.broker_transport_options["visibility_timeout"] == 900
    assert conf.broker_connection_retry_on_startup
    assert conf.broker_connection_max_retries is None
    [entry] = conf.beat_schedule.values()
    assert entry["task"] == "celery_stable.fleet_report"
    assert entry["schedule"] == 120
    assert entry["options"]["expires"] == 120


def test_beat_sends_the_fleet_report_canary(harness: Harness, store: JobStore) -> None:
    worker = harness.ready_worker()
    harness.submit(video_spec(0.3))
    env = harness.env(CELERY_STABLE_STATS_INTERVAL_SEC="1")
    beat = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_stable.celery_app", "beat",
         "-s", str(harness.tmp / "celerybeat-schedule"), "--loglevel=WARNING"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: "fleet: queued=0 processing=0 done=1 failed=0; 0 message(s) waiting in "
                 "queue videos" in worker.output(), 30, "a fleet report")  # fmt: skip
    finally:
        beat.terminate()
        beat.wait(10)


def test_worker_waits_for_a_late_broker_and_extends_its_start(
    harness: Harness, tmp_path: Path
) -> None:
    late = RedisServer(tmp_path)
    worker = harness.worker(CELERY_STABLE_BROKER_URL=late.url)
    wait_for(lambda: "waiting for broker at redis://127.0.0.1:" in worker.output(), 60, "waiting")
    assert harness.notify.count("READY=1") == 0
    assert harness.notify.lines("EXTEND_TIMEOUT_USEC=30000000")
    assert "STATUS=waiting for broker" in harness.notify.lines("STATUS=")
    late.start()
    try:
        wait_for(lambda: harness.notify.count("READY=1") == 1, 60, "READY once Redis is up")
    finally:
        worker.stop()
        late.stop()


def test_an_unexpected_error_fails_the_video_with_the_reason(
    harness: Harness, store: JobStore
) -> None:
    """A bug in the render code must not leave the video parked in processing or queued."""
    worker = harness.ready_worker()
    job_id = harness.submit(video_spec(1.0, {"kind": "raise", "at_frame": 2}))
    record = wait_state(store, job_id, ("failed",), 30)
    assert record.error == "internal error: RuntimeError: fault hook: unexpected error at frame 2"
    # The worker carries on with the next video.
    assert wait_state(store, harness.submit(video_spec(0.5)), ("done",), 30).attempts == 1
    assert worker.running()
