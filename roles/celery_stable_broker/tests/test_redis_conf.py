"""The role's redis.conf on a real redis-server: with ACLs on, the default user is refused, the
workers' user gets what it needs and no more, and nothing it wrote in a transaction is lost by a
restart (Redis replays its append-only file as the default user, and EXEC re-checks that user's
ACL while loading: redis/redis#14541)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "app" / "runtime" / "src"))
from celery_stable.testing import free_port, wait_for

HERE = Path(__file__).resolve().parent
PASSWORD = "workers-pw"
PREVIOUS = "old-pw"


def render(directory: Path, **inputs: object) -> Path:
    conf = directory / "redis.conf"
    case = directory / "case.json"
    case.write_text(json.dumps({"dest": str(conf), **inputs}))
    playbook = shutil.which("ansible-playbook") or str(Path(sys.executable).parent / "ansible-playbook")
    env = {k: v for k, v in os.environ.items() if k != "ANSIBLE_CONFIG"}
    run = subprocess.run([playbook, "-i", "localhost,", str(HERE / "render.yml"), "-e", f"@{case}"],
                         env=env, cwd=HERE, capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    return conf


class Server:
    def __init__(self, conf: Path, directory: Path) -> None:
        self.port = free_port()
        self.args = ["redis-server", str(conf), "--port", str(self.port), "--dir", str(directory),
                     "--pidfile", str(directory / "pid"), "--unixsocket", str(directory / "sock"),
                     "--supervised", "no", "--daemonize", "no", "--logfile", str(directory / "log")]  # fmt: skip
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.args)
        wait_for(lambda: self._up(), 10, "redis-server to accept connections")

    def _up(self) -> bool:
        try:
            redis.Redis(port=self.port).ping()
        except redis.AuthenticationError:
            return True
        except redis.ConnectionError:
            return False
        return True

    def stop(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(10)

    def client(self, username: str | None, password: str | None) -> redis.Redis:
        return redis.Redis(port=self.port, username=username, password=password, decode_responses=True)


@pytest.fixture(scope="module")
def conf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed (scripts/bootstrap.sh)")
    rendered = render(tmp_path_factory.mktemp("conf"), celery_stable_broker_acl=True,
                      celery_stable_broker_password=PASSWORD, celery_stable_broker_previous_passwords=[PREVIOUS],
                      celery_stable_broker_admin_password="admin-pw")  # fmt: skip
    assert PASSWORD not in rendered.read_text() and PREVIOUS not in rendered.read_text()
    return rendered


@pytest.fixture
def server(conf: Path, tmp_path: Path) -> Iterator[Server]:
    instance = Server(conf, tmp_path)
    instance.start()
    yield instance
    if instance.process and instance.process.poll() is None:
        instance.stop()


def test_default_user_refused_workers_user_limited(server: Server) -> None:
    with pytest.raises(redis.AuthenticationError, match=r"NOAUTH|authenticated"):
        server.client(None, None).ping()
    with pytest.raises(redis.AuthenticationError, match="invalid username-password pair or user is disabled"):
        server.client(None, PASSWORD).ping()
    worker = server.client("celery-stable", PASSWORD)
    assert worker.ping()
    assert server.client("celery-stable", PREVIOUS).ping()  # still accepted during a rotation
    for command in (("KEYS", "*"), ("FLUSHALL",), ("CONFIG", "GET", "dir"), ("GET", "another-app:key")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            worker.execute_command(*command)
    assert server.client("admin", "admin-pw").execute_command("CONFIG", "GET", "appendonly") == {"appendonly": "yes"}


def test_a_restart_keeps_what_the_workers_user_wrote_in_transactions(server: Server) -> None:
    worker = server.client("celery-stable", PASSWORD)
    with worker.pipeline(transaction=True) as pipe:
        pipe.hset("celery-stable:task:t1", mapping={"state": "done"}).lpush("videos", "m1").execute()
    worker.set("celery-stable:plain", "1")
    server.stop()
    server.start()
    worker = server.client("celery-stable", PASSWORD)
    assert worker.hgetall("celery-stable:task:t1") == {"state": "done"}
    assert worker.lrange("videos", 0, -1) == ["m1"]
    assert worker.get("celery-stable:plain") == "1"
