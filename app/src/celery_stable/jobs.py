"""Job records in Redis; every transition is one compare-and-set on (state, token) in Lua.

A record is the hash ``celery-stable:job:<id>``; ``celery-stable:jobs`` orders ids by creation and
``celery-stable:state:<state>`` sets index them by state, both kept by the same script that moves
the record, so counts never drift. Each queued attempt gets a fresh token, carried by its Celery
message: a message whose token is not the record's is stale and is ignored.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, cast

import redis
from redis import exceptions as redis_errors
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

PREFIX = "celery-stable:"
STATES = ("queued", "processing", "done", "failed")
FINAL_STATES = ("done", "failed")

_TRANSITION = """
-- KEYS[1] job hash, KEYS[2] state-set prefix
-- ARGV[1] allowed current states (comma separated), ARGV[2] expected token ('' = any),
-- ARGV[3] JSON {"set": {field: value}, "incr": {field: n}}
local current = redis.call('HMGET', KEYS[1], 'state', 'token', 'id')
if not current[1] then return {'missing', ''} end
if ARGV[2] ~= '' and current[2] ~= ARGV[2] then return {'stale', current[1]} end
if not string.find(',' .. ARGV[1] .. ',', ',' .. current[1] .. ',', 1, true) then
  return {'state', current[1]}
end
local change = cjson.decode(ARGV[3])
for field, n in pairs(change['incr'] or {}) do redis.call('HINCRBY', KEYS[1], field, n) end
for field, value in pairs(change['set'] or {}) do redis.call('HSET', KEYS[1], field, value) end
local new_state = (change['set'] or {})['state']
if new_state and new_state ~= current[1] then
  redis.call('SREM', KEYS[2] .. current[1], current[3])
  redis.call('SADD', KEYS[2] .. new_state, current[3])
end
return {'ok', current[1]}
"""

_CREATE = """
-- KEYS[1] job hash, KEYS[2] queued set, KEYS[3] jobs zset; ARGV[1] id, ARGV[2] created_at,
-- ARGV[3..] field/value pairs
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
return 1
"""

_DELETE = """
-- KEYS[1] job hash, KEYS[2] state-set prefix, KEYS[3] jobs zset; ARGV[1] id
local state = redis.call('HGET', KEYS[1], 'state')
if state then redis.call('SREM', KEYS[2] .. state, ARGV[1]) end
redis.call('ZREM', KEYS[3], ARGV[1])
return redis.call('DEL', KEYS[1])
"""


def new_token() -> str:
    return secrets.token_hex(8)


@dataclass(frozen=True)
class Owner:
    """The process running an attempt: enough to tell later whether it is still alive."""

    host: str
    pid: int
    pid_started_at: float


@dataclass(frozen=True)
class JobRecord:
    id: str
    spec: dict[str, Any]
    state: str
    attempts: int
    crashes: int
    token: str
    created_at: float
    queued_at: float
    started_at: float | None
    heartbeat_at: float | None
    finished_at: float | None
    error: str
    output: str
    host: str
    pid: int | None
    pid_started_at: float | None

    @classmethod
    def from_hash(cls, raw: Mapping[str, str]) -> JobRecord:
        def number(key: str) -> float | None:
            value = raw.get(key, "")
            return float(value) if value else None

        pid = raw.get("pid", "")
        return cls(
            id=raw["id"],
            spec=json.loads(raw.get("spec", "{}")),
            state=raw["state"],
            attempts=int(raw.get("attempts", 0)),
            crashes=int(raw.get("crashes", 0)),
            token=raw.get("token", ""),
            created_at=float(raw["created_at"]),
            queued_at=float(raw.get("queued_at", raw["created_at"])),
            started_at=number("started_at"),
            heartbeat_at=number("heartbeat_at"),
            finished_at=number("finished_at"),
            error=raw.get("error", ""),
            output=raw.get("output", ""),
            host=raw.get("host", ""),
            pid=int(pid) if pid else None,
            pid_started_at=number("pid_started_at"),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def owner(self) -> Owner | None:
        if not self.host or self.pid is None or self.pid_started_at is None:
            return None
        return Owner(self.host, self.pid, self.pid_started_at)


@dataclass(frozen=True)
class Outcome:
    """Result of a compare-and-set: ``ok``, or why not (``missing``, ``stale``, ``state``)."""

    status: str
    state: str

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def redis_client(url: str, *, retry_seconds: float = 30.0) -> redis.Redis:
    """A client whose commands survive a short Redis restart (retried with backoff).

    ``retry_seconds`` bounds the wait: a worker that finished a video keeps trying long enough
    for a restarted Redis to come back, so the result is not lost; the CLI uses 0 so an operator
    is told at once that the broker is down.
    """
    backoff = ExponentialBackoff(cap=1.0, base=0.05)
    retries = 0 if retry_seconds <= 0 else max(1, int(retry_seconds))
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=10,
        retry=Retry(backoff, retries),
        health_check_interval=15,
        retry_on_error=[
            redis_errors.ConnectionError,
            redis_errors.TimeoutError,
            redis_errors.BusyLoadingError,
        ],
    )


class JobStore:
    def __init__(self, client: redis.Redis, prefix: str = PREFIX) -> None:
        self.client = client
        self.prefix = prefix
        self._transition = client.register_script(_TRANSITION)
        self._create = client.register_script(_CREATE)
        self._delete = client.register_script(_DELETE)

    def _key(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    @property
    def _states(self) -> str:
        return f"{self.prefix}state:"

    @property
    def _index(self) -> str:
        return f"{self.prefix}jobs"

    def create(self, spec: Mapping[str, Any], now: float | None = None) -> JobRecord:
        now = time.time() if now is None else now
        while True:
            job_id = secrets.token_hex(6)
            fields = {
                "id": job_id,
                "spec": json.dumps(spec, sort_keys=True),
                "state": "queued",
                "attempts": 0,
                "crashes": 0,
                "token": new_token(),
                "created_at": now,
                "queued_at": now,
                "error": "",
                "output": "",
            }
            flat = [str(item) for pair in fields.items() for item in pair]
            keys = [self._key(job_id), self._states + "queued", self._index]
            if self._create(keys=keys, args=[job_id, now, *flat]):
                record = self.get(job_id)
                assert record is not None
                return record

    def delete(self, job_id: str) -> bool:
        return bool(
            self._delete(keys=[self._key(job_id), self._states, self._index], args=[job_id])
        )

    def get(self, job_id: str) -> JobRecord | None:
        # decode_responses=True: redis-py's bytes-or-str typing does not know it.
        raw = cast("dict[str, str]", self.client.hgetall(self._key(job_id)))
        return JobRecord.from_hash(raw) if raw else None

    def recent(self, state: str | None = None, limit: int = 50) -> list[JobRecord]:
        records: list[JobRecord] = []
        for job_id in cast("list[str]", self.client.zrevrange(self._index, 0, -1)):
            record = self.get(job_id)
            if record and (state is None or record.state == state):
                records.append(record)
                if len(records) >= limit:
                    break
        return records

    def ids_in(self, state: str) -> list[str]:
        return sorted(cast("set[str]", self.client.smembers(self._states + state)))

    def counts(self) -> dict[str, int]:
        pipe = self.client.pipeline(transaction=False)
        for state in STATES:
            pipe.scard(self._states + state)
        return dict(zip(STATES, pipe.execute(), strict=True))

    def transition(
        self,
        job_id: str,
        *,
        states: Iterable[str],
        token: str | None,
        set_fields: Mapping[str, object],
        incr: Mapping[str, int] | None = None,
    ) -> Outcome:
        change = {
            "set": {key: str(value) for key, value in set_fields.items()},
            "incr": dict(incr or {}),
        }
        status, state = self._transition(
            keys=[self._key(job_id), self._states],
            args=[",".join(states), token or "", json.dumps(change)],
        )
        return Outcome(status, state)

    def begin(self, job_id: str, token: str, owner: Owner, now: float | None = None) -> Outcome:
        now = time.time() if now is None else now
        return self.transition(
            job_id,
            states=["queued"],
            token=token,
            incr={"attempts": 1},
            set_fields={
                "state": "processing",
                "started_at": now,
                "heartbeat_at": now,
                "host": owner.host,
                "pid": owner.pid,
                "pid_started_at": repr(owner.pid_started_at),
                "error": "",
            },
        )

    def heartbeat(self, job_id: str, token: str, now: float | None = None) -> Outcome:
        now = time.time() if now is None else now
        return self.transition(
            job_id, states=["processing"], token=token, set_fields={"heartbeat_at": now}
        )

    def finish(self, job_id: str, token: str, output: str, now: float | None = None) -> Outcome:
        now = time.time() if now is None else now
        return self.transition(
            job_id,
            states=["processing"],
            token=token,
            set_fields={"state": "done", "finished_at": now, "output": output, "error": ""},
        )

    def fail(
        self,
        job_id: str,
        token: str | None,
        reason: str,
        *,
        states: Iterable[str] = ("processing",),
        now: float | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> Outcome:
        now = time.time() if now is None else now
        return self.transition(
            job_id,
            states=states,
            token=token,
            set_fields={"state": "failed", "finished_at": now, "error": reason, **(extra or {})},
        )

    def requeue(
        self,
        job_id: str,
        token: str,
        *,
        states: Iterable[str] = ("processing",),
        error: str = "",
        extra: Mapping[str, object] | None = None,
        now: float | None = None,
    ) -> tuple[Outcome, str]:
        """Back to queued under a new token, so the old attempt's message becomes stale."""
        now = time.time() if now is None else now
        fresh = new_token()
        outcome = self.transition(
            job_id,
            states=states,
            token=token,
            set_fields={
                "state": "queued",
                "token": fresh,
                "queued_at": now,
                "error": error,
                "started_at": "",
                "heartbeat_at": "",
                "finished_at": "",
                **(extra or {}),
            },
        )
        return outcome, fresh
