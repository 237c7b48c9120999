"""celery-stable: a Celery video worker whose every limit is enforced under the solo pool."""
