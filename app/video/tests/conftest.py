"""Fixtures of the video app's tests: a real redis-server for the session, a clean one per test.

Every worker is a real process started as the role's unit starts it: ``celery-stable
worker`` with ``CELERY_STABLE_APP_MODULE=video_renderer.celery_app``.
The harness (video_harness.py) is celery_stable.testing's WorkerHarness pointed at this app;
this directory is a package (it shares a pytest session with the runtime's tests, whose
``conftest`` and ``runtime_harness`` are plain top-level modules).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery_stable.ledger import redis_client

from video_renderer.celery_app import app
from video_renderer.jobs import VideoStore

from .video_harness import Harness, NotifyListener, RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    for tool in ("redis-server", "ffmpeg", "ffprobe"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is not installed (apt-get install redis-server ffmpeg)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    # The test process sends tasks as `video-renderer submit` does, to this Redis (Celery would
    # prefer a CELERY_BROKER_URL of the developer's shell to the app's configuration).
    os.environ.pop("CELERY_BROKER_URL", None)
    app.conf.broker_url = server.url(0)
    yield server
    server.stop()


@pytest.fixture
def store(redis_server: RedisServer) -> VideoStore:
    redis_server.ensure_running()
    redis.Redis.from_url(redis_server.url(0)).flushall()
    return VideoStore(redis_client(redis_server.url(0)))


@pytest.fixture
def notify() -> Iterator[NotifyListener]:
    listener = NotifyListener()
    yield listener
    listener.close()


@pytest.fixture
def harness(
    redis_server: RedisServer, store: VideoStore, tmp_path: Path, notify: NotifyListener
) -> Iterator[Harness]:
    h = Harness(redis_server, store, tmp_path, notify)
    yield h
    h.close()
