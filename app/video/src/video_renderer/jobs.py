"""Video records in Redis: what was asked (the spec), where it stands, what came out.

A record is the hash ``video-renderer:video:<id>``; ``video-renderer:videos`` orders the ids by
creation and ``video-renderer:state:<state>`` sets index them by state, both kept by the script
that moves the record, so counts never drift. The video id is also the id of its Celery task
(``send_task(..., task_id=video_id)``), so ``celery-stable status|retry <video id>`` act on the
video directly.

What this module no longer does, because the runtime does it for every task of the app: count
attempts and crashes, tell a dead worker's attempt from a live one, requeue or give up after a
crash, recognise a redelivered copy of a message. The old per-attempt tokens existed for that;
the runtime's crash ledger (keyed by the same id) replaces them.

What it still does, because only the app knows it: the spec, the output, the reason in the app's
words, and one guard the ledger cannot give. An attempt the runtime took away (given up as stuck,
or past its hard limit) may still be running somewhere and finish later; so each move of a
record is one Lua compare-and-set on the video's state and attempt number *and* on the runtime's
ledger record of the same id (read through :meth:`Ledger.key`, fields ``state`` and
``attempts``): an attempt records its outcome only while the ledger still says it is the one
running. Every time is the Redis server's clock, as in the ledger.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, cast

import redis
from celery import Celery
from celery_stable.ledger import Ledger, redis_client
from celery_stable.settings import BY_ENV

PREFIX = "video-renderer:"
STATES = ("queued", "processing", "done", "failed")
FINAL_STATES = ("done", "failed")
NOW = "$now"

_LIB = """
local function now()
  local t = redis.call('TIME')
  return string.format('%.6f', tonumber(t[1]) + tonumber(t[2]) / 1e6)
end
"""

# KEYS[1] video, KEYS[2] the ledger record of its task; ARGV[1] state-set prefix, ARGV[2] allowed
# states (comma separated), ARGV[3] attempt rule: '' any, 'eq:N' the record is attempt N's, 'lt:N'
# the record is an older attempt's; ARGV[4] ledger rule: '' not checked, 'running:N' the ledger
# runs attempt N, 'failed' the ledger gave the task up at this record's attempt or later;
# ARGV[5] JSON fields to set ('$now' = the server's time). Returns {status, state, attempt}.
_MOVE = (
    _LIB
    + """
local cur = redis.call('HMGET', KEYS[1], 'state', 'attempt', 'id')
if not cur[1] then return {'missing', '', '0'} end
local attempt = tonumber(cur[2] or '0')
if not string.find(',' .. ARGV[2] .. ',', ',' .. cur[1] .. ',', 1, true) then
  return {'state', cur[1], cur[2]}
end
local rule, n = string.match(ARGV[3], '^(%a+):(%d+)$')
if (rule == 'eq' and attempt ~= tonumber(n)) or (rule == 'lt' and attempt >= tonumber(n)) then
  return {'stale', cur[1], cur[2]}
end
if ARGV[4] ~= '' then
  local ledger = redis.call('HMGET', KEYS[2], 'state', 'attempts')
  local lrule, ln = string.match(ARGV[4], '^(%a+):?(%d*)$')
  local runs = ledger[1] == lrule and (ln == '' or ledger[2] == ln)
  if lrule == 'failed' then runs = runs and attempt <= tonumber(ledger[2] or '0') end
  if not runs then return {'taken', cur[1], cur[2]} end
end
local at = now()
for field, value in pairs(cjson.decode(ARGV[5])) do
  if value == '$now' then value = at end
  redis.call('HSET', KEYS[1], field, value)
end
local new = redis.call('HGET', KEYS[1], 'state')
if new ~= cur[1] then
  redis.call('SREM', ARGV[1] .. cur[1], cur[3])
  redis.call('SADD', ARGV[1] .. new, cur[3])
end
return {'ok', cur[1], redis.call('HGET', KEYS[1], 'attempt') or '0'}
"""
)

# KEYS[1] video, KEYS[2] queued set, KEYS[3] ids by creation; ARGV[1] id, ARGV[2..] field/value.
_CREATE = (
    _LIB
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local at = now()
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('HSET', KEYS[1], 'created_at', at)
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], at, ARGV[1])
return 1
"""
)

# KEYS[1] video, KEYS[3] ids by creation; ARGV[1] id, ARGV[2] state-set prefix.
_DELETE = """
local state = redis.call('HGET', KEYS[1], 'state')
if state then redis.call('SREM', ARGV[2] .. state, ARGV[1]) end
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('DEL', KEYS[1])
"""


def broker_url(app: Celery) -> str:
    """The broker Celery uses for ``app``, which is also the Redis of the ledger and the videos.

    Celery reads CELERY_BROKER_URL itself; unset, the runtime's documented default applies.
    """
    url = app.conf.broker_url or BY_ENV["CELERY_BROKER_URL"].default
    return str(url).split(";")[0].strip()


@dataclass(frozen=True)
class VideoRecord:
    id: str
    task_id: str
    spec: dict[str, Any]
    state: str
    # The runtime's attempt number that last moved the record (0: never started).
    attempt: int
    output: str
    error: str
    # Set when the runtime gave the task up: crash, time-limit, watchdog, oom, stuck.
    cause: str
    created_at: float
    started_at: float | None
    finished_at: float | None

    @classmethod
    def from_hash(cls, raw: Mapping[str, str]) -> VideoRecord:
        def number(key: str) -> float | None:
            value = raw.get(key, "")
            return float(value) if value else None

        return cls(
            id=raw["id"],
            task_id=raw.get("task_id", raw["id"]),
            spec=json.loads(raw.get("spec", "{}")),
            state=raw["state"],
            attempt=int(raw.get("attempt") or 0),
            output=raw.get("output", ""),
            error=raw.get("error", ""),
            cause=raw.get("cause", ""),
            created_at=float(raw.get("created_at") or 0),
            started_at=number("started_at"),
            finished_at=number("finished_at"),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Outcome:
    """A compare-and-set's result: ``ok``, or why not: ``missing``, ``state`` (not in an allowed
    state), ``stale`` (another attempt's record), ``taken`` (the ledger moved on)."""

    status: str
    state: str
    attempt: int

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class VideoStore:
    def __init__(self, client: redis.Redis, prefix: str = PREFIX) -> None:
        self.client = client
        self.prefix = prefix
        # Read only: the runtime writes the ledger; the app reads attempts and guards on it.
        self.ledger = Ledger(client)
        self._move = client.register_script(_MOVE)
        self._create = client.register_script(_CREATE)
        self._delete = client.register_script(_DELETE)

    @classmethod
    def for_app(cls, app: Celery, *, retry_seconds: float = 30.0) -> VideoStore:
        return cls(redis_client(broker_url(app), retry_seconds=retry_seconds))

    def key(self, video_id: str) -> str:
        return f"{self.prefix}video:{video_id}"

    @property
    def _states(self) -> str:
        return f"{self.prefix}state:"

    @property
    def _index(self) -> str:
        return f"{self.prefix}videos"

    # --- reading -------------------------------------------------------------------------------

    def get(self, video_id: str) -> VideoRecord | None:
        # decode_responses=True: redis-py's bytes-or-str typing does not know it.
        raw = cast("dict[str, str]", self.client.hgetall(self.key(video_id)))
        return VideoRecord.from_hash(raw) if raw.get("state") else None

    def recent(self, state: str | None = None, limit: int = 50) -> list[VideoRecord]:
        """Newest first."""
        records: list[VideoRecord] = []
        for video_id in cast("list[str]", self.client.zrevrange(self._index, 0, -1)):
            record = self.get(video_id)
            if record and (state is None or record.state == state):
                records.append(record)
                if len(records) >= limit:
                    break
        return records

    def ids_in(self, state: str) -> list[str]:
        """The ids of the videos in ``state`` (its index set), sorted."""
        return sorted(cast("set[str]", self.client.smembers(self._states + state)))

    def counts(self) -> dict[str, int]:
        pipe = self.client.pipeline(transaction=False)
        for state in STATES:
            pipe.scard(self._states + state)
        return dict(zip(STATES, pipe.execute(), strict=True))

    def running_attempt(self, video_id: str) -> int:
        """The runtime's number for the attempt running now (0: no ledger record says so).

        It counts every delivery the runtime admitted: crash redeliveries and operator retries
        alike, which Celery's own ``request.retries`` does not.
        """
        record = self.ledger.get(video_id)
        return record.attempts if record is not None and record.state == "running" else 0

    # --- moves ---------------------------------------------------------------------------------

    def create(self, spec: Mapping[str, Any]) -> VideoRecord:
        while True:
            video_id = secrets.token_hex(6)
            fields = {
                "id": video_id,
                "task_id": video_id,
                "spec": json.dumps(spec, sort_keys=True),
                "state": "queued",
                "attempt": 0,
                "output": "",
                "error": "",
                "cause": "",
            }
            flat = [str(item) for pair in fields.items() for item in pair]
            keys = [self.key(video_id), self._states + "queued", self._index]
            if self._create(keys=keys, args=[video_id, *flat]):
                record = self.get(video_id)
                assert record is not None
                return record

    def delete(self, video_id: str) -> bool:
        keys = [self.key(video_id), self._index]
        return bool(self._delete(keys=keys, args=[video_id, self._states]))

    def move(
        self,
        video_id: str,
        *,
        states: tuple[str, ...],
        attempt_rule: str,
        ledger_rule: str,
        fields: Mapping[str, object],
    ) -> Outcome:
        status, state, attempt = cast(
            "list[str]",
            self._move(
                keys=[self.key(video_id), self.ledger.key(video_id)],
                args=[
                    self._states,
                    ",".join(states),
                    attempt_rule,
                    ledger_rule,
                    json.dumps({key: str(value) for key, value in fields.items()}),
                ],
            ),
        )
        return Outcome(status, state, int(attempt or 0))

    @staticmethod
    def _running(attempt: int) -> str:
        # Attempt 0: run outside the runtime (a direct call), so there is no ledger to check.
        return f"running:{attempt}" if attempt else ""

    def begin(self, video_id: str, attempt: int) -> Outcome:
        """Attempt ``attempt`` starts: from any state, unless the record is this attempt's or a
        newer one's (a second message reusing the id starts at attempt 1 again)."""
        return self.move(
            video_id,
            states=STATES,
            attempt_rule=f"lt:{attempt}" if attempt else "",
            ledger_rule=self._running(attempt),
            fields={
                "state": "processing",
                "attempt": attempt,
                "started_at": NOW,
                "finished_at": "",
                "output": "",
                "error": "",
                "cause": "",
            },
        )

    def finish(self, video_id: str, attempt: int, output: str) -> Outcome:
        return self.move(
            video_id,
            states=("processing",),
            attempt_rule=f"eq:{attempt}",
            ledger_rule=self._running(attempt),
            fields={"state": "done", "output": output, "finished_at": NOW},
        )

    def fail(self, video_id: str, attempt: int, reason: str) -> Outcome:
        return self.move(
            video_id,
            states=("processing",),
            attempt_rule=f"eq:{attempt}",
            ledger_rule=self._running(attempt),
            fields={"state": "failed", "error": reason, "finished_at": NOW},
        )

    def retract(self, video_id: str, attempt: int, reason: str) -> Outcome:
        """Attempt ``attempt`` recorded the video done but could not put its output in place:
        failed instead, while the ledger still runs that attempt."""
        return self.move(
            video_id,
            states=("done",),
            attempt_rule=f"eq:{attempt}",
            ledger_rule=self._running(attempt),
            fields={"state": "failed", "output": "", "error": reason, "finished_at": NOW},
        )

    def give_up(self, video_id: str, cause: str, reason: str) -> Outcome:
        """The runtime gave the task up: failed for a manual retry, unless a later attempt has
        begun since (the operator retried it first) or it was done meanwhile."""
        return self.move(
            video_id,
            states=("queued", "processing", "failed"),
            attempt_rule="",
            ledger_rule="failed",
            fields={"state": "failed", "error": reason, "cause": cause, "finished_at": NOW},
        )
