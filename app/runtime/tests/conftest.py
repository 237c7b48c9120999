"""Fixtures of the runtime's tests: a real redis-server for the session, one harness a test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from runtime_harness import Harness, NotifyListener, RedisServer, proj_app

from celery_stable.ledger import Ledger, redis_client


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    proj_app.conf.broker_url = server.url(0)
    proj_app.conf.result_backend = server.url(1)
    yield server
    server.stop()


@pytest.fixture
def ledger(redis_server: RedisServer) -> Ledger:
    redis_server.ensure_running()
    redis.Redis.from_url(redis_server.url(0)).flushall()
    return Ledger(redis_client(redis_server.url(0)))


@pytest.fixture
def notify() -> Iterator[NotifyListener]:
    listener = NotifyListener()
    yield listener
    listener.close()


@pytest.fixture
def harness(
    redis_server: RedisServer, ledger: Ledger, tmp_path: Path, notify: NotifyListener
) -> Iterator[Harness]:
    h = Harness(redis_server, tmp_path, notify)
    yield h
    h.close()
