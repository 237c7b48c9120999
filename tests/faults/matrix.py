#!/usr/bin/env python3
"""The fault matrix: one app, the field guide's own, in two columns, and every fault the guide
feared injected into both.

The app is tests/faults/guide_app (the guide's `core`: its settings, a video task, its recovery
job on its Beat schedule, and a give-up hook task). On one systemd container (molecule/faults):

- guide: the app under the guide's command line, a Restart=always unit capped at 10 restarts
  an hour (its supervisor's stand-in) and its Beat; Redis database 1 (side_effect.yml);
- celery-stable: the same tree deployed by the role through variables only (host_vars/),
  under the runtime; Redis database 0.

Both columns submit the same way (guide_ctl.py: a row in the app's video table, then
core.tasks.generate_video(video_id, spec)) and are read the same way, from outside the host:
the video table (redis-cli), `systemctl show`, the journal; the role's column also through the
runtime's ledger (`celery-stable list --json`, `status`) and Celery's result backend. Only the
role's column carries expectations; the guide's is measured and reported as it is.

    python3 tests/faults/matrix.py --container celery-stable-faults [--only 0,5,5x]

Prints ONE table on stdout (progress on stderr), writes it to --out and, one object per row and
column, to --json; exits 1 when a row of celery-stable misses its expectation. Python 3.11,
standard library only, and tests/infra/hosts.py.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT / "tests" / "infra"))
from hosts import Host, HostError, count, first, poll, refused_run  # noqa: E402

TASK = "core.tasks.generate_video"
APP = "core (tests/faults/guide_app)"
ROLE_UNIT = "celery-worker@1.service"
GUIDE_UNIT = "guide-worker.service"
GUIDE_BEAT = "guide-beat.service"
ROLE_ENV = "/etc/celery-stable/celery-stable.env"
GUIDE_ENV = "/etc/guide-app/guide.env"
CTL = "/opt/guide-ctl/guide_ctl.py"
# Row 5x: the role's unit without its ExecStopPost (a drop-in clearing it), to prove row 5's
# check fails without it.
NO_REAP_DROP_IN = "/etc/systemd/system/celery-worker@1.service.d/zz-matrix-no-reap.conf"
WINDOW_DROP_IN = "/etc/systemd/system/celery-worker@1.service.d/zz-matrix-reexec-window.conf"
SKEW_DROP_IN = "/etc/systemd/system/celery-worker@1.service.d/zz-matrix-clock-skew.conf"
SKEW_SITE = "/opt/matrix-clock-skew"
# Test only: the worker's Python sees its wall clock MATRIX_CLOCK_OFFSET_SEC off.
SKEW_SITECUSTOMIZE = """import os, time
_offset = float(os.environ.get("MATRIX_CLOCK_OFFSET_SEC", "0"))
_time, _time_ns = time.time, time.time_ns
time.time = lambda: _time() + _offset
time.time_ns = lambda: _time_ns() + int(_offset * 1e9)
"""
# The guide's copy of a fault goes in this much later, so that two Python start-ups do not
# compete for the host's 2 cores during a measured restart.
GUIDE_STAGGER_SEC = 2.0

_log_file = None
_log_lock = threading.Lock()


def log(message: str) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {message}"
    with _log_lock:
        print(line, file=sys.stderr, flush=True)
        if _log_file is not None:
            _log_file.write(line + "\n")
            _log_file.flush()


def secs(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}"


# ---------------------------------------------------------------------------------------------
# Videos and the two columns


def spec(title: str, seconds: float = 1.0, fault: dict | None = None) -> dict:
    body: dict = {
        "title": title,
        "width": 320,
        "height": 240,
        "fps": 25,
        "slides": [{"text": title, "duration": seconds, "background": "#1e3a8a", "color": "#ffffff"}],
    }
    if fault is not None:
        body["fault"] = fault
    return body


@dataclass
class Sub:
    video: str
    task: str


@dataclass
class Video:
    """A row of the app's video table: pending -> processing -> done | failed."""

    id: str
    state: str  # pending, processing, done, failed, missing
    error: str = ""
    updated_at: float | None = None

    @property
    def final(self) -> bool:
        return self.state in ("done", "failed")


@dataclass
class Tally:
    accepted: int = 0
    done: int = 0
    failed: int = 0
    lost: int = 0

    def __str__(self) -> str:
        return f"{self.accepted} / {self.done} / {self.failed} / {self.lost}"


# Every row of the video table named, in one round trip.
ROWS_LUA = (
    "local out = {} "
    "for _, key in ipairs(KEYS) do "
    "  local h = redis.call('HGETALL', key) local row = {} "
    "  for i = 1, #h, 2 do row[h[i]] = h[i + 1] end "
    "  out[key] = row "
    "end "
    "return cjson.encode(out)"
)


class Column:
    """One way of running the app: how to submit a video and read what became of it."""

    name = ""
    unit = ""
    db = 0
    env_file = ""
    python = ""
    app_path = ""
    role = False

    def __init__(self, host: Host, redis_password: str) -> None:
        self.host = host
        self.redis_password = redis_password

    def redis(self, args: str) -> str:
        return f"REDISCLI_AUTH={shlex.quote(self.redis_password)} redis-cli -n {self.db} {args}"

    def submit(self, specs: list[dict], queue: str = "") -> list[Sub]:
        script = f"set -a; . {self.env_file}; set +a; PYTHONPATH={self.app_path} {self.python} {CTL} submit {queue}"
        out = self.host.sh(script, stdin=json.dumps(specs)).stdout
        return [Sub(item["video"], item["task"]) for item in json.loads(out)]

    def videos(self, subs: list[Sub]) -> dict[str, Video]:
        keys = " ".join(shlex.quote(f"core:video:{s.video}") for s in subs)
        text = self.host.out(self.redis(f"--raw EVAL {shlex.quote(ROWS_LUA)} {len(subs)} {keys}"))
        rows = json.loads(text) if text else {}
        videos = {}
        for s in subs:
            row = rows.get(f"core:video:{s.video}") or {}
            if not isinstance(row, dict) or not row:
                videos[s.video] = Video(s.video, "missing")
                continue
            stamp = row.get("updated_at")
            videos[s.video] = Video(
                s.video, row.get("state", "?"), row.get("error", ""), float(stamp) if stamp else None
            )
        return videos

    def wait(
        self,
        subs: list[Sub],
        timeout: float,
        until: Callable[[dict[str, Video]], bool] | None = None,
    ) -> dict[str, Video]:
        """The rows once every video is done/failed (or ``until`` holds), at most ``timeout``."""
        last: dict[str, dict[str, Video]] = {}

        def check() -> bool:
            last["v"] = self.videos(subs)
            return until(last["v"]) if until else all(v.final for v in last["v"].values())

        poll(check, timeout, interval=0.5)
        return last["v"]

    def tally(self, subs: list[Sub], videos: dict[str, Video]) -> Tally:
        tally = Tally(accepted=len(subs))
        for s in subs:
            video = videos[s.video]
            if video.state == "done":
                tally.done += 1
            elif video.state == "failed" and video.error:
                tally.failed += 1
            else:
                tally.lost += 1
        return tally

    def main_pid(self) -> int:
        return int(self.host.prop(self.unit, "MainPID") or 0)

    def restarts(self) -> int:
        return int(self.host.prop(self.unit, "NRestarts") or 0)

    def rss_mb(self) -> float:
        out = self.host.out(f"ps -o rss= -p {self.main_pid()}", check=False)
        return int(out) / 1024 if out.isdigit() else 0.0

    def journal(self, since: float) -> list[tuple[float, str]]:
        return self.host.journal(since, "-u", self.unit)

    def render_start(self, task_id: str, since: float, timeout: float = 30) -> float | None:
        """When the app logged the start of this task's render (its own WARNING line)."""
        return poll(lambda: first(self.journal(since), rf"guide render start {task_id}"), timeout, 0.5)

    def held(self, subs: list[Sub]) -> dict[str, float]:
        """The tasks among ``subs`` whose message kombu still holds unacked (its ``unacked``
        hash, task id in the headers), with the seconds since it was delivered: what comes back
        once the visibility timeout has passed."""
        pairs = self.host.out(self.redis("--raw HGETALL unacked")).splitlines()
        index = self.host.out(self.redis("--raw ZRANGE unacked_index 0 -1 WITHSCORES")).split()
        delivered = dict(zip(index[::2], map(float, index[1::2]), strict=False))
        found = {}
        for tag, message in zip(pairs[::2], pairs[1::2], strict=False):
            for s in subs:
                if s.task in message:
                    found[s.task] = time.time() - delivered.get(tag, time.time())
        return found

    def held_text(self, subs: list[Sub]) -> str:
        held = self.held(subs)
        if not held:
            return "no message of it left unacked in Redis"
        return (
            f"{len(held)} of {len(subs)} message(s) still unacked in Redis ({max(held.values()):.0f} s): Celery's "
            "default early ack is queued on the event loop, which the solo task blocks, so it never "
            "ran; redelivered after the visibility timeout (3600 s), to run again"
        )

    def broker(self) -> dict[str, int]:
        """The app's queue and kombu's unacked hash, in this column's database."""
        queued = self.host.out(self.redis("LLEN celery"))
        unacked = self.host.out(self.redis("HLEN unacked"))
        return {"queued": int(queued or 0), "unacked": int(unacked or 0)}


class GuideColumn(Column):
    name = "guide"
    unit = GUIDE_UNIT
    db = 1
    env_file = GUIDE_ENV
    python = "/opt/guide-app/venv/bin/python"
    app_path = "/opt/guide-app"


class RoleColumn(Column):
    name = "celery-stable"
    unit = ROLE_UNIT
    db = 0
    env_file = ROLE_ENV
    python = "/opt/celery-stable/venv/bin/python"
    app_path = "/opt/celery-stable/app"
    role = True

    def ledger(self, subs: list[Sub]) -> dict[str, dict]:
        """The runtime's records of these tasks, as `celery-stable list --json` prints them."""
        text = self.host.out(f"celery-stable list --json --name {TASK} --limit 500")
        by_id = {r["id"]: r for r in json.loads(text)}
        return {s.task: by_id.get(s.task, {}) for s in subs}

    def status(self, task_id: str) -> dict:
        proc = self.host.sh(f"celery-stable status {task_id} --json", check=False)
        return json.loads(proc.stdout) if proc.returncode == 0 else {}

    def ledger_state(self, task_id: str) -> str:
        return self.host.out(self.redis(f"--raw HGET celery-stable:task:{task_id} state"))

    def payload(self, task_id: str) -> str:
        return self.host.out(self.redis(f"--raw HGET celery-stable:task:{task_id} payload"))

    def results(self, subs: list[Sub]) -> dict[str, dict]:
        """Celery's result backend (Redis database 0): status, exception type and message."""
        keys = " ".join(f"celery-task-meta-{s.task}" for s in subs)
        lines = self.host.out(self.redis(f"--raw MGET {keys}")).split("\n")
        out = {}
        for s, line in zip(subs, lines + [""] * len(subs), strict=False):
            meta = json.loads(line) if line.startswith("{") else {}
            result = meta.get("result") if isinstance(meta.get("result"), dict) else {}
            message = result.get("exc_message", "")
            if isinstance(message, list):
                message = " ".join(map(str, message))
            out[s.task] = {
                "status": meta.get("status", "PENDING"),
                "exc_type": result.get("exc_type", ""),
                "message": str(message),
            }
        return out

    def status_text(self) -> str:
        return self.host.prop(self.unit, "StatusText")

    def ready_after(self, since: float, timeout: float) -> float | None:
        """When the worker next logged that it consumes (the runtime's READY line)."""
        return poll(lambda: first(self.journal(since), r"ready: consuming"), timeout, 0.5)


# ---------------------------------------------------------------------------------------------
# Rows


@dataclass
class Outcome:
    setup: str
    checked: bool
    happened: list[str] = field(default_factory=list)
    seconds: float | None = None
    tally: Tally = field(default_factory=Tally)
    problems: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.happened.append(text)

    def expect(self, condition: object, problem: str) -> bool:
        # Only celery-stable is judged; the guide's column is measured and reported as it is
        # (a harness error there still shows).
        if not condition and self.checked:
            self.problems.append(problem)
        return bool(condition)

    @property
    def ok(self) -> bool | None:
        if not self.checked:
            return None
        return not self.problems

    @property
    def verdict(self) -> str:
        if not self.checked:
            return "baseline" if not self.problems else "harness: " + "; ".join(self.problems)
        return "ok" if not self.problems else "FAIL: " + "; ".join(self.problems)


@dataclass
class Row:
    number: str
    fault: str
    expectation: str
    seconds: str  # what the seconds column measures
    outcomes: list[Outcome] = field(default_factory=list)


class Matrix:
    def __init__(self, host: Host, args: argparse.Namespace) -> None:
        self.host = host
        self.args = args
        env = self.env(ROLE_ENV)
        match = re.match(r"redis://:([^@]*)@", env.get("CELERY_BROKER_URL", ""))
        password = match.group(1) if match else ""
        self.role = RoleColumn(host, password)
        self.guide = GuideColumn(host, password)
        # The clocks both columns run on (host_vars): read back from the host, not assumed.
        self.limit = float(env["GUIDE_TIME_LIMIT_SEC"])
        self.stuck = float(env["GUIDE_STUCK_AFTER_SEC"])
        self.period = float(env["GUIDE_RECOVERY_EVERY_SEC"])
        self.max_tasks = int(env["CELERY_STABLE_MAX_TASKS_PER_CHILD"])
        self.max_rss_kb = int(env["CELERY_STABLE_MAX_MEMORY_PER_CHILD_KB"])
        self.rows: list[Row] = []
        self.notes: list[str] = []

    def env(self, path: str) -> dict[str, str]:
        text = self.host.out(f"cat {path}")
        pairs = (line.split("=", 1) for line in text.splitlines() if re.match(r"^[A-Z_]+=", line))
        return {key: value.strip().strip('"') for key, value in pairs}

    @property
    def guide_recovery_window(self) -> float:
        """How long the guide's recovery job needs, from a worker able to run it: the video must
        be older than its threshold, then the job's next run, then the job itself (margin)."""
        return self.stuck + 2 * self.period + 6

    # --- running a row -------------------------------------------------------------------

    def ensure_up(self, c: Column, out: Outcome) -> None:
        """Start a row from a running worker; a role worker left down by the last row is a
        problem, a guide worker left down is started as its operator would."""
        state = self.host.prop(c.unit, "ActiveState")
        if state == "active":
            return
        if c.role:
            out.problems.append(f"worker was {state} at the start of the row; restarted")
        else:
            out.note(f"(worker found {state} after the last row; started by hand)")
        self.host.sh(f"systemctl reset-failed {c.unit}; systemctl start {c.unit}")
        time.sleep(3)

    def run_row(
        self,
        row: Row,
        body: Callable[[Column, Outcome], None],
        guide: bool = True,
    ) -> None:
        if self.args.only and row.number not in self.args.only:
            return
        log(f"row {row.number}: {row.fault}")
        columns: list[Column] = [self.role] + ([self.guide] if guide else [])
        outcomes = {c.name: Outcome(c.name, checked=c.role) for c in columns}

        def runner(c: Column) -> None:
            out = outcomes[c.name]
            try:
                self.ensure_up(c, out)
                body(c, out)
            except Exception as exc:
                out.problems.append(f"harness error: {type(exc).__name__}: {exc}")
                log(f"row {row.number} {c.name}: {type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=runner, args=(c,)) for c in columns]
        for n, thread in enumerate(threads):
            if n:
                time.sleep(GUIDE_STAGGER_SEC)
            thread.start()
        for thread in threads:
            thread.join()
        row.outcomes = [outcomes[c.name] for c in columns]
        for out in row.outcomes:
            log(f"row {row.number} {out.setup}: {'; '.join(out.happened)} | {out.tally} | {out.verdict}")
        self.rows.append(row)

    # --- shared readings -------------------------------------------------------------------

    def describe(self, c: Column, video: Video, since: float) -> str:
        """What became of a video, in the guide's terms."""
        if video.state == "done":
            return f"done {secs(video.updated_at and video.updated_at - since)} s after the fault"
        if video.state == "failed":
            return f"failed {secs(video.updated_at and video.updated_at - since)} s after the fault: {video.error}"
        broker = c.broker()
        return (
            f"LOST: still {video.state} {time.time() - since:.0f} s after the fault; {c.name}'s "
            f"queue holds {broker['queued']} message(s), {broker['unacked']} unacked"
        )

    def check_ledger(
        self, out: Outcome, record: dict, *, state: str, cause: str | None = None, reason: str = ""
    ) -> None:
        out.expect(
            record.get("state") == state
            and (cause is None or record.get("cause") == cause)
            and reason in (record.get("reason") or ""),
            f"ledger {record.get('state')}/{record.get('cause') or '-'} "
            f"({(record.get('reason') or '')[:80]!r}), not {state}/{cause or '-'} with {reason!r}",
        )

    def check_result(self, out: Outcome, result: dict, status: str, exc_type: str = "") -> None:
        out.expect(
            result["status"] == status and (not exc_type or result["exc_type"] == exc_type),
            f"result backend {result['status']} {result['exc_type']}, not {status} {exc_type}".rstrip(),
        )

    HOOK_MARK = re.compile(r"^(crash|watchdog|time-limit|oom|stuck|memory|exit): ")

    def hooked(self, c: Column, sub: Sub, timeout: float = 20) -> tuple[Video, str]:
        """The video once the give-up hook has marked it (`mark_video_failed`: "<cause>: <the
        runtime's reason>"), and what marked it failed before, if anything: the app's own
        recovery job or its own except may get there first, from messages ahead of the hook's."""
        errors: list[str] = []

        def marked() -> bool:
            video = c.videos([sub])[sub.video]
            if video.error and (not errors or errors[-1] != video.error):
                errors.append(video.error)
            return video.state == "failed" and bool(self.HOOK_MARK.match(video.error))

        poll(marked, timeout, 0.5)
        video = c.videos([sub])[sub.video]
        earlier = next((e for e in errors if not self.HOOK_MARK.match(e)), "")
        return video, (f' (first marked failed by the app itself: "{earlier[:40]}")' if earlier else "")

    # --- 0: a plain video, and what systemd's status says while it runs ---------------------

    def row_plain(self, c: Column, out: Outcome) -> None:
        slow = {"kind": "slow", "at_frame": 0, "seconds": 0.08}
        since = time.time()
        [sub] = c.submit([spec("r0 plain", 2.0, slow)])
        if isinstance(c, RoleColumn):
            pattern = (
                rf"running {re.escape(TASK)}\[{re.escape(sub.task)}\] · (\d+)/{self.max_tasks} "
                r"tasks before recycle · RSS (\d+) MB"
            )
            seen: list[str] = []

            def running() -> bool:
                seen.append(c.status_text())
                return bool(re.fullmatch(pattern, seen[-1]))

            poll(running, 20, 0.3)
            out.expect(
                re.fullmatch(pattern, seen[-1]),
                f"StatusText while it ran was {seen[-1]!r}, not 'running {TASK}[<id>] · N/"
                f"{self.max_tasks} tasks before recycle · RSS M MB'",
            )
            out.note(f'`systemctl show -p StatusText` while it rendered: "{seen[-1]}"')
        videos = c.wait([sub], 30)
        video = videos[sub.video]
        out.seconds = video.updated_at - since if video.final and video.updated_at else None
        out.note(f"video {video.state} {secs(out.seconds)} s after submit")
        if isinstance(c, RoleColumn):
            record = c.ledger([sub])[sub.task]
            result = c.results([sub])[sub.task]
            out.note(
                f"ledger {record.get('state')} (attempt {record.get('attempts')}); result backend {result['status']}"
            )
            self.check_ledger(out, record, state="done")
            out.expect(record.get("attempts") == 1, f"{record.get('attempts')} attempts")
            self.check_result(out, result, "SUCCESS")
        else:
            out.note("no status line (a Type=simple unit: the guide's worker reports none)")
        out.tally = c.tally([sub], videos)
        out.expect(video.state == "done", f"video {video.state}")

    # --- 1: SIGSEGV mid-render -------------------------------------------------------------

    def row_segfault(self, c: Column, out: Outcome) -> None:
        since = time.time()
        fault = {"kind": "segfault", "at_frame": 10, "on_attempts": 1}
        [sub] = c.submit([spec("r1 segfault", 2.0, fault)])
        crash = poll(lambda: first(c.journal(since), r"Main process exited, code=(killed|dumped)"), 40, 0.5)
        out.expect(crash, "no SIGSEGV in the journal")
        if crash is None:
            out.tally = c.tally([sub], c.videos([sub]))
            return
        out.note("real SIGSEGV (status=11/SEGV)")
        if isinstance(c, RoleColumn):
            videos = c.wait([sub], 40)
            records = self.host.journal_records(since, "-u", c.unit)
            entries = [(r["t"], r["MESSAGE"]) for r in records]
            traceback = first(entries, r"Fatal Python error: Segmentation fault")
            restart = first(entries, r"Scheduled restart job", crash)
            reap = first(entries, rf"^celery-stable: reaped task {sub.task} \({TASK}\): requeued", crash)
            ready = c.ready_after(crash, 30)
            out.expect(traceback, "no faulthandler traceback in the journal")
            out.expect(reap, "no requeue line from the ExecStopPost reap (celery-stable reap)")
            out.expect(
                restart is not None and restart - crash <= 3.0,
                f"restart {secs(restart and restart - crash)} s after the crash",
            )
            out.note("faulthandler's Python traceback in the journal" if traceback else "no traceback")
            out.seconds = reap - crash if reap else None
            out.note(
                f"requeued by the ExecStopPost reap {secs(out.seconds)} s after the crash "
                f"(`celery-stable reap`: crash 1/2), restarted {secs(restart and restart - crash)} s, "
                f"consuming {secs(ready and ready - crash)} s after it"
            )
            record = c.ledger([sub])[sub.task]
            video = videos[sub.video]
            out.note(
                f"video {video.state} {secs(video.updated_at and video.updated_at - crash)} s after the "
                f"crash; ledger {record.get('state')}, attempt {record.get('attempts')}, "
                f"crashes {record.get('crashes')}"
            )
            self.check_ledger(out, record, state="done")
            out.expect(
                record.get("attempts") == 2 and record.get("crashes") == 1, "not done on attempt 2 after 1 crash"
            )
        else:
            # The journal may not hold systemd's line yet when the crash line is read.
            restart = poll(lambda: first(c.journal(since), r"Scheduled restart job", crash), 10, 0.5)
            out.note(
                f"restarted {secs(restart and restart - crash)} s after the crash (Restart=always); "
                "no Python traceback (the guide enables no faulthandler)"
            )
            videos = c.wait([sub], self.guide_recovery_window + 10)
            video = videos[sub.video]
            out.seconds = video.updated_at - crash if video.final and video.updated_at else None
            out.note(
                f"failed by the guide's recovery job {secs(out.seconds)} s after the crash, for a manual "
                f"retry ({video.error})"
                if video.state == "failed"
                else self.describe(c, video, crash)
            )
            out.note(c.held_text([sub]))
        out.tally = c.tally([sub], videos)
        if c.role:
            out.expect(videos[sub.video].state == "done", "video not done")

    # --- 2: 11 crashes within the hour -----------------------------------------------------

    def row_crash_loop(self, c: Column, out: Outcome) -> None:
        self.host.sh(f"systemctl reset-failed {c.unit}")
        since = time.time()
        fault = {"kind": "segfault", "at_frame": 0, "on_attempts": 1}
        subs = c.submit([spec(f"r2 crash {n}", 0.4, fault) for n in range(1, 12)])
        poll(lambda: self.host.prop(c.unit, "ActiveState") == "failed", 150, 1)
        entries = c.journal(since)
        crashes = count(entries, r"Main process exited, code=(killed|dumped)")
        refused = first(entries, r"Start request repeated too quickly")
        state = self.host.prop(c.unit, "ActiveState")
        out.note(f"{crashes} SIGSEGVs in {time.time() - since:.0f} s")
        out.expect(crashes == 11, f"{crashes} crashes, not 11")
        out.expect(refused, "the 11th start was not refused")
        out.expect(state == "failed", f"unit {state}, not failed")
        if refused:
            out.note(f"11th start refused ('Start request repeated too quickly'), unit {state}")
        alerted = first(self.host.journal(since, "-t", "celery-alert"), rf"{c.unit} failed")
        if c.role:
            out.expect(alerted, "no OnFailure alert (celery-alert crit line) in the journal")
            out.note("OnFailure alert (crit line in the journal)" if alerted else "no alert")
        else:
            out.note("no alert (the guide describes none; its supervisor logs to /tmp)")
        before = c.videos(subs)
        out.note(
            "videos when the unit gave up: "
            + ", ".join(
                f"{sum(v.state == s for v in before.values())} {s}"
                for s in ("done", "processing", "pending", "failed")
                if any(v.state == s for v in before.values())
            )
        )
        start = time.time()
        self.host.sh(f"systemctl reset-failed {c.unit} && systemctl start {c.unit}")
        window = 60 if c.role else self.guide_recovery_window + 10
        videos = c.wait(subs, window)
        finals = [v.updated_at for v in videos.values() if v.final and v.updated_at]
        out.seconds = max(finals) - start if finals and all(v.final for v in videos.values()) else None
        tally = c.tally(subs, videos)
        if c.role:
            records = c.ledger(subs).values()
            attempts = sorted({r.get("attempts") for r in records})
            out.note(
                f"`systemctl reset-failed` + start: all {tally.done} done {secs(out.seconds)} s later "
                f"(each requeued by the reap; attempts {attempts})"
            )
            out.expect(tally.done == 11, f"{tally.done}/11 done")
        else:
            out.note(
                f"`systemctl reset-failed` + start: {tally.failed} failed by the guide's recovery job "
                f'("{next((v.error for v in videos.values() if v.state == "failed"), "")}"), '
                f"{tally.done} done, within {secs(out.seconds)} s"
            )
            out.note(c.held_text(subs))
        out.tally = tally

    # --- 3a / 3b: recycle by count, by RSS -------------------------------------------------

    def recycle(
        self, c: Column, out: Outcome, subs: list[Sub], since: float, pid0: int, restarts0: int, why: str
    ) -> None:
        videos = c.wait(subs, 60)
        pid1, restarts1 = c.main_pid(), c.restarts()
        if isinstance(c, RoleColumn):
            # Either reason may come second: the task that leaks past the RSS limit can also be
            # the one that makes the count (the app's recovery job counts as a task too).
            recycling = poll(lambda: first(c.journal(since), rf"recycling after this task: (.*, )?{why}"), 20, 0.5)
            ready = c.ready_after(recycling, 30) if recycling else None
            line = next((m for t, m in c.journal(since) if "recycling after this task" in m and t == recycling), "")
            out.expect(recycling, f"no 'recycling after this task: {why}' line in the journal")
            out.expect(pid1 == pid0, f"MainPID changed {pid0} -> {pid1}")
            out.expect(restarts1 == restarts0, f"NRestarts {restarts0} -> {restarts1}")
            out.seconds = ready - recycling if ready and recycling else None
            out.expect(ready, "not consuming again after the recycle")
            out.note(
                f"journal '{line.split('] ')[-1]}'; re-executed in place: MainPID {pid0} -> {pid1}, "
                f"NRestarts {restarts0} -> {restarts1}; consuming again {secs(out.seconds)} s after "
                "the recycle began"
            )
        else:
            out.note(
                f"never recycled (ignored under --pool=solo): MainPID {pid0} -> {pid1}, NRestarts "
                f"{restarts0} -> {restarts1}, RSS now {c.rss_mb():.0f} MB"
            )
        out.tally = c.tally(subs, videos)
        out.note(f"{out.tally.done}/{len(subs)} videos done")
        if c.role:
            out.expect(out.tally.done == len(subs), f"{out.tally.done}/{len(subs)} done")

    def row_recycle_count(self, c: Column, out: Outcome) -> None:
        since, pid0, restarts0 = time.time(), c.main_pid(), c.restarts()
        if isinstance(c, RoleColumn):
            out.note(f'before: "{c.status_text()}" (the app\'s own recovery job counts as a task too)')
        subs = c.submit([spec(f"r3a count {n}", 0.2) for n in range(self.max_tasks)])
        self.recycle(c, out, subs, since, pid0, restarts0, r"\d+ tasks done")

    def row_recycle_rss(self, c: Column, out: Outcome) -> None:
        since, pid0, restarts0 = time.time(), c.main_pid(), c.restarts()
        rss0 = c.rss_mb()
        # 60 MiB past the threshold from the idle RSS read here: the app's recovery job may make
        # the count first, and the leak then runs on a fresh image, some 30 MB smaller (67 MB
        # fresh, 94-96 MB after a few tasks, measured).
        leak_mb = max(16, round(self.max_rss_kb / 1024 - rss0 + 60))
        out.note(f"a leak of {leak_mb} MiB at RSS {rss0:.0f} MB (threshold {self.max_rss_kb} KiB)")
        subs = c.submit([spec("r3b leak", 1.0, {"kind": "leak", "at_frame": 5, "mb": leak_mb})])
        subs += c.submit([spec(f"r3b behind {n}", 0.4) for n in (1, 2)])
        self.recycle(c, out, subs, since, pid0, restarts0, r"RSS \d+ MB >=")
        if c.role:
            # Quoted: an instance's cgroup is under system-celery\x2dworker.slice.
            cgroup = self.host.prop(c.unit, "ControlGroup")
            v1, v2 = shlex.quote(f"/sys/fs/cgroup/memory{cgroup}"), shlex.quote(f"/sys/fs/cgroup{cgroup}")
            fail = self.host.out(
                f"cat {v1}/memory.failcnt 2>/dev/null || grep -w max {v2}/memory.events 2>/dev/null",
                check=False,
            ).split()
            hits = int(fail[-1]) if fail and fail[-1].isdigit() else -1
            out.expect(hits == 0, f"MemoryMax hit (failcnt {hits})")
            out.note(f"MemoryMax never hit (cgroup failcnt {hits})" if hits == 0 else f"MemoryMax failcnt {hits}")

    # --- 4: allocation bomb ----------------------------------------------------------------

    def row_alloc_bomb(self, c: Column, out: Outcome) -> None:
        since, pid0, restarts0 = time.time(), c.main_pid(), c.restarts()
        subs = c.submit([spec("r4 bomb", 1.0, {"kind": "alloc_bomb", "at_frame": 5, "mb": 0}), spec("r4 next", 1.0)])
        bomb, nxt = subs
        videos = c.wait(subs, 60)
        start = c.render_start(bomb.task, since, 5) or since
        pid1, restarts1 = c.main_pid(), c.restarts()
        video = videos[bomb.video]
        out.seconds = video.updated_at - start if video.final and video.updated_at else None
        entries = c.journal(since)
        if isinstance(c, RoleColumn):
            video, before = self.hooked(c, bomb)
            videos[bomb.video] = video
            record = c.ledger([bomb])[bomb.task]
            result = c.results([bomb])[bomb.task]
            given_up = record.get("finished_at") and record.get("started_at")
            out.seconds = record["finished_at"] - record["started_at"] if given_up else None
            out.note(
                f"MemoryError under RLIMIT_AS, given up {secs(out.seconds)} s into its render; ledger "
                f'{record.get("state")}/{record.get("cause")}: "{record.get("reason")}"'
            )
            out.note(
                f'video {video.state} by the hook: "{video.error[:90]}…"{before}; result '
                f"backend {result['status']} {result['exc_type']}"
            )
            self.check_ledger(out, record, state="failed", cause="memory", reason="RLIMIT_AS")
            out.expect(
                video.error.startswith("memory:") and "RLIMIT_AS" in video.error,
                "the hook did not mark the video failed naming RLIMIT_AS",
            )
            self.check_result(out, result, "FAILURE")
            reexec = first(entries, rf"re-executing in place \(task {bomb.task} ended its worker\)")
            out.expect(reexec, "no re-exec line in the journal")
            out.expect(
                pid1 == pid0 and restarts1 == restarts0,
                f"MainPID {pid0} -> {pid1}, NRestarts {restarts0} -> {restarts1}",
            )
            out.note(f"re-executed in place: MainPID {pid0} -> {pid1}, NRestarts {restarts0} -> {restarts1}")
        else:
            fatal = count(entries, r"Unrecoverable error: MemoryError")
            out.note(
                f"MemoryError under its RLIMIT_AS: video {video.state} by the app's own except "
                f'{secs(out.seconds)} s into its render ("{video.error}"); Celery took the '
                f"MemoryError as fatal ({fatal} 'Unrecoverable error' line(s)): MainPID {pid0} -> "
                f"{pid1}, NRestarts {restarts0} -> {restarts1}"
            )
        out.note(f"next video {videos[nxt.video].state}")
        out.tally = c.tally(subs, videos)
        if c.role:
            out.expect(videos[nxt.video].state == "done", "the next video did not render")

    # --- 5: hang holding the GIL; the ExecStopPost reap --------------------------------------

    def check_watchdog_reap(self, c: RoleColumn, out: Outcome, subs: list[Sub], since: float) -> None:
        """Row 5's check (and 5x's): the watchdog killed the hung task, and the ExecStopPost
        `celery-stable reap`, which alone knows SERVICE_RESULT=watchdog, failed it as such.

        Without ExecStopPost the worker's start-up reap finds the dead attempt with no cause
        ("crash"), requeues it, the hang comes back, and the second death fails it as a crash:
        no reap line in the stop phase, and the ledger's cause is not `watchdog`.
        """
        hung, behind = subs
        videos = c.wait(subs, 45)
        start = c.render_start(hung.task, since, 5) or since
        records = self.host.journal_records(since, "-u", c.unit)
        entries = [(r["t"], r["MESSAGE"]) for r in records]
        timeout = first(entries, r"Watchdog timeout")
        result_line = first(entries, r"Failed with result 'watchdog'")
        restart = first(entries, r"Scheduled restart job", timeout or since)
        reap = next(
            (
                r
                for r in records
                if re.match(
                    rf"celery-stable: reaped task {hung.task} \({TASK}\): failed "
                    r"\(stopped answering the systemd watchdog",
                    r["MESSAGE"],
                )
            ),
            None,
        )
        out.expect(timeout and result_line, "not killed by the watchdog (no 'Watchdog timeout' / result 'watchdog')")
        in_stop_phase = reap is not None and timeout is not None and timeout <= reap["t"] <= (restart or reap["t"])
        out.expect(
            in_stop_phase,
            "no line of the ExecStopPost `celery-stable reap` failing it, between the watchdog kill and the restart",
        )
        out.seconds = timeout - start if timeout else None
        out.note(
            f"watchdog kill {secs(out.seconds)} s after the render began (WatchdogSec=5; the hang "
            "stopped the pings)"
            + ("; SIGABRT traceback in the journal" if first(entries, r"Fatal Python error: Aborted") else "")
        )
        if reap is not None:
            out.note(
                f"ExecStopPost `celery-stable reap` (pid {reap.get('_PID', '?')}) "
                f"{reap['t'] - (timeout or reap['t']):.1f} s after the kill: "
                f'"{reap["MESSAGE"].split(": ", 1)[-1][:160]}…"'
            )
        video, before = self.hooked(c, hung)
        videos[hung.video] = video
        record = c.ledger([hung])[hung.task]
        result = c.results([hung])[hung.task]
        runs = count(entries, rf"guide render start {hung.task}")
        out.note(
            f"ledger {record.get('state')}/{record.get('cause')} after {runs} run(s); video "
            f'{video.state} by the hook: "{video.error[:120]}…"{before}; result backend {result["status"]} '
            f"{result['exc_type']}; the video behind it {videos[behind.video].state}"
        )
        self.check_ledger(
            out, record, state="failed", cause="watchdog", reason="stopped answering the systemd watchdog"
        )
        out.expect(
            video.state == "failed" and video.error.startswith("watchdog:"),
            "the hook did not mark the video failed (watchdog)",
        )
        self.check_result(out, result, "FAILURE", "WorkerLostError")
        out.expect(videos[behind.video].state == "done", "the video behind it did not render")
        out.tally = c.tally(subs, videos)

    def guide_hang(self, c: Column, out: Outcome, subs: list[Sub], since: float, window: float) -> None:
        """The guide's side of a hang: nothing ends it; its recovery job waits behind it on the
        same solo worker. Watched for ``window``, then killed as an operator would."""
        hung, behind = subs
        start = c.render_start(hung.task, since, 20) or since
        time.sleep(max(0.0, start + window - time.time()))
        videos = c.videos(subs)
        broker = c.broker()
        pid = c.main_pid()
        out.note(
            f"nothing killed it in {window:.0f} s (--time-limit is ignored under solo): worker pid "
            f"{pid} still in the task, video {videos[hung.video].state}, the one behind "
            f"{videos[behind.video].state}; {broker['queued']} messages queued behind it, its own "
            "recovery jobs among them (they run on this same worker)"
        )
        kill = time.time()
        self.host.sh(f"systemctl kill -s KILL {c.unit}")
        videos = c.wait(subs, self.guide_recovery_window + 10)
        video = videos[hung.video]
        out.seconds = video.updated_at - start if video.final and video.updated_at else None
        out.note(
            f"after an operator's `systemctl kill -s KILL` at {kill - start:.0f} s: "
            + (
                f"failed by the guide's recovery job {secs(out.seconds)} s after the render began "
                f'("{video.error}"), for a manual retry'
                if video.state == "failed"
                else self.describe(c, video, start)
            )
            + f"; the one behind {videos[behind.video].state}"
        )
        out.note(c.held_text([hung]) + " (and hang again)")
        out.tally = c.tally(subs, videos)

    def row_hang_gil(self, c: Column, out: Outcome) -> None:
        since = time.time()
        fault = {"kind": "hang_gil", "at_frame": 5, "seconds": 3600}
        subs = c.submit([spec("r5 hang holding the GIL", 1.0, fault), spec("r5 behind", 1.0)])
        if isinstance(c, RoleColumn):
            self.check_watchdog_reap(c, out, subs, since)
        else:
            self.guide_hang(c, out, subs, since, self.stuck + 2 * self.period)

    # --- 5b: hang releasing the GIL: the hard limit ------------------------------------------

    def row_hang_limit(self, c: Column, out: Outcome) -> None:
        since, pid0, restarts0 = time.time(), c.main_pid(), c.restarts()
        fault = {"kind": "hang", "at_frame": 5, "seconds": 3600}
        subs = c.submit([spec("r5b hang, GIL released", 1.0, fault), spec("r5b behind", 1.0)])
        hung, behind = subs
        if not isinstance(c, RoleColumn):
            self.guide_hang(c, out, subs, since, self.limit + 4)
            return
        start = c.render_start(hung.task, since, 20) or since
        videos = c.wait(subs, self.limit + 40)
        entries = c.journal(since)
        gave_up = first(entries, rf"task {TASK}\[{hung.task}\] exceeded its hard time limit")
        reexec = first(entries, rf"re-executing in place \(task {hung.task} past its hard time limit\)")
        ready = c.ready_after(reexec, 30) if reexec else None
        pid1, restarts1 = c.main_pid(), c.restarts()
        limit_at = start + self.limit
        out.seconds = reexec - limit_at if reexec else None
        out.note(
            f"given up {secs(gave_up and gave_up - limit_at)} s past its {self.limit:g} s limit, "
            f"re-executed {secs(out.seconds)} s past it, consuming {secs(ready and ready - limit_at)} s "
            f"past it: MainPID {pid0} -> {pid1}, NRestarts {restarts0} -> {restarts1}"
        )
        out.expect(reexec, "no re-exec after the hard limit")
        out.expect(
            pid1 == pid0 and restarts1 == restarts0, f"MainPID {pid0} -> {pid1}, NRestarts {restarts0} -> {restarts1}"
        )
        video, before = self.hooked(c, hung)
        videos[hung.video] = video
        record = c.ledger([hung])[hung.task]
        result = c.results([hung])[hung.task]
        out.note(
            f"ledger {record.get('state')}/{record.get('cause')}; video {video.state} by the hook: "
            f'"{video.error[:110]}…"{before}; result backend {result["status"]} {result["exc_type"]}; the '
            f"one behind {videos[behind.video].state}"
        )
        self.check_ledger(
            out, record, state="failed", cause="time-limit", reason=f"hard time limit of {self.limit:g} s"
        )
        out.expect(
            video.state == "failed" and video.error.startswith("time-limit:"),
            "the hook did not mark the video failed (time-limit)",
        )
        self.check_result(out, result, "FAILURE", "TimeLimitExceeded")
        out.expect(videos[behind.video].state == "done", "the video behind it did not render")
        out.tally = c.tally(subs, videos)

    # --- 5c: a frozen worker; 5d: a frozen worker nothing supervises (stuck); 5e: retry ----

    def row_frozen(self, c: Column, out: Outcome) -> None:
        since = time.time()
        slow = {"kind": "slow", "at_frame": 0, "seconds": 0.1}
        [sub] = c.submit([spec("r5c frozen", 2.0, slow)])
        start = c.render_start(sub.task, since, 20) or since
        time.sleep(max(0.0, start + 1.0 - time.time()))
        frozen = time.time()
        # The worker alone (not its ffmpeg): SIGSTOP, as a process stuck in the kernel would be:
        # no exit, no heartbeat, no watchdog ping.
        self.host.sh(f"systemctl kill --kill-whom=main -s STOP {c.unit}")
        if isinstance(c, RoleColumn):
            self.frozen_task = sub
            failed = poll(lambda: c.ledger_state(sub.task) == "failed", 40, 0.5)
            out.seconds = time.time() - frozen if failed else None
            entries = c.journal(frozen)
            timeout = first(entries, r"Watchdog timeout")
            out.note(
                f"frozen 1 s into the render; systemd's watchdog {secs(timeout and timeout - frozen)} s "
                "later (SIGABRT, then the SIGCONT systemd sends with every kill signal: faulthandler's "
                f"traceback); ledger failed {secs(out.seconds)} s after the freeze"
            )
            video, before = self.hooked(c, sub, 30)
            videos = {sub.video: video}
            record = c.ledger([sub])[sub.task]
            result = c.results([sub])[sub.task]
            out.note(
                f"ledger failed/{record.get('cause')} by the ExecStopPost reap; result backend "
                f"{result['status']} {result['exc_type']}; video {video.state} by the hook: "
                f'"{video.error[:70]}…"{before}'
            )
            out.expect(timeout, "no watchdog timeout")
            self.check_ledger(
                out, record, state="failed", cause="watchdog", reason="stopped answering the systemd watchdog"
            )
            self.check_result(out, result, "FAILURE", "WorkerLostError")
            out.expect(
                video.state == "failed" and video.error.startswith("watchdog:"),
                "the hook did not mark the video failed (watchdog)",
            )
            out.tally = c.tally([sub], videos)
        else:
            hold = self.stuck + 3 * self.period
            time.sleep(hold)
            video = c.videos([sub])[sub.video]
            queued = c.broker()["queued"]
            out.note(
                f"frozen 1 s into the render for {hold:.0f} s: video still {video.state}, its own "
                f"recovery jobs queued behind it ({queued} messages): nothing acts"
            )
            thawed = time.time()
            self.host.sh(f"systemctl kill --kill-whom=main -s CONT {c.unit}")
            videos = c.wait([sub], 30)
            video = videos[sub.video]
            out.seconds = video.updated_at - frozen if video.final and video.updated_at else None
            out.note(
                f"thawed by hand: the render went on, video {video.state} "
                f"{secs(video.updated_at and video.updated_at - thawed)} s later"
            )
            out.tally = c.tally([sub], videos)

    STRAY = "matrix-stray"

    def start_stray(self, c: Column) -> int:
        """A second worker of the column's app on the same host, on a queue of its own, under no
        supervisor: what a worker on a host that vanished looks like to the rest of the fleet."""
        if isinstance(c, RoleColumn):
            command = (
                f"{c.python.rsplit('/', 1)[0]}/celery-stable worker --pool=solo "
                "--concurrency=1 --without-gossip --without-mingle --without-heartbeat "
                f"--hostname=stray@%h --queues={self.STRAY} --loglevel=INFO"
            )
            workdir = "/var/lib/celery-stable"
        else:
            command = (
                f"{c.python.rsplit('/', 1)[0]}/celery -A core.celery_app worker --pool=solo --concurrency=1 "
                f"--max-tasks-per-child=10 --max-memory-per-child=256000 --time-limit={self.limit:g} "
                "--without-gossip --without-mingle --without-heartbeat "
                f"--hostname=stray@%h --queues={self.STRAY}"
            )
            workdir = c.app_path
        name = f"/tmp/matrix-stray-{c.db}"
        script = (
            "#!/bin/bash\n"
            f"echo $$ > {name}.pid\n"
            f"exec setpriv --reuid=celery --regid=celery --init-groups -- bash -c "
            f"{shlex.quote(f'set -a; . {c.env_file}; set +a; cd {workdir}; exec {command}')} > {name}.log 2>&1\n"
        )
        self.host.sh(f"cat > {name}.sh && chmod +x {name}.sh && setsid -f {name}.sh", stdin=script)
        pid = poll(lambda: self.host.out(f"cat {name}.pid 2>/dev/null", check=False), 10, 0.2)
        return int(pid or 0)

    def row_stuck(self, c: Column, out: Outcome) -> None:
        pid = self.start_stray(c)
        try:
            slow = {"kind": "slow", "at_frame": 0, "seconds": 0.1}
            [sub] = c.submit([spec("r5d stray frozen", 2.0, slow)], queue=self.STRAY)
            name = f"/tmp/matrix-stray-{c.db}.log"
            started = poll(
                lambda: f"guide render start {sub.task}" in self.host.out(f"cat {name}", check=False), 40, 0.5
            )
            out.expect(started, "the stray worker never started the video")
            time.sleep(1.0)
            frozen = time.time()
            self.host.sh(f"kill -STOP {pid}")
            out.note(
                f"a second worker (pid {pid}, queue {self.STRAY}, no supervisor: a host that vanished) "
                "frozen 1 s into the render"
            )
            if isinstance(c, RoleColumn):
                failed = poll(lambda: c.ledger_state(sub.task) == "failed", self.stuck + 3 * self.period + 10, 0.5)
                out.seconds = time.time() - frozen if failed else None
                line = next(
                    (m for _, m in self.host.journal(frozen, "-u", "celery-recovery.service") if sub.task in m),
                    "",
                )
                video, before = self.hooked(c, sub)
                videos = {sub.video: video}
                record = c.ledger([sub])[sub.task]
                result = c.results([sub])[sub.task]
                out.note(
                    f'given up {secs(out.seconds)} s after the freeze by celery-recovery.service: "{line[:150]}…"; '
                    f"result backend {result['status']} {result['exc_type']}; video {video.state} by the hook "
                    f'(run by the unit\'s worker): "{video.error[:40]}…"{before}'
                )
                out.expect(failed and line, "the runtime's recovery did not give the frozen task up")
                self.check_ledger(out, record, state="failed", cause="stuck", reason="stuck: no heartbeat")
                self.check_result(out, result, "FAILURE", "WorkerLostError")
                out.expect(
                    video.state == "failed" and video.error.startswith("stuck:"),
                    "the hook did not mark the video failed (stuck)",
                )
            else:
                videos = c.wait([sub], self.guide_recovery_window + 10)
                video = videos[sub.video]
                out.seconds = video.updated_at - frozen if video.final and video.updated_at else None
                out.note(
                    f"failed by the guide's recovery job (on its main worker) {secs(out.seconds)} s after the "
                    f'freeze ("{video.error}"), for a manual retry'
                    if video.state == "failed"
                    else self.describe(c, video, frozen)
                )
            out.tally = c.tally([sub], videos)
        finally:
            self.host.sh(f"kill -KILL {pid}", check=False)

    def row_retry(self, c: Column, out: Outcome) -> None:
        assert isinstance(c, RoleColumn)
        sub = getattr(self, "frozen_task", None)
        if sub is None:
            out.problems.append("row 5c did not run: nothing to retry")
            return
        before = json.loads(c.payload(sub.task) or "[{}]")[0]
        attempts = int(c.status(sub.task).get("attempts") or 0)
        start = time.time()
        proc = self.host.sh(f"celery-stable retry {sub.task}", check=False)
        out.note(f'`celery-stable retry <id>`: exit {proc.returncode}, "{proc.stdout.strip().split(": ", 1)[-1]}"')
        out.expect(proc.returncode == 0, f"retry exited {proc.returncode}: {proc.stderr.strip()}")
        # The message the new attempt runs, as the ledger recorded it at admission (kept while
        # the task runs, dropped once it is done).
        running: dict[str, dict] = {}

        def admitted() -> bool:
            record = c.status(sub.task)
            if record.get("state") == "running" and int(record.get("attempts") or 0) > attempts:
                running["payload"] = json.loads(c.payload(sub.task) or "[{}]")[0]
                return True
            return record.get("state") == "done"

        poll(admitted, 30, 0.3)
        after = running.get("payload", {})
        same = bool(before.get("body")) and before.get("body") == after.get("body")
        videos = c.wait([sub], 40, until=lambda v: v[sub.video].state == "done")
        video = videos[sub.video]
        record = c.ledger([sub])[sub.task]
        result = c.results([sub])[sub.task]
        frames = self.host.out(
            "ffprobe -v error -count_frames -select_streams v:0 -show_entries stream=nb_read_frames "
            f"-of csv=p=0 /var/lib/celery-stable/guide-videos/{sub.video}.mp4",
            check=False,
        )
        out.seconds = video.updated_at - start if video.state == "done" and video.updated_at else None
        out.note(
            f"attempt {record.get('attempts')} ran the first attempt's message (same body, same task id: "
            f"{'yes' if same else 'NO'}); video {video.state} {secs(out.seconds)} s after the retry "
            f"({frames or '?'} frames); ledger {record.get('state')}; result backend {result['status']}"
        )
        out.expect(same, "the retried message is not the original one (or was never seen running)")
        self.check_ledger(out, record, state="done")
        self.check_result(out, result, "SUCCESS")
        out.expect(video.state == "done" and frames == "50", f"video {video.state}, {frames!r} frames")
        out.tally = c.tally([sub], videos)

    # --- 6: poison video -------------------------------------------------------------------

    def row_poison(self, c: Column, out: Outcome) -> None:
        since = time.time()
        fault = {"kind": "segfault", "at_frame": 5}
        subs = c.submit([spec("r6 poison", 1.0, fault), spec("r6 behind 1", 1.0), spec("r6 behind 2", 1.0)])
        poison = subs[0]
        window = 60 if c.role else self.guide_recovery_window + 15
        videos = c.wait(subs, window)
        entries = c.journal(since)
        crashes = count(entries, r"Main process exited, code=(killed|dumped)")
        video = videos[poison.video]
        behind = sum(videos[s.video].state == "done" for s in subs[1:])
        crash = first(entries, r"Main process exited")
        origin = since if c.role else crash
        out.seconds = video.updated_at - origin if video.final and video.updated_at and origin else None
        if isinstance(c, RoleColumn):
            video, before = self.hooked(c, poison)
            videos[poison.video] = video
            out.seconds = video.updated_at - since if video.final and video.updated_at else None
            record = c.ledger([poison])[poison.task]
            result = c.results([poison])[poison.task]
            out.note(
                f"{crashes} crashes; ledger {record.get('state')}/{record.get('cause')}, crashes "
                f'{record.get("crashes")}: "{(record.get("reason") or "")[:70]}…"; video failed by the '
                f'hook {secs(out.seconds)} s after submit ("{video.error[:40]}…"){before}; result backend '
                f"{result['status']} {result['exc_type']}; {behind}/2 behind it done"
            )
            out.expect(crashes == 2, f"{crashes} crashes, not K=2")
            self.check_ledger(out, record, state="failed", cause="crash", reason="crashed the worker 2 times")
            out.expect(
                video.state == "failed" and video.error.startswith("crash:"),
                "the hook did not mark the video failed (crash)",
            )
            self.check_result(out, result, "FAILURE", "WorkerLostError")
            out.expect(behind == 2, "the videos behind the poison did not render")
        else:
            out.note(
                f"{crashes} crash (the poison's message is not redelivered before the visibility timeout); "
                + (
                    f'failed by the guide\'s recovery job {secs(out.seconds)} s after the crash ("{video.error}")'
                    if video.state == "failed"
                    else self.describe(c, video, since)
                )
                + f"; {behind}/2 behind it done"
            )
            out.note(c.held_text([poison]) + " (and crash the worker again)")
        out.tally = c.tally(subs, videos)

    # --- 7: Redis restarted while idle, then mid-render -------------------------------------

    def row_redis(self, c: Column, out: Outcome, idle: threading.Barrier, busy: threading.Barrier) -> None:
        since, pid0, restarts0 = time.time(), c.main_pid(), c.restarts()
        idle.wait(timeout=60)
        subs = c.submit([spec("r7 after a restart while idle", 1.0)])
        slow = {"kind": "slow", "at_frame": 0, "seconds": 0.1}
        subs += c.submit([spec("r7 rendering through a restart", 2.0, slow), spec("r7 behind", 1.0)])
        c.wait(subs, 30, until=lambda v: v[subs[1].video].state == "processing")
        busy.wait(timeout=60)
        videos = c.wait(subs, 60)
        entries = c.journal(since)
        pid1, restarts1 = c.main_pid(), c.restarts()
        runs = sorted(count(entries, rf"guide render start {s.task}") for s in subs)
        out.note(
            "Redis restarted twice (idle, then mid-render); MainPID "
            f"{'unchanged' if pid1 == pid0 else f'{pid0} -> {pid1}'}, "
            f"NRestarts {restarts0} -> {restarts1}; renders per video {runs}; "
            f"{len(c.held(subs))} of their messages left unacked"
        )
        out.seconds = 0.0 if pid1 == pid0 and restarts1 == restarts0 else None
        out.tally = c.tally(subs, videos)
        if c.role:
            out.expect(pid1 == pid0 and restarts1 == restarts0, "worker restarted")
            out.expect(runs == [1, 1, 1], f"renders per video {runs}")
            out.expect(out.tally.done == 3, f"{out.tally.done}/3 done")

    def redis_restart(self) -> None:
        log("restarting redis-server")
        self.host.sh("systemctl restart redis-server")

    # --- 8: host reboot --------------------------------------------------------------------

    def row_reboot(self, row: Row) -> None:
        if self.args.only and row.number not in self.args.only:
            return
        log(f"row {row.number}: {row.fault}")
        st, gd = Outcome(self.role.name, True), Outcome(self.guide.name, False)
        self.ensure_up(self.role, st)
        self.ensure_up(self.guide, gd)
        slow = {"kind": "slow", "at_frame": 0, "seconds": 0.08}
        subs = {}
        for c in (self.role, self.guide):
            subs[c.name] = c.submit([spec("r8 rendering at reboot", 2.0, slow), spec("r8 queued at reboot", 1.0)])
        for c in (self.role, self.guide):
            rendering = subs[c.name][0]
            c.wait([rendering], 30, until=lambda v, i=rendering.video: v[i].state == "processing")
        start = time.time()
        proc = subprocess.run(
            ["docker", "restart", "-t", "120", self.host.container], capture_output=True, text=True, check=False
        )
        st.expect(proc.returncode == 0, f"docker restart failed: {proc.stderr.strip()}")
        stopped = time.time()
        self.host.wait_booted()
        ready = self.role.ready_after(stopped, 90)
        units = {}
        # The instance is started by celery-worker.service, which is the enabled one (an
        # instance of a template with no [Install] is "static").
        for unit in ("celery-worker.service", ROLE_UNIT, "celery-beat.service", "celery-recovery.timer",
                     "redis-server.service"):  # fmt: skip
            p = self.host.show(unit, "ActiveState", "UnitFileState")
            units[unit] = p
            st.expect(
                p["ActiveState"] == "active" and p["UnitFileState"] == ("static" if unit == ROLE_UNIT else "enabled"),
                f"{unit} {p['ActiveState']}/{p['UnitFileState']}",
            )
        st.note(
            "after boot: "
            + ", ".join(f"{u.split('.')[0]} {p['ActiveState']}+{p['UnitFileState']}" for u, p in units.items())
        )

        # Empty while the run it triggered is still going (a recovery run takes seconds on a
        # loaded host: seen '' there): read it once systemd has set the next one again.
        def next_elapse() -> str | None:
            value = self.host.prop("celery-recovery.timer", "NextElapseUSecRealtime")
            return value if parse_systemd_time(value) else None

        nxt = poll(next_elapse, 3 * self.period, interval=0.2) or ""
        when = parse_systemd_time(nxt)
        on_cadence = (
            when is not None
            and when.second % int(self.period) == 0
            and -1 <= when.timestamp() - time.time() <= self.period + 1
        )
        st.expect(on_cadence, f"recovery timer's next elapse {nxt!r} off its {self.period:g} s cadence")
        st.note(f"recovery timer next at {when.strftime('%H:%M:%S') if when else '?'} (every {self.period:g} s)")
        videos = self.role.wait(subs[self.role.name], 60)
        rendering, queued = (videos[s.video] for s in subs[self.role.name])
        st.note(
            f"video rendering at the reboot: {rendering.state}"
            + (
                " (finished by the warm stop before the shutdown)"
                if rendering.updated_at and rendering.updated_at < stopped
                else " after boot"
            )
            + f"; the queued one {queued.state} after boot"
        )
        st.expect(all(v.state == "done" for v in videos.values()), "not every video done after the reboot")
        st.tally = self.role.tally(subs[self.role.name], videos)
        st.seconds = ready - start if ready else None
        st.note(
            f"consuming {secs(st.seconds)} s after `docker restart` (shutdown incl. warm stop {stopped - start:.1f} s)"
        )
        time.sleep(3)
        gstate = {u: self.host.show(u, "ActiveState", "UnitFileState") for u in (GUIDE_UNIT, GUIDE_BEAT)}
        gvideos = self.guide.videos(subs[self.guide.name])
        grendering, gqueued = (gvideos[s.video] for s in subs[self.guide.name])
        gd.note(
            "after boot: "
            + ", ".join(f"{u.split('.')[0]} {p['ActiveState']}+{p['UnitFileState']}" for u, p in gstate.items())
            + " (started by an interactive script, which nothing runs at boot)"
        )
        gd.note(
            f"video rendering at the reboot: {grendering.state} {grendering.error}".rstrip()
            + f"; the queued one {gqueued.state}"
        )
        started = time.time()
        self.host.sh(f"systemctl start {GUIDE_UNIT} {GUIDE_BEAT}")
        gvideos = self.guide.wait(subs[self.guide.name], self.guide_recovery_window + 10)
        grendering, gqueued = (gvideos[s.video] for s in subs[self.guide.name])
        gd.note(
            f"once an operator starts it ({started - start:.0f} s after the reboot here): rendering one "
            f"{grendering.state} {grendering.error}".rstrip()
            + f", queued one {gqueued.state}"
        )
        finals = [v.updated_at for v in gvideos.values() if v.final and v.updated_at]
        gd.seconds = max(finals) - start if finals and len(finals) == len(gvideos) else None
        gd.tally = self.guide.tally(subs[self.guide.name], gvideos)
        row.outcomes = [st, gd]
        for out in row.outcomes:
            log(f"row {row.number} {out.setup}: {'; '.join(out.happened)} | {out.tally} | {out.verdict}")
        self.rows.append(row)

    # --- 9: bad job spec; bad role variable ------------------------------------------------

    def row_bad_input(self, c: Column, out: Outcome) -> None:
        pid0 = c.main_pid()
        bad = spec("r9 bad", 1.0)
        bad["width"] = "wide"
        [sub] = c.submit([bad])
        videos = c.wait([sub], 30)
        video = videos[sub.video]
        out.note(
            f'bad spec (width "wide") accepted by the app (it validates nothing), then {video.state}: {video.error}'
        )
        if isinstance(c, RoleColumn):
            record = c.ledger([sub])[sub.task]
            out.note(
                f"ledger {record.get('state')}/{record.get('cause')} (the task's own error: not retried, not a crash)"
            )
            self.check_ledger(out, record, state="failed", cause="error", reason="TypeError")
            var = "celery_stable_stuck_after_sec=1"
            run, problems = refused_run(
                [self.host],
                self.playbook_argv(["-e", var]),
                "Refuse values the runtime would refuse",
                r"celery_stable_stuck_after_sec \(CELERY_STABLE_STUCK_AFTER_SEC\)",
                cwd=str(PROJECT),
                env=self.playbook_env(),
            )
            message = run.message.split("nothing was changed on any host: ")[-1]
            out.note(
                f"`-e {var}`: ansible-playbook exit {run.rc}, refused at '{run.task}', changed="
                f'{run.total_changed}, host fingerprint unchanged: "{message[:230]}"'
            )
            out.expect(not problems, "bad role variable not refused cleanly: " + "; ".join(problems))
        pid1 = c.main_pid()
        out.note(f"worker untouched (MainPID {'unchanged' if pid1 == pid0 else 'CHANGED'})")
        out.expect(pid1 == pid0, "worker restarted")
        out.tally = c.tally([sub], videos)

    def playbook_argv(self, extra: list[str]) -> list[str]:
        inventory = self.args.inventory or self.temp_inventory()
        return [self.args.ansible_playbook, "-i", inventory, str(PROJECT / "playbooks/site.yml"), *extra]

    def playbook_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("ANSIBLE_ROLES_PATH", str(PROJECT / "roles"))
        env.setdefault("MOLECULE_PROJECT_DIRECTORY", str(PROJECT))
        return env

    def temp_inventory(self) -> str:
        """Outside Molecule: an inventory of this container with the scenario's variables."""
        tmp = Path(tempfile.mkdtemp(prefix="fault-matrix-inv."))
        host = {self.host.container: {"ansible_connection": "community.docker.docker"}}
        (tmp / "hosts.yml").write_text(
            json.dumps({"all": {"children": {"celery_workers": {"hosts": host}, "celery_broker": {"hosts": host}}}})
        )
        (tmp / "group_vars").symlink_to(PROJECT / "molecule/resources/group_vars")
        (tmp / "host_vars").symlink_to(PROJECT / "molecule/faults/host_vars")
        return str(tmp / "hosts.yml")

    # --- 5x: row 5's check, on a unit without ExecStopPost: it must fail ---------------------

    def row_no_reap(self, c: Column, out: Outcome) -> None:
        assert isinstance(c, RoleColumn)
        self.host.sh(
            f"mkdir -p {NO_REAP_DROP_IN.rsplit('/', 1)[0]} && "
            f"printf '[Service]\\nExecStopPost=\\n' > {NO_REAP_DROP_IN} && systemctl daemon-reload && "
            f"systemctl restart {c.unit}"
        )
        try:
            stop_post = self.host.prop(c.unit, "ExecStopPost")
            out.note(f"drop-in `ExecStopPost=` (empty): ExecStopPost now {stop_post or 'empty'}")
            c.ready_after(time.time() - 5, 30)
            since = time.time()
            fault = {"kind": "hang_gil", "at_frame": 5, "seconds": 3600}
            subs = c.submit([spec("r5x hang, no ExecStopPost", 1.0, fault), spec("r5x behind", 1.0)])
            probe = Outcome(c.name, True)
            self.check_watchdog_reap(c, probe, subs, since)
            out.note(
                "row 5's check, run here: "
                + ("PASSED (it cannot tell)" if probe.ok else "failed: " + "; ".join(probe.problems))
            )
            out.note("what it saw: " + "; ".join(probe.happened[-1:]))
            out.expect(not probe.ok, "row 5's check passed without ExecStopPost: it proves nothing")
            out.tally = probe.tally
            out.seconds = probe.seconds
        finally:
            self.host.sh(f"rm -f {NO_REAP_DROP_IN} && systemctl daemon-reload && systemctl restart {c.unit}")
            back = self.host.prop(c.unit, "ExecStopPost")
            out.expect("celery-stable" in back and "reap" in back, f"ExecStopPost not restored: {back}")
            out.note("drop-in removed, `celery-stable reap` back in ExecStopPost")

    # --- 10a: ffmpeg not executable ------------------------------------------------------------

    def row_ffmpeg_missing(self, c: Column, out: Outcome) -> None:
        """The app's ffmpeg unusable: check-config and the role's preflight refuse, naming it and
        the fix; a worker (re)started without it exits as a configuration error (78, not
        restarted) and never consumes; put back, the waiting video is done."""
        assert isinstance(c, RoleColumn)
        ffmpeg = self.host.out('readlink -f "$(command -v ffmpeg)"')
        self.host.sh(f"chmod a-x {shlex.quote(ffmpeg)}")
        sub: Sub | None = None
        try:
            check = self.host.sh("celery-stable check-config", check=False)
            said = " ".join((check.stdout + check.stderr).split())
            out.note(f'`chmod a-x {ffmpeg}`; `celery-stable check-config`: exit {check.returncode}, "{said[:160]}"')
            out.expect(check.returncode != 0 and "ffmpeg" in said, "check-config did not refuse")
            since, restarts0 = time.time(), c.restarts()
            self.host.sh(f"systemctl restart --no-block {c.unit}")
            failed = poll(lambda: self.host.prop(c.unit, "ActiveState") == "failed", 60, 0.5)
            props = self.host.show(c.unit, "Result", "ExecMainStatus", "NRestarts")
            refusal = [m for _, m in c.journal(since) if "ffmpeg" in m]
            out.note(
                f"worker restarted without it: unit {'failed' if failed else 'NOT failed'}, exit status "
                f"{props.get('ExecMainStatus')} ({props.get('Result')}), NRestarts {restarts0} -> "
                f'{props.get("NRestarts")}; its journal: "{(refusal[-1] if refusal else "-")[:160]}"'
            )
            out.expect(failed and props.get("ExecMainStatus") == "78", "the worker did not refuse to start")
            out.expect(int(props.get("NRestarts") or 0) == restarts0, "systemd restarted a refusing worker")
            [sub] = c.submit([spec("r10a waits for ffmpeg", 1.0)])
            time.sleep(3)
            waiting = c.videos([sub])[sub.video]
            out.note(
                f"a video submitted meanwhile: {waiting.state}, not in the ledger: {not c.ledger([sub])[sub.task]}"
            )
            out.expect(waiting.state == "pending" and not c.ledger([sub])[sub.task], "a worker took the video")
            run, problems = refused_run(
                [self.host],
                self.playbook_argv([]),
                "Refuse a required command the host cannot run",
                r"ffmpeg",
                cwd=str(PROJECT),
                env=self.playbook_env(),
            )
            out.note(
                f"site.yml: exit {run.rc}, refused at '{run.task}', changed={run.total_changed}: "
                f'"{run.message.split(": ", 1)[-1][:200]}"'
            )
            out.expect(not problems, "the deploy was not refused cleanly: " + "; ".join(problems))
        finally:
            self.host.sh(f"chmod a+x {shlex.quote(ffmpeg)}")
            self.host.sh(f"systemctl reset-failed {c.unit}; systemctl start {c.unit}")
        back = time.time()
        videos = c.wait([sub], 60) if sub else {}
        if sub:
            video = videos[sub.video]
            out.seconds = video.updated_at - back if video.state == "done" and video.updated_at else None
            out.note(f"ffmpeg executable again, `systemctl start`: the video {video.state} {secs(out.seconds)} s later")
            out.tally = c.tally([sub], videos)
            out.expect(video.state == "done", f"the waiting video {video.state}")

    # --- 10b: a stop in the re-exec window -------------------------------------------------------

    def row_stop_in_reexec_window(self, c: Column, out: Outcome) -> None:
        """SIGTERM after the worker checked that no stop was asked and before its execve (a
        test-only drop-in holds it 3 s there): it stops; the new image never runs, and a video
        sent meanwhile waits for the next start."""
        assert isinstance(c, RoleColumn)
        self.host.sh(
            f"mkdir -p {WINDOW_DROP_IN.rsplit('/', 1)[0]} && "
            f"printf '[Service]\\nEnvironment=CELERY_STABLE_TEST_REEXEC_PAUSE_SEC=3\\n' > {WINDOW_DROP_IN} && "
            f"systemctl daemon-reload && systemctl restart {c.unit}"
        )
        sub: Sub | None = None
        try:
            since = time.time()
            c.ready_after(since - 5, 30)
            pid0 = c.main_pid()
            self.host.sh(f"systemctl reload {c.unit}")
            window = poll(lambda: first(c.journal(since), r"in the re-exec window"), 30, 0.2)
            out.expect(window, "the worker never reached its re-exec window")
            [sub] = c.submit([spec("r10b sent during the window", 1.0)])
            self.host.sh(f"systemctl stop --no-block {c.unit}")
            stopped = poll(lambda: self.host.prop(c.unit, "ActiveState") in ("inactive", "failed"), 60, 0.2)
            entries = c.journal(since)
            props = self.host.show(c.unit, "ActiveState", "Result")
            said = first(entries, r"a stop came before the re-exec")
            again = first(entries, r"ready: consuming", window or since)
            waiting = c.videos([sub])[sub.video]
            out.seconds = stopped and said and window and said - window
            out.note(
                f"`systemctl reload` then, in the window, `systemctl stop`: {props.get('ActiveState')} "
                f'({props.get("Result")}), pid {pid0}; "a stop came before the re-exec" '
                f"{'logged' if said else 'NOT logged'}; the new image {'RAN' if again else 'never ran'}; the video "
                f"sent meanwhile {waiting.state}"
            )
            out.expect(stopped and props.get("Result") == "success", "the worker did not stop cleanly")
            out.expect(said and not again, "the re-exec went ahead after the stop")
            out.expect(waiting.state == "pending", f"the video sent during the window was {waiting.state}")
        finally:
            self.host.sh(f"rm -f {WINDOW_DROP_IN} && systemctl daemon-reload && systemctl start {c.unit}")
        videos = c.wait([sub], 60) if sub else {}
        if sub:
            out.note(f"drop-in removed, `systemctl start`: the video {videos[sub.video].state}")
            out.tally = c.tally([sub], videos)
            out.expect(videos[sub.video].state == "done", "the waiting video was not done")

    # --- 10c: Redis frozen (a blackhole: no answer, no refusal) ----------------------------------

    def row_redis_frozen(self, c: Column, out: Outcome) -> None:
        """Redis stops answering for 4 watchdog periods mid-render (SIGSTOP: connections stay
        open, nothing comes back, as with dropped packets): no worker is killed for it."""
        assert isinstance(c, RoleColumn)
        since, pid0, restarts0 = time.time(), c.main_pid(), c.restarts()
        slow = {"kind": "slow", "at_frame": 0, "seconds": 0.2}
        subs = c.submit([spec("r10c rendering through a frozen Redis", 2.0, slow), spec("r10c behind", 1.0)])
        c.wait(subs, 30, until=lambda v: v[subs[0].video].state == "processing")
        watchdog = self.watchdog_sec(c)
        frozen_for = 4 * watchdog
        self.host.sh("kill -STOP $(systemctl show -P MainPID redis-server)")
        try:
            time.sleep(frozen_for)
        finally:
            self.host.sh("kill -CONT $(systemctl show -P MainPID redis-server)")
        thawed = time.time()
        videos = c.wait(subs, 90)
        entries = c.journal(since)
        pid1, restarts1 = c.main_pid(), c.restarts()
        killed = first(entries, r"Watchdog timeout|Main process exited")
        records = c.ledger(subs)
        out.seconds = (videos[subs[0].video].updated_at or thawed) - thawed if videos[subs[0].video].final else None
        out.note(
            f"redis-server SIGSTOPped {frozen_for:g} s ({frozen_for / watchdog:g} x WatchdogSec) mid-render; "
            f"MainPID {'unchanged' if pid1 == pid0 else f'{pid0} -> {pid1}'}, NRestarts {restarts0} -> {restarts1}, "
            f"{'a watchdog kill' if killed else 'no watchdog kill'}; videos "
            + ", ".join(f"{videos[s.video].state} (attempt {records[s.task].get('attempts')})" for s in subs)
            + f", the first {secs(out.seconds)} s after the thaw"
        )
        out.tally = c.tally(subs, videos)
        given_up = [s for s in subs if records[s.task].get("state") == "failed"]
        for sub in given_up:
            record = records[sub.task]
            out.note(f'failed {record.get("cause")}, with its reason: "{(record.get("reason") or "")[:120]}"')
        out.expect(not killed and pid1 == pid0 and restarts1 == restarts0, "the worker was killed for Redis")
        # Done, or resolved with a reason (the terms): the outage is twice the matrix's
        # 10 s stuck threshold (the guide's 300 s divided by 30), and the app's own Redis calls
        # may time out during it.
        out.expect(out.tally.lost == 0 and out.tally.done + out.tally.failed == len(subs), "a video was lost")
        out.expect(all(records[s.task].get("reason") for s in given_up), "a video failed with no reason")
        out.expect(all(records[s.task].get("attempts") == 1 for s in subs), "a video ran twice")

    def watchdog_sec(self, c: Column) -> float:
        usec = self.host.out(f"systemctl show -P WatchdogUSec {c.unit} --timestamp=unix")
        spans = self.host.out(f"systemd-analyze timespan {shlex.quote(usec)} | sed -n 's/.*μs: //p'")
        return int(spans) / 1e6

    # --- 10d: the worker's clock 10 minutes off ---------------------------------------------------

    def row_clock_skew(self, c: Column, out: Outcome) -> None:
        """The worker's clock 10 minutes behind, then 10 minutes ahead; systemd, Redis and the
        recovery timer keep the true time. Every age the runtime judges is read on Redis's
        clock, so no healthy render is failed as stuck. The skew is Python's wall clock in the
        worker (time.time and time.time_ns, through a sitecustomize in a test-only drop-in):
        libfaketime, the usual tool, hangs Python's timed waits (threading.Event.wait) here."""
        assert isinstance(c, RoleColumn)
        self.host.sh(f"mkdir -p {SKEW_SITE}", stdin=None)
        self.host.sh(f"cat > {SKEW_SITE}/sitecustomize.py", stdin=SKEW_SITECUSTOMIZE)
        subs: list[Sub] = []
        try:
            for skew in (-600, 600):
                self.host.sh(
                    f"mkdir -p {SKEW_DROP_IN.rsplit('/', 1)[0]} && printf '%s\\n' '[Service]' "
                    f"'Environment=PYTHONPATH={SKEW_SITE} MATRIX_CLOCK_OFFSET_SEC={skew}' > {SKEW_DROP_IN} && "
                    f"systemctl daemon-reload && systemctl restart {c.unit}"
                )
                since = time.time()
                # A render longer than the stuck threshold, reporting progress all along.
                slow = {"kind": "slow", "at_frame": 0, "seconds": (self.stuck * 1.5) / 25}
                [sub] = c.submit([spec(f"r10d clock {skew:+d} s", 1.0, slow)])
                subs.append(sub)
                videos = c.wait([sub], self.stuck * 4 + 30)
                record = c.ledger([sub])[sub.task]
                video = videos[sub.video]
                seen = self.logged_skew(c, since)
                seen_text = "not seen" if seen is None else f"{seen:+.0f} s"
                out.note(
                    f"worker clock {skew:+d} s (its log lines' own time vs the journal's: "
                    f"{seen_text}): a {self.stuck * 1.5:g}-s render "
                    f"(stuck after {self.stuck:g} s) {video.state}, ledger {record.get('state')}/"
                    f"{record.get('cause') or '-'}, attempt {record.get('attempts')}"
                    + (f' ("{(record.get("reason") or video.error)[:100]}")' if video.state != "done" else "")
                )
                out.expect(seen is not None and abs(seen - skew) < 5, f"the worker's clock was not {skew:+d} s off")
                out.expect(video.state == "done" and record.get("attempts") == 1, f"clock {skew:+d} s: {video.state}")
        finally:
            self.host.sh(f"rm -f {SKEW_DROP_IN} && systemctl daemon-reload && systemctl restart {c.unit}")
        out.tally = c.tally(subs, c.videos(subs))

    def logged_skew(self, c: Column, since: float) -> float | None:
        """The worker's wall clock minus the true one: Celery's log lines carry the time the
        worker read (logging's time.time), the journal the time it received them."""
        for entry in self.host.journal_records(since, "-u", c.unit):
            match = re.match(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}): ", entry["MESSAGE"])
            if match:
                stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
                return stamp.timestamp() + int(match.group(2)) / 1000 - float(entry["t"])
        return None

    # --- 10e: the output directory full during a render ------------------------------------------

    def row_disk_full(self, c: Column, out: Outcome) -> None:
        """The app's output directory full (a 1 MiB filesystem on it, filled) when a render
        runs: the task fails with a reason naming the disk, the worker lives on, and once there
        is room again the next video is done. Filled before the render, not in its middle: the
        guide's ffmpeg buffers a small video's output until it closes the file, and on a disk
        that fills meanwhile it prints "Error closing file ... No space left on device" and still
        exits 0 (ffmpeg 5.1, measured here), so the app records a truncated video as done; no
        runtime can call that a failure."""
        assert isinstance(c, RoleColumn)
        outdir = self.host.out(f"set -a; . {ROLE_ENV}; echo $GUIDE_OUTPUT_DIR")
        mount = f"mount -t tmpfs -o size=1m,mode=0750,uid=$(id -u celery),gid=$(id -g celery) tmpfs {outdir}"
        # The unit's sandbox is its own mount namespace, set up at start: restarted on it.
        self.host.sh(f"{mount} && systemctl restart {c.unit}")
        subs: list[Sub] = []
        try:
            pid0, restarts0 = c.main_pid(), c.restarts()
            seen = self.host.out(f"grep -c ' {outdir} .* - tmpfs ' /proc/{pid0}/mountinfo", check=False)
            out.expect(seen.isdigit() and int(seen) > 0, f"the worker does not see the small filesystem ({seen!r})")
            self.host.sh(f"dd if=/dev/zero of={outdir}/filler bs=4k 2>/dev/null; sync", check=False)
            filled = time.time()
            [full] = c.submit([spec("r10e into a full disk", 2.0)])
            subs.append(full)
            videos = c.wait([full], 60)
            record = c.ledger([full])[full.task]
            out.seconds = (videos[full.video].updated_at or filled) - filled if videos[full.video].final else None
            out.note(
                f"a 1 MiB filesystem on {outdir}, full: a render there {videos[full.video].state} "
                f'{secs(out.seconds)} s later (the app: "{videos[full.video].error[:60]}"); ledger '
                f'{record.get("state")}/{record.get("cause")}: "{(record.get("reason") or "")[:140]}"'
            )
            self.check_ledger(out, record, state="failed", cause="error", reason=f"{outdir} is full (")
            self.host.sh(f"rm -f {outdir}/filler")
            [after] = c.submit([spec("r10e with room again", 1.0)])
            subs.append(after)
            videos = c.wait(subs, 60)
            pid1, restarts1 = c.main_pid(), c.restarts()
            out.note(
                f"filler removed (room again): the next video {videos[after.video].state}; MainPID "
                f"{'unchanged' if pid1 == pid0 else f'{pid0} -> {pid1}'}, NRestarts {restarts0} -> {restarts1}"
            )
            out.tally = c.tally(subs, videos)
            out.expect(pid1 == pid0 and restarts1 == restarts0, "the worker was harmed")
            out.expect(videos[after.video].state == "done", "the next video was not done")
        finally:
            self.host.sh(f"umount {outdir}; systemctl restart {c.unit}", check=False)

    # --- the whole run -----------------------------------------------------------------------

    def run(self) -> int:
        started = time.time()
        for unit in (ROLE_UNIT, GUIDE_UNIT):
            if self.host.prop(unit, "ActiveState") != "active":
                raise HostError(f"{unit} is not active before the matrix")
        self.notes.append(
            f"Clocks (both columns, host_vars): hard limit {self.limit:g} s, the guide's recovery job every "
            f"{self.period:g} s for videos stuck over {self.stuck:g} s (the role: celery-recovery.timer "
            f"on the same period, stuck after {self.stuck:g} s); the guide's 900 / 180 / 300 s divided by 30."
        )
        R = Row
        self.run_row(
            R(
                "0",
                "a plain video (2 s, slowed)",
                "done on attempt 1; StatusText names the task and the recycle count, nothing else",
                "submit to done",
            ),
            self.row_plain,
        )
        self.run_row(
            R(
                "1",
                "SIGSEGV mid-render (once)",
                "faulthandler traceback; restart <= 3 s; requeued by the ExecStopPost reap; done on attempt 2",
                "crash to requeue (guide: to failed)",
            ),
            self.row_segfault,
        )
        self.run_row(
            R(
                "2",
                "11 crashes within the hour",
                "11th start refused; unit failed; OnFailure alert; after reset-failed + start all 11 done",
                "reset-failed to the last video resolved",
            ),
            self.row_crash_loop,
        )
        self.run_row(
            R(
                "3a",
                "10 tasks: recycle by count",
                "recycled in place (same MainPID, NRestarts unchanged); every video done",
                "recycle to consuming again",
            ),
            self.row_recycle_count,
        )
        self.run_row(
            R(
                "3b",
                "slow leak past 256000 KiB RSS",
                "recycled in place after the leaking task; MemoryMax never hit; every video done",
                "recycle to consuming again",
            ),
            self.row_recycle_rss,
        )
        self.run_row(
            R(
                "4",
                "allocation bomb (RLIMIT_AS)",
                "failed, the reason naming RLIMIT_AS; re-exec in place (MainPID, NRestarts unchanged); next video done",
                "render start to failed",
            ),
            self.row_alloc_bomb,
        )
        self.run_row(
            R(
                "5",
                "hang in native code holding the GIL",
                "watchdog kill; ExecStopPost reap fails it, cause watchdog; hook + WorkerLostError; next done",
                "render start to the kill (guide: to failed)",
            ),
            self.row_hang_gil,
        )
        self.run_row(
            R(
                "5b",
                "hang releasing the GIL (sleep)",
                "failed at its hard limit (TimeLimitExceeded), re-exec in place; next video done",
                "limit to the re-exec (guide: start to failed)",
            ),
            self.row_hang_limit,
        )
        self.run_row(
            R(
                "5c",
                "worker frozen mid-render (SIGSTOP)",
                "watchdog kill; the ExecStopPost reap fails it, cause watchdog; hook + WorkerLostError",
                "freeze to failed in the ledger (guide: to done)",
            ),
            self.row_frozen,
        )
        self.run_row(
            R(
                "5d",
                "a worker no supervisor watches freezes",
                "the runtime's recovery gives its task up as stuck; hook + WorkerLostError",
                "freeze to given up (guide: to failed)",
            ),
            self.row_stuck,
        )
        self.run_row(
            R("5e", "`celery-stable retry` of 5c's video", "its original message again; done", "retry to done"),
            self.row_retry,
            guide=False,
        )
        self.run_row(
            R(
                "6",
                "poison video (SIGSEGV every attempt)",
                "failed after K=2 crashes; hook + WorkerLostError; the videos behind done",
                "submit to failed (guide: crash to failed)",
            ),
            self.row_poison,
        )
        idle = threading.Barrier(2, action=self.redis_restart)
        busy = threading.Barrier(2, action=self.redis_restart)
        self.run_row(
            R(
                "7",
                "Redis restarted idle, then mid-render",
                "reconnects by itself; every video once, done",
                "0 = no restart",
            ),
            lambda c, o: self.row_redis(c, o, idle, busy),
        )
        self.row_reboot(
            R(
                "8",
                "host reboot (`docker restart`)",
                "worker, Beat, timer, Redis back and enabled; timer on its cadence; both videos done",
                "reboot to consuming (guide: to the last video resolved)",
            )
        )
        self.run_row(
            R(
                "9",
                "bad job spec; bad role variable",
                "the app's own TypeError, the worker untouched; the variable refused before any change",
                "-",
            ),
            self.row_bad_input,
        )
        self.run_row(
            R(
                "5x",
                "control: row 5 without ExecStopPost",
                "row 5's check FAILS on a unit whose ExecStopPost is cleared",
                "as row 5",
            ),
            self.row_no_reap,
            guide=False,
        )
        self.run_row(
            R(
                "10a",
                "ffmpeg not executable",
                "check-config and the preflight refuse, naming it; the worker exits 78, not restarted, takes nothing; "
                "put back, the video is done",
                "start to the video done",
            ),
            self.row_ffmpeg_missing,
            guide=False,
        )
        self.run_row(
            R(
                "10b",
                "SIGTERM in the re-exec window",
                "the worker stops (success); the new image never runs; the video sent meanwhile is done at next start",
                "window to the stop",
            ),
            self.row_stop_in_reexec_window,
            guide=False,
        )
        self.run_row(
            R(
                "10c",
                "Redis frozen mid-render (no answer)",
                "no watchdog kill, MainPID and NRestarts unchanged; each video once, done or given up with its reason",
                "thaw to the first done",
            ),
            self.row_redis_frozen,
            guide=False,
        )
        self.run_row(
            R(
                "10d",
                "worker clock 10 min behind, then ahead",
                "renders longer than the stuck threshold done on attempt 1 both ways",
                "-",
            ),
            self.row_clock_skew,
            guide=False,
        )
        self.run_row(
            R(
                "10e",
                "output directory full",
                "failed, the reason naming the full disk; the worker unharmed; the next video done with room again",
                "disk full to failed",
            ),
            self.row_disk_full,
            guide=False,
        )
        elapsed = time.time() - started
        table = self.render(elapsed)
        print(table)
        records = self.records()
        for path, text in ((self.args.out, table + "\n"), (self.args.json, json.dumps(records, indent=1) + "\n")):
            if path:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                Path(path).write_text(text)
        print(f"\nTable: {self.args.out}\nJSON (one object per row and column): {self.args.json}")
        failed = [r.number for r in self.rows for o in r.outcomes if o.checked and o.problems]
        return 0 if not failed else 1

    def records(self) -> list[dict]:
        return [
            {
                "row": row.number,
                "fault": row.fault,
                "setup": out.setup,
                "app": APP,
                "accepted": out.tally.accepted,
                "done": out.tally.done,
                "failed": out.tally.failed,
                "lost": out.tally.lost,
                "seconds": None if out.seconds is None else round(out.seconds, 1),
                "seconds_measure": row.seconds,
                "ok": out.ok,
                "what": "; ".join(out.happened),
                "problems": out.problems,
            }
            for row in self.rows
            for out in row.outcomes
        ]

    def render(self, elapsed: float) -> str:
        lines = [
            "| # | fault | setup | what happened | s | accepted / done / failed / lost | check |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for row in self.rows:
            for n, out in enumerate(row.outcomes):
                cells = [
                    row.number if n == 0 else "",
                    row.fault if n == 0 else "",
                    out.setup,
                    "; ".join(out.happened).replace("|", "\\|"),
                    secs(out.seconds) if out.seconds is not None else "-",
                    str(out.tally),
                    out.verdict.replace("|", "\\|"),
                ]
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines.append(
            "Expectations (celery-stable only; the guide's column is measured, not judged) and what s measures:"
        )
        for row in self.rows:
            lines.append(f"  {row.number}: {row.expectation} [s: {row.seconds}]")
        lines.append("")
        lines.extend(self.notes)
        bad = [f"{r.number} ({o.setup})" for r in self.rows for o in r.outcomes if o.checked and o.problems]
        lines.append(
            f"Matrix: {len(self.rows)} rows in {elapsed:.0f} s on {self.host.container}; "
            + ("every celery-stable row met its expectation." if not bad else f"FAILED rows: {', '.join(bad)}")
        )
        return "\n".join(lines)


def parse_systemd_time(text: str) -> datetime | None:
    try:
        return datetime.strptime(text.strip(), "%a %Y-%m-%d %H:%M:%S %Z").replace(tzinfo=UTC)
    except ValueError:
        return None


def main() -> int:
    global _log_file
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--container", default="celery-stable-faults")
    parser.add_argument("--ansible-playbook", default=str(PROJECT / ".venv/bin/ansible-playbook"))
    parser.add_argument("--inventory", default="", help="Molecule's inventory (else one is written)")
    parser.add_argument("--out", default=str(PROJECT / ".cache/fault-matrix.txt"))
    parser.add_argument("--json", default=str(PROJECT / ".cache/fault-matrix.json"))
    parser.add_argument("--log", default=str(PROJECT / ".cache/fault-matrix.log"))
    parser.add_argument("--only", type=lambda v: set(v.split(",")), default=None, help="row numbers, comma-separated")
    args = parser.parse_args()
    Path(args.log).parent.mkdir(parents=True, exist_ok=True)
    _log_file = open(args.log, "w")  # noqa: SIM115
    try:
        return Matrix(Host(args.container), args).run()
    except HostError as exc:
        log(f"matrix aborted: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
