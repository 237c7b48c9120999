"""The video renderer's Celery app: ``celery -A video_renderer.celery_app worker|beat``.

The broker and the result backend are Celery's own CELERY_BROKER_URL / CELERY_RESULT_BACKEND.
The role runs the worker as ``celery-stable worker ...`` (``celery -A celery_stable.attach
worker ...`` without the rest of Celery's CLI) with
``CELERY_STABLE_APP_MODULE=video_renderer.celery_app``, which protects this app unchanged.
"""

from __future__ import annotations

import celery_stable
from celery import Celery

from .settings import current

QUEUE = "videos"
FLEET_TASK = "video_renderer.fleet_report"
# Beat's canary: a report nobody ran within its period is worthless, so it expires then.
FLEET_REPORT_SEC = 120.0
RESEND_TASK = "video_renderer.resend_lost_videos"
# Every 3 minutes, like the runtime's recovery timer; the next run does the same job, so a run
# nobody started within its period expires too.
RESEND_LOST_SEC = 180.0

# A bad VIDEO_RENDERER_* value stops the import here, naming the variable: the worker then exits
# with the runtime's configuration error (EX_CONFIG, not restarted in a loop) before consuming.
current()

app = Celery("video_renderer", include=["video_renderer.tasks"])
app.conf.update(
    task_default_queue=QUEUE,
    # The guide's pool (the runtime refuses any other): no fork of cv2/BLAS state, one task at a
    # time, one message prefetched.
    worker_pool="solo",
    worker_concurrency=1,
    worker_prefetch_multiplier=1,
    # Acked once the video is done or failed: a video is never lost to a worker that died.
    task_acks_late=True,
    # The video record is the result; a result backend, when set, still gets the runtime's
    # give-up failures.
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_send_task_events=False,
    beat_schedule={
        "fleet-report": {
            "task": FLEET_TASK,
            "schedule": FLEET_REPORT_SEC,
            "options": {"expires": FLEET_REPORT_SEC, "queue": QUEUE},
        },
        # A video recorded and queued whose message the broker no longer holds is sent again.
        "resend-lost-videos": {
            "task": RESEND_TASK,
            "schedule": RESEND_LOST_SEC,
            "options": {"expires": RESEND_LOST_SEC, "queue": QUEUE},
        },
    },
)

# Optional: `celery -A celery_stable.attach` (the role's units) protects the app without it. With
# it, `celery -A video_renderer.celery_app worker` is protected as well; protect is idempotent.
celery_stable.protect(app)
