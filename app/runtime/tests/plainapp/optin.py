"""The same kind of app, opting in itself with the one documented line, and reporting progress."""

import time

from celery import Celery

import celery_stable

app = Celery("optin")
app.conf.update(task_default_queue="proj", worker_prefetch_multiplier=1)
celery_stable.protect(app)


@app.task(name="optin.count")
def count(frames, seconds_per_frame):
    for frame in range(frames):
        time.sleep(seconds_per_frame)
        celery_stable.progress(frame + 1, frames, "frame")
    return [celery_stable.remaining() is not None, celery_stable.time_limit()]
