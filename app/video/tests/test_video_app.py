"""The app's own configuration, and its one optional line that protects it without attach."""

from __future__ import annotations

from celery_stable.testing import worker_args

from video_renderer.celery_app import QUEUE, app

from .video_harness import Harness, video_spec, wait_for


def test_the_guides_pool_one_queue_no_broker_in_the_code() -> None:
    conf = app.conf
    assert (conf.worker_pool, conf.worker_concurrency, conf.worker_prefetch_multiplier) == (
        "solo", 1, 1
    )  # fmt: skip
    assert conf.task_acks_late
    assert conf.task_default_queue == QUEUE == "videos"
    assert set(app.conf.include) == {"video_renderer.tasks"}
    assert app.main == "video_renderer"


def test_beat_runs_the_canary_and_the_resend_of_lost_videos() -> None:
    schedule = {
        name: (entry["task"], entry["schedule"], entry["options"])
        for name, entry in app.conf.beat_schedule.items()
    }
    assert schedule == {
        "fleet-report": ("video_renderer.fleet_report", 120.0, {"expires": 120.0, "queue": QUEUE}),
        # Every 3 minutes, as the runtime's recovery timer runs.
        "resend-lost-videos": (
            "video_renderer.resend_lost_videos", 180.0, {"expires": 180.0, "queue": QUEUE}
        ),
    }  # fmt: skip
    assert {"video_renderer.fleet_report", "video_renderer.resend_lost_videos"} <= set(app.tasks)


def test_the_apps_own_line_protects_a_worker_started_without_attach(harness: Harness) -> None:
    # `celery -A video_renderer.celery_app worker`: no attach, no CELERY_STABLE_APP_MODULE. READY=1
    # and the STATUS line come from the runtime (Celery sends neither), so the app's own
    # celery_stable.protect(app) line put it there.
    by_hand = worker_args(QUEUE, by_hand=True)
    args = ["video_renderer.celery_app" if a == "celery_stable.attach" else a for a in by_hand]
    env = harness.env()
    del env["CELERY_STABLE_APP_MODULE"]
    worker = harness.start_worker(args, env)
    wait_for(lambda: harness.notify.count("READY=1") or worker.exited(), 30, "READY=1")
    assert harness.notify.count("READY=1") == 1, worker.output()
    video_id = harness.submit(video_spec(0.3))
    assert harness.wait_video(video_id, ("done",), 30).attempt == 1
    assert harness.task(video_id).pid == worker.pid  # the runtime's ledger ran it
