"""The field guide's `core/celery_app.py`, reproduced for the fault matrix's baseline column.

Only what the guide shows (guide-anti-crash-celery-workers.fr.md, "Configuration Celery
optimisée" and "Initialisation worker"), plus the choices it leaves open, each marked GUESS.
No celery_stable code: this is what the guide's users run, started with the guide's own command
line (`celery -A core.celery_app worker --pool=solo --concurrency=1 --max-tasks-per-child=10
--max-memory-per-child=256000 --time-limit=... --without-gossip --without-mingle
--without-heartbeat`) by molecule/faults/side_effect.yml.
"""

import logging
import os
import resource

import cv2
from celery import Celery
from celery.signals import worker_process_init, worker_ready

logger = logging.getLogger(__name__)

BROKER_URL = os.environ.get("GUIDE_BROKER_URL", "redis://127.0.0.1:6379/1")
# The guide's 15 * 60, scaled like the role's limit in the matrix (molecule/faults/host_vars):
# under --pool=solo Celery ignores it either way, which is what the matrix shows.
TIME_LIMIT_SEC = int(os.environ.get("GUIDE_TIME_LIMIT_SEC", str(15 * 60)))

# GUESS: Celery's Redis result backend holds the task states (the guide's own video table is not
# in the guide); the broker's Redis, as most Celery-on-Redis backends do.
app = Celery("core", broker=BROKER_URL, backend=BROKER_URL, include=["core.tasks"])

app.conf.update(
    # Configuration anti-crash (the guide's four lines)
    worker_pool="solo",  # Évite les forks
    worker_max_tasks_per_child=10,  # Redémarrage fréquent
    worker_max_memory_per_child=256000,  # Limite mémoire stricte
    task_time_limit=TIME_LIMIT_SEC,  # Timeouts réduits
    # "Prefetch: 1 (pas de buffer)" in the guide's "Pool de workers".
    worker_prefetch_multiplier=1,
    # GUESS: acks_late, the pairing Celery's documentation gives with prefetch 1 for long tasks
    # (a crashed video comes back instead of being dropped, an hour later: the broker's default
    # visibility_timeout, which the guide does not change).
    task_acks_late=True,
    # GUESS: STARTED is recorded, so a video "en cours" is visible (the guide's recovery looks
    # for videos stuck in processing).
    task_track_started=True,
    result_extended=True,
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


@worker_ready.connect
def _matrix_probe(**_kwargs):
    # Not the guide's: a probe so the matrix can time when this worker consumes again (the
    # guide's command line logs at WARNING, so Celery's own "ready." line is not printed).
    logger.warning("guide worker ready (pid %d)", os.getpid())
