"""A Celery project as its team writes one: one module of config, a module of tasks.

It imports nothing of celery-stable. The runtime's tests deploy it the way the role does:
``celery -A celery_stable.attach worker`` with ``CELERY_STABLE_APP_MODULE=proj.celery_app``.
Broker and result backend come from Celery's own CELERY_BROKER_URL / CELERY_RESULT_BACKEND.
"""

import os

from celery import Celery
from celery.signals import worker_process_init

app = Celery("proj", include=["proj.tasks"])
app.conf.update(
    task_default_queue="proj",
    task_acks_late=os.environ.get("PROJ_ACKS_LATE", "0") == "1",
    worker_prefetch_multiplier=1,
    result_extended=True,
    # Celery's own app-wide hard limit, when the team sets one (ignored by Celery under solo).
    task_time_limit=int(os.environ["PROJ_TASK_TIME_LIMIT"])
    if "PROJ_TASK_TIME_LIMIT" in os.environ
    else None,
)


@worker_process_init.connect
def init_worker(**_kwargs):
    # The team's own init, which must keep running under the runtime.
    print("proj: worker_process_init ran", flush=True)
