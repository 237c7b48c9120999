"""A real worker of the video app under the runtime: render, refuse, report, ignore copies."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from celery.beat import PersistentScheduler
from celery_stable import broker

from video_renderer.celery_app import FLEET_REPORT_SEC, app
from video_renderer.jobs import VideoStore
from video_renderer.tasks import RENDER_TASK

from .video_harness import INIT_LINES, Harness, ffprobe, video_spec, wait_for


def test_renders_a_real_h264_and_systemd_sees_each_frame(harness: Harness) -> None:
    worker = harness.ready_worker()
    # 30 frames, slowed to 40 ms each so the monitor's 250 ms ticks see the render progress.
    spec = video_spec(2.0, {"kind": "slow", "seconds": 0.04}, width=128, height=72, fps=15)
    path = harness.tmp / "spec.json"
    path.write_text(json.dumps(spec))
    result = harness.cli("submit", str(path), "--wait", "60")
    assert result.returncode == 0, result.stderr
    video_id = result.stdout.splitlines()[0]
    assert re.search(r"^\s+state: done$", result.stdout, re.MULTILINE)
    record = harness.video(video_id)
    assert (record.state, record.attempt, record.task_id) == ("done", 1, video_id)
    assert record.output == str(harness.output_dir / f"{video_id}.mp4")
    info = ffprobe(Path(record.output))
    assert (info["codec"], info["width"], info["height"], info["frames"]) == ("h264", 128, 72, 30)
    assert info["pix_fmt"] == "yuv420p"
    assert abs(info["duration"] - 2.0) < 0.05
    assert harness.files_of(video_id) == [f"{video_id}.mp4"]  # no temp file left
    # systemd's STATUS named the task and its frame while it rendered.
    line = re.compile(
        rf"^STATUS=running {re.escape(RENDER_TASK)}\[{video_id}\] \(frame (\d+)/(\d+)\) · "
        r"1/10 tasks before recycle · RSS \d+ MB$"
    )
    frames = [m.groups() for m in map(line.match, harness.notify.lines("STATUS=")) if m]
    assert frames, harness.notify.lines("STATUS=")
    assert {total for _, total in frames} == {"30"}
    assert all(1 <= int(done) <= 30 for done, _ in frames)
    assert len({done for done, _ in frames}) >= 2, frames  # it moved while rendering
    task = harness.task(video_id)
    assert (task.name, task.state, task.attempts, task.pid) == (RENDER_TASK, "done", 1, worker.pid)
    log = worker.output()
    for init in INIT_LINES:
        assert init in log
    assert f"rendering video {video_id} (attempt 1, 30 frames)" in log
    assert harness.notify.count("READY=1") == 1
    status = harness.cli("status", video_id, "--json")
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert (shown["state"], shown["output"], shown["task"]["attempts"]) == (
        "done", record.output, 1
    )  # fmt: skip
    assert video_id in harness.cli("list", "--state", "done").stdout
    # The runtime's own command knows the video by the same id.
    runtime_status = harness.runtime_cli("status", video_id)
    assert runtime_status.returncode == 0, runtime_status.stderr
    assert f"name: {RENDER_TASK}" in runtime_status.stdout


def test_a_bad_spec_is_refused_with_the_field_named_and_nothing_recorded(
    harness: Harness, store: VideoStore
) -> None:
    path = harness.tmp / "bad.json"
    path.write_text(json.dumps(video_spec(width=33)))
    result = harness.cli("submit", str(path))
    assert result.returncode == 2
    assert "bad spec: width: must be even" in result.stderr
    assert "(nothing recorded)" in result.stderr
    assert harness.cli("submit", "-", stdin=json.dumps(video_spec(fps=0))).returncode == 2
    path.write_text("{not json")
    assert harness.cli("submit", str(path)).returncode == 2
    assert store.counts() == {"queued": 0, "processing": 0, "done": 0, "failed": 0}
    assert store.client.llen("videos") == 0
    # A good one, with no worker to run it: recorded and queued, then --wait gives up (exit 1).
    waited = harness.cli("submit", "-", "--wait", "0.5", stdin=json.dumps(video_spec()))
    assert waited.returncode == 1
    assert "still not finished after 0.5 s" in waited.stderr
    assert store.counts()["queued"] == 1
    assert store.client.llen("videos") == 1


def test_a_fault_spec_is_refused_by_a_worker_without_hooks(harness: Harness) -> None:
    harness.ready_worker(VIDEO_RENDERER_FAULT_HOOKS="0")
    video_id = harness.submit(video_spec(fault={"kind": "segfault"}))
    record = harness.wait_video(video_id, ("failed",), 30)
    assert record.error == "invalid spec: fault: fault hooks are disabled on this worker"
    # Failed by the task itself, so the ledger says failed too (and `retry` can send it again).
    task = harness.wait_task(video_id, ("failed",), 10)
    assert (task.cause, task.reason) == ("error", f"VideoFailed: {record.error}")


def test_redelivered_copies_and_second_messages_are_ignored(harness: Harness) -> None:
    worker = harness.ready_worker()
    video_id = harness.submit(video_spec(1.0, {"kind": "slow", "seconds": 0.1}))
    tag = harness.wait_task(video_id, ("running",), 30).tags[-1]
    # Acked late: while it renders, the broker holds the message as kombu will redeliver it.
    copy = harness.store.client.hget("unacked", tag)
    assert copy is not None
    done = harness.wait_video(video_id, ("done",), 30)
    # That copy, back on the queue as kombu puts it after its visibility timeout: the runtime
    # acks and ignores it.
    with app.connection_for_write() as connection:
        broker.restore(connection, tag, str(copy))
    wait_for(lambda: f"ignored a redelivered copy of task {RENDER_TASK}[{video_id}]: already done"
             in worker.output(), 30, "copy ignored")  # fmt: skip
    # A second message for the same video (a double send): the app refuses to start it again.
    app.send_task(RENDER_TASK, args=[video_id], task_id=video_id)
    wait_for(lambda: f"ignored a message for video {video_id}: the video is done by attempt 1"
             in worker.output(), 30, "second message ignored")  # fmt: skip
    assert harness.video(video_id) == done
    assert worker.output().count(f"rendering video {video_id}") == 1
    assert harness.store.client.llen("videos") == 0
    wait_for(lambda: harness.store.client.hlen("unacked") == 0, 10, "every copy acked")


def test_retry_from_failed_with_the_runtimes_command(harness: Harness) -> None:
    harness.ready_worker()
    spec = video_spec(0.5, {"kind": "alloc_bomb", "mb": 4096, "on_attempts": 1})
    submitted = harness.cli("submit", "-", "--wait", "60", stdin=json.dumps(spec))
    assert submitted.returncode == 1, submitted.stderr  # failed
    video_id = submitted.stdout.splitlines()[0]
    assert re.search(r"^\s+state: failed$", submitted.stdout, re.MULTILINE)
    failed = harness.video(video_id)
    assert failed.error == "ran out of memory: the address-space limit is 1024 MB (RLIMIT_AS)"
    harness.wait_task(video_id, ("failed",), 10)
    assert harness.runtime_cli("retry", "unknown").returncode == 4
    result = harness.runtime_cli("retry", video_id)
    assert result.returncode == 0, result.stderr
    assert f"{video_id} ({RENDER_TASK}): its original message is back on its queue" in result.stdout
    record = harness.wait_video(video_id, ("done",), 60)
    assert (record.attempt, record.error) == (2, "")
    assert harness.task(video_id).attempts == 2
    assert Path(record.output).exists()
    assert harness.runtime_cli("retry", video_id).returncode == 5  # only failed tasks
    assert harness.cli("status", "unknown").returncode == 4


def test_stats_reach_the_journal_and_the_textfile(harness: Harness) -> None:
    metrics = harness.tmp / "metrics" / "celery_stable.prom"
    worker = harness.ready_worker(
        CELERY_STABLE_STATS_INTERVAL_SEC="1", CELERY_STABLE_METRICS_FILE=str(metrics)
    )
    harness.submit(video_spec(0.3))
    done = f'celery_stable_tasks_by_name{{name="{RENDER_TASK}",state="done"}} 1.0'
    wait_for(lambda: metrics.exists() and done in metrics.read_text(), 30, "one video done")
    text = metrics.read_text()
    assert f"celery_stable_worker_pid {float(worker.pid)}" in text
    for name in ("cpu_percent", "rss_bytes", "threads"):
        assert f"celery_stable_worker_{name} " in text
    log = worker.output()
    assert f"stats pid={worker.pid} cpu=" in log
    assert " rss=" in log
    assert " threads=" in log


def test_a_broker_down_is_a_clear_message_and_nothing_is_recorded(
    harness: Harness, store: VideoStore
) -> None:
    env = harness.env(CELERY_BROKER_URL="redis://:s3cret@127.0.0.1:1/0")
    result = harness.cli("submit", "-", env=env, stdin=json.dumps(video_spec()))
    assert result.returncode == 3
    assert "cannot reach the broker at redis://:**@127.0.0.1:1/0" in result.stderr
    assert "s3cret" not in result.stderr
    assert "Start Redis (`systemctl start redis-server`) or fix CELERY_BROKER_URL" in result.stderr
    assert harness.cli("list", env=env).returncode == 3
    assert store.counts()["queued"] == 0


def test_beat_sends_the_fleet_report_canary(harness: Harness) -> None:
    entry = app.conf.beat_schedule["fleet-report"]
    assert (entry["task"], entry["schedule"], entry["options"]["expires"]) == (
        "video_renderer.fleet_report", 120.0, 120.0
    )  # fmt: skip
    worker = harness.ready_worker()
    harness.wait_video(harness.submit(video_spec(0.3)), ("done",), 30)
    # The schedule as Beat keeps it, with the canary last sent longer ago than its period: the
    # real Beat, on the real 120 s schedule, sends it at once instead of in two minutes.
    schedule = harness.tmp / "celerybeat-schedule"
    scheduler = PersistentScheduler(app=app, schedule_filename=str(schedule), lazy=False)
    scheduler.schedule["fleet-report"].last_run_at = app.now() - timedelta(
        seconds=FLEET_REPORT_SEC + 60
    )
    scheduler.close()
    beat = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "video_renderer.celery_app", "beat",
         "-s", str(schedule), "--loglevel=WARNING"],
        env=harness.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: "fleet: queued=0 processing=0 done=1 failed=0; 0 message(s) waiting in "
                 "queue videos" in worker.output(), 30, "a fleet report")  # fmt: skip
    finally:
        beat.terminate()
        beat.wait(10)


def test_an_unexpected_error_fails_the_video_with_the_reason(harness: Harness) -> None:
    """A bug in the render code must not leave the video parked in processing."""
    worker = harness.ready_worker()
    video_id = harness.submit(video_spec(1.0, {"kind": "raise", "at_frame": 2}))
    record = harness.wait_video(video_id, ("failed",), 30)
    assert record.error == "internal error: RuntimeError: fault hook: unexpected error at frame 2"
    task = harness.wait_task(video_id, ("failed",), 10)
    assert task.reason == "RuntimeError: fault hook: unexpected error at frame 2"
    assert harness.files_of(video_id) == []
    # The worker carries on with the next video.
    assert harness.wait_video(harness.submit(video_spec(0.5)), ("done",), 30).attempt == 1
    assert worker.running()
