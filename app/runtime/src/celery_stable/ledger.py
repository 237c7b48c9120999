"""The crash ledger: one Redis record per Celery task id, every move a compare-and-set in Lua.

A record is the hash ``celery-stable:task:<id>``. ``celery-stable:state:<state>`` sorted sets
index the records by state (score: when they entered it) and ``celery-stable:names:<state>``
hashes count them by task name; the script that moves a record keeps both, so counts never
drift. Every time is the Redis server's clock (``TIME``), so hosts with skewed clocks agree.
The record keeps the broker message of the attempt as kombu stored it, so that a crashed task
can be put back exactly as Celery would redeliver it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, cast

import redis
from redis import exceptions as redis_errors
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

PREFIX = "celery-stable:"
STATES = ("queued", "running", "done", "failed")
FINAL_STATES = ("done", "failed")
NOW = "$now"  # a field value the scripts replace with the Redis server's time

# Shared by the scripts: the server's time, and the move of a record between state indexes,
# trimming a final state's index to ARGV `keep` records (the oldest records are dropped).
_LIB = """
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1e6
end
local function index(prefix, id, name, old, new, at, keep)
  if old and old ~= '' then
    redis.call('ZREM', prefix .. 'state:' .. old, id)
    redis.call('HINCRBY', prefix .. 'names:' .. old, name, -1)
  end
  redis.call('ZADD', prefix .. 'state:' .. new, at, id)
  redis.call('HINCRBY', prefix .. 'names:' .. new, name, 1)
  if (new == 'done' or new == 'failed') and keep > 0 then
    local extra = redis.call('ZCARD', prefix .. 'state:' .. new) - keep
    if extra > 0 then
      for _, old_id in ipairs(redis.call('ZRANGE', prefix .. 'state:' .. new, 0, extra - 1)) do
        local old_name = redis.call('HGET', prefix .. 'task:' .. old_id, 'name') or '?'
        redis.call('HINCRBY', prefix .. 'names:' .. new, old_name, -1)
        redis.call('DEL', prefix .. 'task:' .. old_id)
      end
      redis.call('ZREMRANGEBYRANK', prefix .. 'state:' .. new, 0, extra - 1)
    end
  end
end
local function apply(key, change, at)
  for f, n in pairs(change['incr'] or {}) do redis.call('HINCRBY', key, f, n) end
  for f, v in pairs(change['set'] or {}) do
    if v == '$now' then v = string.format('%.6f', at) end
    redis.call('HSET', key, f, v)
  end
  for _, f in ipairs(change['del'] or {}) do redis.call('HDEL', key, f) end
end
"""

# KEYS[1] record; ARGV[1] prefix, ARGV[2] allowed states (comma separated, '' = any, '-' = the
# record must not exist), ARGV[3] expected attempt ('' = any), ARGV[4] change JSON
# {"set": {...}, "incr": {...}, "del": [...]}, ARGV[5] keep.
# Returns {status, state before, attempts after}.
_MOVE = (
    _LIB
    + """
local key, prefix = KEYS[1], ARGV[1]
local cur = redis.call('HMGET', key, 'state', 'attempts', 'name', 'id')
local change = cjson.decode(ARGV[4])
local at = now()
if ARGV[2] == '-' then
  if cur[1] then return {'exists', cur[1], cur[2] or '0'} end
elseif not cur[1] then return {'missing', '', '0'}
else
  if ARGV[3] ~= '' and cur[2] ~= ARGV[3] then return {'stale', cur[1], cur[2]} end
  if ARGV[2] ~= '' and not string.find(',' .. ARGV[2] .. ',', ',' .. cur[1] .. ',', 1, true) then
    return {'state', cur[1], cur[2]}
  end
end
apply(key, change, at)
local after = redis.call('HMGET', key, 'state', 'attempts', 'name', 'id')
if after[1] ~= cur[1] then
  index(prefix, after[4], after[3] or '?', cur[1], after[1], at, tonumber(ARGV[5]))
  redis.call('HSET', key, 'changed_at', string.format('%.6f', at))
end
return {'ok', cur[1] or '', after[2] or '0'}
"""
)

_TIME = "local t = redis.call('TIME') return t[1] .. '.' .. string.format('%06d', t[2])"


def redis_client(url: str, *, retry_seconds: float = 30.0) -> redis.Redis:
    """A client whose commands survive a short Redis restart (retried with backoff).

    ``retry_seconds`` bounds the wait: a worker that finished a task keeps trying long enough
    for a restarted Redis to come back, so the outcome is not lost; the CLI uses 0, so an
    operator is told at once that the broker is down.
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


@dataclass(frozen=True)
class Owner:
    """The process running an attempt: enough to tell later whether it is still alive."""

    host: str
    pid: int
    pid_started_at: float


@dataclass(frozen=True)
class TaskRecord:
    id: str
    name: str
    state: str
    attempts: int
    crashes: int
    cause: str
    reason: str
    host: str
    instance: str
    pid: int | None
    pid_started_at: float | None
    time_limit: float
    started_at: float | None
    heartbeat_at: float | None
    finished_at: float | None
    changed_at: float | None
    progress: str
    tags: tuple[str, ...]
    notified: bool
    payload: str

    @classmethod
    def from_hash(cls, raw: Mapping[str, str]) -> TaskRecord:
        def number(key: str) -> float | None:
            value = raw.get(key, "")
            return float(value) if value else None

        pid = raw.get("pid", "")
        return cls(
            id=raw["id"],
            name=raw.get("name", "?"),
            state=raw["state"],
            attempts=int(raw.get("attempts") or 0),
            crashes=int(raw.get("crashes") or 0),
            cause=raw.get("cause", ""),
            reason=raw.get("reason", ""),
            host=raw.get("host", ""),
            instance=raw.get("instance", ""),
            pid=int(pid) if pid else None,
            pid_started_at=number("pid_started_at"),
            time_limit=float(raw.get("time_limit") or 0),
            started_at=number("started_at"),
            heartbeat_at=number("heartbeat_at"),
            finished_at=number("finished_at"),
            changed_at=number("changed_at"),
            progress=raw.get("progress", ""),
            tags=tuple(raw.get("tags", "").split()),
            notified=raw.get("notified", "1") == "1",
            payload=raw.get("payload", ""),
        )

    @property
    def owner(self) -> Owner | None:
        if not self.host or self.pid is None or self.pid_started_at is None:
            return None
        return Owner(self.host, self.pid, self.pid_started_at)

    def to_dict(self, *, with_payload: bool = False) -> dict[str, Any]:
        data = asdict(self)
        data["tags"] = list(self.tags)
        if not with_payload:
            data.pop("payload")
        return data


@dataclass(frozen=True)
class Outcome:
    """Result of a compare-and-set: ``ok``, or why not (``missing``, ``exists``, ``stale``,
    ``state``), with the state the record had and its attempt count after the move."""

    status: str
    state: str
    attempts: int

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# Known delivery tags kept per record: enough to recognise every copy of the attempts' messages.
MAX_TAGS = 16


class Ledger:
    def __init__(self, client: redis.Redis, *, keep: int = 10000, prefix: str = PREFIX) -> None:
        self.client = client
        self.keep = keep
        self.prefix = prefix
        self._move = client.register_script(_MOVE)
        self._time = client.register_script(_TIME)

    def key(self, task_id: str) -> str:
        return f"{self.prefix}task:{task_id}"

    def now(self) -> float:
        """The Redis server's clock: the one every host's ledger times are written with."""
        return float(cast("str", self._time()))

    def move(
        self,
        task_id: str,
        *,
        states: Iterable[str] | str,
        attempt: int | None = None,
        set_fields: Mapping[str, object] | None = None,
        incr: Mapping[str, int] | None = None,
        delete: Iterable[str] = (),
    ) -> Outcome:
        change = {
            "set": {key: str(value) for key, value in (set_fields or {}).items()},
            "incr": dict(incr or {}),
            "del": list(delete),
        }
        allowed = states if isinstance(states, str) else ",".join(states)
        status, state, attempts = cast(
            "list[str]",
            self._move(
                keys=[self.key(task_id)],
                args=[
                    self.prefix,
                    allowed,
                    "" if attempt is None else str(attempt),
                    json.dumps(change),
                    self.keep,
                ],
            ),
        )
        return Outcome(status, state, int(attempts))

    def get(self, task_id: str) -> TaskRecord | None:
        # decode_responses=True: redis-py's bytes-or-str typing does not know it.
        raw = cast("dict[str, str]", self.client.hgetall(self.key(task_id)))
        return TaskRecord.from_hash(raw) if raw.get("state") else None

    def ids_in(self, state: str, limit: int = -1) -> list[str]:
        """Ids in ``state``, newest first."""
        end = -1 if limit < 0 else limit - 1
        return cast("list[str]", self.client.zrevrange(f"{self.prefix}state:{state}", 0, end))

    def recent(
        self, state: str | None = None, name: str | None = None, limit: int = 50
    ) -> list[TaskRecord]:
        """Newest first (by the time each record entered its state)."""
        scored: list[tuple[float, str]] = []
        for each in (state,) if state else STATES:
            pairs = self.client.zrevrange(f"{self.prefix}state:{each}", 0, -1, withscores=True)
            scored.extend((score, task_id) for task_id, score in cast("list[Any]", pairs))
        records: list[TaskRecord] = []
        for _score, task_id in sorted(scored, reverse=True):
            record = self.get(task_id)
            if record and (name is None or record.name == name):
                records.append(record)
                if len(records) >= limit:
                    break
        return records

    def counts(self) -> dict[str, int]:
        pipe = self.client.pipeline(transaction=False)
        for state in STATES:
            pipe.zcard(f"{self.prefix}state:{state}")
        return dict(zip(STATES, pipe.execute(), strict=True))

    def counts_by_name(self) -> dict[str, dict[str, int]]:
        """state -> task name -> records, names with none left out."""
        pipe = self.client.pipeline(transaction=False)
        for state in STATES:
            pipe.hgetall(f"{self.prefix}names:{state}")
        result: dict[str, dict[str, int]] = {}
        for state, names in zip(STATES, pipe.execute(), strict=True):
            result[state] = {name: int(n) for name, n in names.items() if int(n) > 0}
        return result

    # --- the moves of an attempt ---------------------------------------------------------------

    def create(self, task_id: str, name: str, fields: Mapping[str, object]) -> Outcome:
        """A first attempt, running; fails with ``exists`` when the id has a record already."""
        return self.move(
            task_id,
            states="-",
            set_fields={"id": task_id, "name": name, "crashes": 0, "notified": 1, **fields},
            incr={"attempts": 1},
        )

    # --- hosts: a sign of life per host, on the Redis clock -------------------------------------

    @property
    def _hosts(self) -> str:
        return f"{self.prefix}hosts"

    def host_beacon(self, host: str) -> None:
        """This host is alive (its workers' reporters and its group unit say so, often)."""
        self.client.hset(self._hosts, host, f"{self.now():.6f}")

    def host_silence(self, host: str) -> float | None:
        """Seconds since ``host`` last gave a sign of life; None if it never gave one (a host
        with no beacon is never judged lost: only the heartbeat rule applies to it)."""
        last = self.client.hget(self._hosts, host)
        return None if last is None else self.now() - float(cast("str", last))

    def heartbeat(self, task_id: str, attempt: int, progress: str | None = None) -> Outcome:
        fields: dict[str, object] = {"heartbeat_at": NOW}
        if progress is not None:
            fields["progress"] = progress
        return self.move(task_id, states=["running"], attempt=attempt, set_fields=fields)

    def finish(
        self, task_id: str, attempt: int, state: str, *, cause: str = "", reason: str = ""
    ) -> Outcome:
        """The attempt ended by itself: done, failed by its own exception, or queued (retry)."""
        fields: dict[str, object] = {"state": state, "cause": cause, "reason": reason}
        if state in FINAL_STATES:
            fields["finished_at"] = NOW
        # A finished attempt's message is never sent again: only failures keep it, for `retry`.
        delete = ["payload"] if state == "done" else []
        return self.move(
            task_id, states=["running"], attempt=attempt, set_fields=fields, delete=delete
        )


def merge_tags(known: Iterable[str], *new: str) -> str:
    tags = [tag for tag in known if tag not in new] + [tag for tag in new if tag]
    return " ".join(tags[-MAX_TAGS:])
