"""The field guide's `core/celery_app.py`, as its "Configuration Celery optimisée" and
"Initialisation worker" sections show it, plus the recovery job its "Recovery automatique
intégré" describes (every 3 minutes, videos stuck for more than 5 minutes marked failed).

Nothing of celery-stable here: this is the team's own app. It runs two ways in the tests: under
the guide's own command line (the baseline), and deployed by the role through its variables
only (`celery_stable_app_module: core.celery_app`). Broker and result backend come from
Celery's own CELERY_BROKER_URL / CELERY_RESULT_BACKEND. The GUIDE_* variables exist only so
that the fault matrix can shorten the guide's clocks (time limit, recovery period and stuck
threshold) the same way for both columns; unset, they are the guide's values.
"""

import logging
import os
import resource

import cv2
from celery import Celery
from celery.signals import worker_process_init

logger = logging.getLogger(__name__)

TIME_LIMIT_SEC = int(os.environ.get("GUIDE_TIME_LIMIT_SEC", str(15 * 60)))
RECOVERY_EVERY_SEC = float(os.environ.get("GUIDE_RECOVERY_EVERY_SEC", str(3 * 60)))
STUCK_AFTER_SEC = float(os.environ.get("GUIDE_STUCK_AFTER_SEC", str(5 * 60)))

app = Celery("core", include=["core.tasks"])

app.conf.update(
    # Configuration anti-crash (the guide's four lines)
    worker_pool="solo",  # Évite les forks
    worker_max_tasks_per_child=10,  # Redémarrage fréquent
    worker_max_memory_per_child=256000,  # Limite mémoire stricte
    task_time_limit=TIME_LIMIT_SEC,  # Timeouts réduits
    # "Prefetch: 1 (pas de buffer)" in the guide's "Pool de workers".
    worker_prefetch_multiplier=1,
    # "Recovery automatique intégré: toutes les 3 minutes".
    beat_schedule={
        "recover-stuck-videos": {
            "task": "core.tasks.recover_stuck_videos",
            "schedule": RECOVERY_EVERY_SEC,
        },
    },
)


@worker_process_init.connect
def worker_process_init_handler(signal, sender, **kwargs):
    # Threading limité
    os.environ["OMP_NUM_THREADS"] = "1"
    cv2.setNumThreads(1)
    logger.info(" Worker process initialized avec optimisations anti-crash")
    logger.info(" OpenCV configuré en single-thread")

    # Limite mémoire processus
    one_gb = 1024 * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (one_gb, one_gb))
    logger.info(" Limite mémoire processus configurée (1GB)")
