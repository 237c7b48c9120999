"""The team's table of videos (their database; a Redis hash per video here).

States: pending -> processing -> done | failed. The guide's recovery job and, under the role,
the runtime's give-up hook both mark a video failed "pour retry manuel".
"""

import time

import redis

from .celery_app import STUCK_AFTER_SEC, app

PREFIX = "core:video:"


def _db():
    return redis.Redis.from_url(app.conf.broker_url, decode_responses=True)


def create(video_id, task_id):
    _db().hset(
        PREFIX + video_id,
        mapping={"id": video_id, "task_id": task_id, "state": "pending", "updated_at": time.time(), "error": ""},
    )


def mark(video_id, state, error=""):
    _db().hset(PREFIX + video_id, mapping={"state": state, "updated_at": time.time(), "error": error})


def get(video_id):
    return _db().hgetall(PREFIX + video_id) or None


def stuck(now=None):
    """Videos processing for more than the guide's 5 minutes."""
    now = time.time() if now is None else now
    db = _db()
    for key in db.scan_iter(PREFIX + "*"):
        video = db.hgetall(key)
        if video.get("state") == "processing" and now - float(video["updated_at"]) > STUCK_AFTER_SEC:
            yield video
