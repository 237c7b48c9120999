#!/usr/bin/env python3
"""The fault matrix: every failure the field guide feared, injected into a role-deployed host.

Drives one systemd container (molecule/faults) from outside with `docker exec` only:
`celery-stable submit/status/list`, `systemctl show/kill/reset-failed`, `journalctl`, and
`redis-cli` for the guide's Celery result backend. Each row injects one fault into the role's
worker (celery-worker.service) and, at the same moment, into the guide's own setup
(guide-worker.service: the guide's command line and settings, tests/faults/guide_app), then
measures what happened. Only the role's rows carry expectations; the guide's rows are measured
and reported as they are.

    python3 tests/faults/matrix.py --container celery-stable-faults [--only 1,3]

Prints ONE table on stdout (progress goes to stderr) and writes it to --out; exits 1 when a row
of celery-stable misses its expectation. Python 3.11, standard library only.
"""

from __future__ import annotations

import argparse
import json
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
WORKER = "celery-worker.service"
GUIDE = "guide-worker.service"
ENV_FILE = "/etc/celery-stable/celery-stable.env"
GUIDE_DIR = "/opt/guide-app"
VENV_PY = "/opt/celery-stable/venv/bin/python"
FAULT_DROP_IN = "/etc/systemd/system/celery-worker.service.d/fault-hooks.conf"
GUIDE_STAGGER_SEC = 3.0
# How long the guide's side of a row is watched when nothing in its setup will act: its lost
# message is shown unacked in Redis, where it stays for the broker's 3600 s visibility timeout.
GUIDE_WINDOW_SEC = 30.0

_log_file = None
_log_lock = threading.Lock()


def log(message: str) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {message}"
    with _log_lock:
        print(line, file=sys.stderr, flush=True)
        if _log_file is not None:
            _log_file.write(line + "\n")
            _log_file.flush()


class HostError(Exception):
    pass


class Host:
    """The container, reached with `docker exec` only."""

    def __init__(self, container: str) -> None:
        self.container = container

    def sh(
        self, script: str, stdin: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        argv = ["docker", "exec", *(["-i"] if stdin is not None else []), self.container]
        argv += ["bash", "-c", script]
        proc = subprocess.run(argv, input=stdin, text=True, capture_output=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise HostError(f"{script!r} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
        return proc

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.sh(f"systemctl show {unit} -p {','.join(props)}").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def prop(self, unit: str, name: str) -> str:
        return self.show(unit, name).get(name, "")

    def journal(self, since: float, *selectors: str) -> list[tuple[float, str]]:
        """(realtime, message) of the journal entries matching any selector, since ``since``."""
        sel = " ".join(shlex.quote(s) for s in selectors)
        out = self.sh(f"journalctl --no-pager -o json --since @{int(since) - 1} {sel}", timeout=60).stdout
        entries = []
        for line in out.splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            stamp = int(entry.get("__REALTIME_TIMESTAMP", "0")) / 1e6
            message = entry.get("MESSAGE", "")
            if isinstance(message, list):  # non-UTF-8 bytes
                message = bytes(message).decode(errors="replace")
            if stamp >= since and message is not None:
                entries.append((stamp, str(message)))
        return entries

    def wait_ready(self, timeout: float = 120) -> None:
        """Wait for systemd in the container to finish booting (after a restart)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.sh("systemctl is-system-running --wait", check=False, timeout=60)
            if proc.stdout.strip() in ("running", "degraded"):
                return
            time.sleep(1)
        raise HostError("systemd did not finish booting")


def first(entries: list[tuple[float, str]], pattern: str, after: float = 0.0) -> float | None:
    regex = re.compile(pattern)
    for stamp, message in entries:
        if stamp >= after and regex.search(message):
            return stamp
    return None


def count(entries: list[tuple[float, str]], pattern: str) -> int:
    regex = re.compile(pattern)
    return sum(1 for _, message in entries if regex.search(message))


# ---------------------------------------------------------------------------------------------
# Videos


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
class Video:
    id: str
    state: str  # done, failed, open
    reason: str = ""
    attempts: int = 0
    finished_at: float | None = None
    started_at: float | None = None
    raw_state: str = ""


@dataclass
class Tally:
    accepted: int = 0
    done: int = 0
    failed: int = 0
    lost: int = 0

    def __str__(self) -> str:
        return f"{self.accepted} / {self.done} / {self.failed} / {self.lost}"


class Setup:
    """One side of the comparison: how to submit videos and read their outcome."""

    name: str
    unit: str
    ready_marker: str
    kind: str

    def __init__(self, host: Host) -> None:
        self.host = host

    def submit(self, specs: list[dict]) -> list[str]:
        raise NotImplementedError

    def videos(self, ids: list[str]) -> dict[str, Video]:
        raise NotImplementedError

    redis_cli = ""

    def main_pid(self) -> int:
        return int(self.host.prop(self.unit, "MainPID") or 0)

    def unacked(self, ids: list[str]) -> dict[str, float]:
        return unacked(self.host, self.redis_cli, ids)

    def rss_mb(self) -> float:
        pid = self.main_pid()
        out = self.host.sh(f"ps -o rss= -p {pid}", check=False).stdout.strip()
        return int(out) / 1024 if out else 0.0

    def wait(
        self,
        ids: list[str],
        timeout: float,
        until: Callable[[dict[str, Video]], bool] | None = None,
    ) -> dict[str, Video]:
        """Poll until every video is done/failed (or ``until`` holds), at most ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            videos = self.videos(ids)
            finished = all(v.state != "open" for v in videos.values())
            if (until(videos) if until else finished) or time.monotonic() >= deadline:
                return videos
            time.sleep(0.5)

    def tally(self, ids: list[str], videos: dict[str, Video]) -> Tally:
        tally = Tally(accepted=len(ids))
        for video in videos.values():
            if video.state == "done":
                tally.done += 1
            elif video.state == "failed" and video.reason:
                tally.failed += 1
            else:
                tally.lost += 1
        return tally

    def ready_after(self, since: float, timeout: float) -> float | None:
        """When the worker next reported it consumes (its journal's ready line) after ``since``."""
        deadline = time.monotonic() + timeout
        while True:
            entries = self.host.journal(since, "-u", self.unit)
            stamp = first(entries, self.ready_marker)
            if stamp is not None or time.monotonic() >= deadline:
                return stamp
            time.sleep(0.5)


class Stable(Setup):
    name = "celery-stable"
    unit = WORKER
    ready_marker = r"ready: consuming"
    kind = "stable"

    SUBMIT = (
        "import json, subprocess, sys\n"
        "out = []\n"
        "for spec in json.load(sys.stdin):\n"
        "    p = subprocess.run(['celery-stable', 'submit', '-'], input=json.dumps(spec),\n"
        "                       text=True, capture_output=True)\n"
        "    out.append({'rc': p.returncode, 'out': p.stdout.strip(), 'err': p.stderr.strip()})\n"
        "print(json.dumps(out))\n"
    )

    def submit_raw(self, specs: list[dict]) -> list[dict]:
        out = self.host.sh(f"python3 -c {shlex.quote(self.SUBMIT)}", stdin=json.dumps(specs))
        return json.loads(out.stdout)

    def submit(self, specs: list[dict]) -> list[str]:
        ids = []
        for result in self.submit_raw(specs):
            if result["rc"] != 0:
                raise HostError(f"celery-stable submit exited {result['rc']}: {result['err']}")
            ids.append(result["out"].splitlines()[0])
        return ids

    def records(self) -> list[dict]:
        out = self.host.sh("celery-stable list --json --limit 100000").stdout
        return json.loads(out)

    def videos(self, ids: list[str]) -> dict[str, Video]:
        by_id = {r["id"]: r for r in self.records()}
        videos = {}
        for job_id in ids:
            r = by_id.get(job_id)
            if r is None:
                videos[job_id] = Video(job_id, "open", raw_state="missing")
                continue
            state = r["state"] if r["state"] in ("done", "failed") else "open"
            videos[job_id] = Video(
                job_id,
                state,
                reason=r.get("error") or "" if state == "failed" else "",
                attempts=int(r.get("attempts") or 0),
                finished_at=r.get("finished_at"),
                started_at=r.get("started_at"),
                raw_state=r["state"],
            )
        return videos


class Guide(Setup):
    name = "guide"
    unit = GUIDE
    ready_marker = r"guide worker ready"
    kind = "guide"

    def __init__(self, host: Host, redis_password: str) -> None:
        super().__init__(host)
        self.redis = f"REDISCLI_AUTH={shlex.quote(redis_password)} redis-cli -n 1"
        self.redis_cli = self.redis

    def _ctl(self, command: str, payload: object) -> object:
        script = f"set -a; . /etc/guide-app/guide.env; set +a; cd {GUIDE_DIR} && {VENV_PY} guide_ctl.py {command}"
        return json.loads(self.host.sh(script, stdin=json.dumps(payload)).stdout)

    def submit(self, specs: list[dict]) -> list[str]:
        return list(self._ctl("submit", specs))  # type: ignore[arg-type]

    def videos(self, ids: list[str]) -> dict[str, Video]:
        keys = " ".join(f"celery-task-meta-{i}" for i in ids)
        out = self.host.sh(f"{self.redis} --no-raw mget {keys}" if ids else "true").stdout
        # --no-raw quotes each value as a Redis string literal, one per line.
        values = [line.split(") ", 1)[-1] for line in out.splitlines()] if ids else []
        videos = {}
        for job_id, value in zip(ids, values, strict=False):
            meta = json.loads(json.loads(value)) if value.startswith('"') else None
            status = meta["status"] if meta else "PENDING"
            if status == "SUCCESS":
                state, reason = "done", ""
            elif status == "FAILURE":
                result = meta.get("result") or {}
                state = "failed"
                reason = f"{result.get('exc_type', '?')}: {result.get('exc_message', '')}"
            else:
                state, reason = "open", ""
            done_at = None
            if meta and meta.get("date_done"):
                done_at = datetime.fromisoformat(meta["date_done"]).timestamp()
            videos[job_id] = Video(job_id, state, reason=reason, finished_at=done_at, raw_state=status)
        return videos


def unacked(host: Host, redis_cli: str, ids: list[str]) -> dict[str, float]:
    """The videos among ``ids`` whose message was delivered and never acked: kombu keeps it in
    the ``unacked`` hash (id in its headers) until acked or restored after the visibility
    timeout. Returns id -> seconds since delivery."""
    pairs = host.sh(f"{redis_cli} --raw hgetall unacked").stdout.splitlines()
    index = host.sh(f"{redis_cli} --raw zrange unacked_index 0 -1 withscores").stdout.split()
    delivered = dict(zip(index[::2], map(float, index[1::2]), strict=False))
    found: dict[str, float] = {}
    for tag, message in zip(pairs[::2], pairs[1::2], strict=False):
        for job_id in ids:
            if job_id in message:
                found[job_id] = time.time() - delivered.get(tag, time.time())
    return found


# ---------------------------------------------------------------------------------------------
# Rows


@dataclass
class Outcome:
    setup: str
    happened: list[str] = field(default_factory=list)
    recover: str = "-"
    tally: Tally = field(default_factory=Tally)
    problems: list[str] = field(default_factory=list)
    checked: bool = True

    def expect(self, condition: bool, problem: str) -> bool:
        # Only celery-stable is judged; the guide's rows are measured and reported as they are.
        if not condition and self.checked:
            self.problems.append(problem)
        return condition

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
    outcomes: list[Outcome] = field(default_factory=list)


def secs(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}"


def crash_summary(entries: list[tuple[float, str]], after: float) -> dict[str, float | None]:
    crash = first(entries, r"Main process exited, code=(killed|dumped)", after)
    restart = first(entries, r"Scheduled restart job", crash or after)
    return {"crash": crash, "restart": restart}


class Matrix:
    def __init__(self, host: Host, args: argparse.Namespace) -> None:
        self.host = host
        self.args = args
        env = self.host.sh(f"grep ^CELERY_STABLE_BROKER_URL= {ENV_FILE}").stdout
        url = env.split("=", 1)[1].strip().strip('"')
        match = re.match(r"redis://:([^@]*)@", url)
        self.redis_password = match.group(1) if match else ""
        self.stable = Stable(host)
        self.stable.redis_cli = f"REDISCLI_AUTH={shlex.quote(self.redis_password)} redis-cli -n 0"
        self.guide = Guide(host, self.redis_password)
        self.rows: list[Row] = []
        self.notes: list[str] = []

    # --- helpers ---------------------------------------------------------------------------

    def ensure_up(self, setup: Setup, out: Outcome) -> None:
        """Start a row from a consuming worker; a worker left down by the last row is a problem."""
        state = self.host.prop(setup.unit, "ActiveState")
        if state != "active":
            if setup.kind == "stable":
                out.problems.append(f"worker was {state} at the start of the row; restarted")
            else:
                out.happened.append(f"(worker found {state} after the last row; started by hand)")
            self.host.sh(f"systemctl reset-failed {setup.unit}; systemctl start {setup.unit}")
            setup.ready_after(time.time() - 1, 60)

    def run_row(
        self,
        number: str,
        fault: str,
        expectation: str,
        body: Callable[[Setup, Outcome], None],
        guide: bool = True,
    ) -> None:
        if self.args.only and number.rstrip("ab") not in self.args.only:
            return
        log(f"row {number}: {fault}")
        row = Row(number, fault, expectation)
        setups: list[Setup] = [self.stable] + ([self.guide] if guide else [])
        outcomes = {s.name: Outcome(s.name, checked=s.kind == "stable") for s in setups}

        def runner(setup: Setup) -> None:
            out = outcomes[setup.name]
            try:
                self.ensure_up(setup, out)
                body(setup, out)
            except Exception as exc:
                out.problems.append(f"harness error: {type(exc).__name__}: {exc}")
                log(f"row {number} {setup.name}: {type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=runner, args=(s,)) for s in setups]
        for n, thread in enumerate(threads):
            # The guide's copy of the fault goes in a few seconds later, so that two Python
            # start-ups do not compete for the host's 2 cores during a measured restart.
            if n:
                time.sleep(GUIDE_STAGGER_SEC)
            thread.start()
        for thread in threads:
            thread.join()
        row.outcomes = [outcomes[s.name] for s in setups]
        for out in row.outcomes:
            log(f"row {number} {out.setup}: {'; '.join(out.happened)} | {out.tally} | {out.verdict}")
        self.rows.append(row)

    # --- 0: the fault hooks live only in the test drop-in ---------------------------------

    def check_hooks(self) -> bool:
        cat = self.host.sh(f"systemctl cat {WORKER}").stdout
        files: dict[str, str] = {}
        current = ""
        for line in cat.splitlines():
            if line.startswith("# /"):
                current = line[2:].strip()
                files[current] = ""
            elif current:
                files[current] += line + "\n"
        carrying = [path for path, text in files.items() if "FAULT_HOOKS" in text]
        role_files = self.host.sh(
            "grep -l FAULT_HOOKS /etc/systemd/system/celery-*.service "
            "/etc/systemd/system/celery-*.timer /etc/celery-stable/* 2>/dev/null || true"
        ).stdout.split()
        pid = self.stable.main_pid()
        environ = self.host.sh(f"tr '\\0' '\\n' < /proc/{pid}/environ").stdout
        ok = carrying == [FAULT_DROP_IN] and not role_files and ("CELERY_STABLE_FAULT_HOOKS=1" in environ)
        self.notes.append(
            f"Fault hooks: `systemctl cat {WORKER}` shows CELERY_STABLE_FAULT_HOOKS only in "
            f"{', '.join(carrying) or 'no file'}; role-written units and env file carrying it: "
            f"{', '.join(role_files) or 'none'}; the running worker has it: "
            f"{'yes' if 'CELERY_STABLE_FAULT_HOOKS=1' in environ else 'no'} -> "
            f"{'ok' if ok else 'FAIL'}"
        )
        return ok

    # --- 1: SIGSEGV mid-render -------------------------------------------------------------

    def row_segfault(self, s: Setup, out: Outcome) -> None:
        since = time.time()
        fault = {"kind": "segfault", "at_frame": 10, "on_attempts": 1}
        ids = s.submit([spec("r1 segfault", 2.0, fault)])
        window = 60.0 if s.kind == "stable" else GUIDE_WINDOW_SEC
        videos = s.wait(ids, window + 5)
        entries = s.host.journal(since, "-u", s.unit)
        cut = crash_summary(entries, since)
        crash, restart = cut["crash"], cut["restart"]
        ready = s.ready_after(crash or since, 30) if crash else None
        traceback = first(entries, r"Fatal Python error: Segmentation fault") is not None
        frames = count(entries, r'File ".*(faults|tasks)\.py", line \d+ in')
        out.expect(crash is not None, "no SIGSEGV seen in the journal")
        if crash is not None:
            if s.kind == "guide":
                videos = s.wait(ids, max(0.0, crash + window - time.time()))
            out.happened.append("real SIGSEGV (exit status 11)")
            out.happened.append(
                f"Python traceback of the crash in the journal ({frames} frames of the task)"
                if traceback
                else "no Python traceback in the journal (faulthandler not enabled)"
            )
            out.expect(traceback, "no faulthandler traceback in the journal")
            if restart is not None:
                # systemd's stop phase (ExecStopPost, the reap) ends with "Failed with result";
                # RestartSec counts from there.
                stopped = first(entries, r"Failed with result", crash)
                split = (
                    f" (stop phase incl. ExecStopPost {stopped - crash:.1f} s + RestartSec {restart - stopped:.1f} s)"
                    if stopped is not None and stopped <= restart
                    else ""
                )
                out.happened.append(f"restarted {restart - crash:.1f} s after the crash{split}")
                out.expect(restart - crash <= 3.0, f"restart took {restart - crash:.1f} s > 3 s")
            else:
                out.expect(False, "unit did not restart")
            video = videos[ids[0]]
            reap = first(entries, r"reaped video .*requeued|requeued \(crash")
            if reap is not None:
                out.happened.append(f"video requeued by the ExecStopPost reap {reap - crash:.1f} s after")
            if video.state == "done":
                out.happened.append(
                    f"done on attempt {video.attempts}, {video.finished_at - crash:.1f} s after the crash"
                )
                out.expect(video.finished_at - crash <= 60, "video not resolved within 60 s of the crash")
            elif video.state == "failed":
                out.happened.append(f"failed: {video.reason}")
            else:
                out.happened.append(self.lost_text(s, video, window))
            out.recover = f"{secs(restart - crash if restart else None)} restart · " + (
                f"{secs(ready - crash if ready else None)} consuming"
            )
        out.tally = s.tally(ids, videos)
        out.expect(out.tally.lost == 0, "a video was lost")

    def lost_text(self, s: Setup, video: Video, window: float) -> str:
        held = s.unacked([video.id])
        where = (
            f"its message unacked in Redis for {held[video.id]:.0f} s, redelivered only after "
            "the visibility timeout (3600 s, Celery's default)"
            if video.id in held
            else "its message is not in Redis's unacked hash"
        )
        return f"LOST: still {video.raw_state} after {window:.0f} s; {where}"

    # --- 2: 11 crashes within the hour -----------------------------------------------------

    def row_crash_loop(self, s: Setup, out: Outcome) -> None:
        self.host.sh(f"systemctl reset-failed {s.unit}")
        since = time.time()
        fault = {"kind": "segfault", "at_frame": 0, "on_attempts": 1}
        ids = s.submit([spec(f"r2 crash {n}", 0.4, fault) for n in range(1, 12)])
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            if s.host.prop(s.unit, "ActiveState") == "failed":
                break
            time.sleep(1)
        entries = s.host.journal(since, "-u", s.unit)
        crashes = count(entries, r"Main process exited, code=(killed|dumped)")
        refused = first(entries, r"Start request repeated too quickly")
        props = s.host.show(s.unit, "ActiveState", "Result")
        out.happened.append(f"{crashes} SIGSEGVs in {time.time() - since:.0f} s")
        out.expect(crashes == 11, f"{crashes} crashes, not 11")
        out.expect(refused is not None, "the 11th start was not refused")
        out.expect(props["ActiveState"] == "failed", f"unit {props['ActiveState']}, not failed")
        if refused is not None:
            out.happened.append(
                f"11th start refused ('Start request repeated too quickly'), unit {props['ActiveState']}"
            )
        alert = self.host.journal(since, "-t", "celery-alert")
        alerted = first(alert, rf"{s.unit} failed") is not None
        if s.kind == "stable":
            out.expect(alerted, "no OnFailure alert (celery-alert crit line) in the journal")
            out.happened.append("OnFailure alert ran (crit line in the journal)" if alerted else "no alert")
        else:
            out.happened.append("no alert (the guide describes none; its supervisor logs to /tmp)")
        # The operator's fix, as the alert line says.
        start = time.time()
        self.host.sh(f"systemctl reset-failed {s.unit} && systemctl start {s.unit}")
        ready = s.ready_after(start, 60)
        out.expect(ready is not None, "not consuming again after reset-failed + start")
        out.happened.append(f"`systemctl reset-failed` + start: consuming in {secs(ready and ready - start)} s")
        out.recover = f"{secs(ready and ready - start)} after reset-failed"
        window = 60.0 if s.kind == "stable" else 20.0
        videos = s.wait(ids, window)
        if s.kind == "guide":
            held = s.unacked(ids)
            out.happened.append(
                f"{sum(v.state == 'open' for v in videos.values())} videos still STARTED/PENDING "
                f"{window:.0f} s after the restart: {len(held)} of their messages unacked in "
                "Redis until the visibility timeout (3600 s)"
            )
        else:
            attempts = sorted({v.attempts for v in videos.values()})
            out.happened.append(f"every video requeued by the reap, then done (attempts {attempts})")
        out.tally = s.tally(ids, videos)
        out.expect(out.tally.lost == 0, f"{out.tally.lost} videos lost")

    # --- 3: slow leak past the RSS recycle limit -------------------------------------------

    def row_leak(self, s: Setup, out: Outcome) -> None:
        if s.kind == "stable":
            # The leaking video must not also be the 10th task of this process, or the recycle
            # would be the count-based one: let fillers take the count to 10 first.
            status = s.host.prop(s.unit, "StatusText")
            match = re.search(r"(\d+)/(\d+) tasks before recycle", status)
            done, limit = (int(match.group(1)), int(match.group(2))) if match else (0, 10)
            if done + 1 >= limit:
                fillers = s.submit([spec(f"r3 filler {n}", 0.4) for n in range(limit - done)])
                s.wait(fillers, 60)
                s.ready_after(time.time() - 1, 30)
        since = time.time()
        pid0 = s.main_pid()
        restarts0 = s.host.prop(s.unit, "NRestarts")
        rss0 = s.rss_mb()
        threshold_mb = 256000 / 1024
        leak_mb = max(16, round(threshold_mb - rss0 + 16))
        fault = {"kind": "leak", "at_frame": 5, "mb": leak_mb}
        ids = s.submit([spec("r3 leak", 1.0, fault)] + [spec(f"r3 behind {n}", 1.0) for n in (1, 2, 3)])
        videos = s.wait(ids, 90)
        entries = s.host.journal(since, "-u", s.unit)
        pid1 = s.main_pid()
        restarts1 = s.host.prop(s.unit, "NRestarts")
        rss1 = s.rss_mb()
        out.happened.append(f"leak of {leak_mb} MiB at RSS {rss0:.0f} MB (threshold 256000 KiB = 250 MiB)")
        recycling = first(entries, r"recycling after this task: RSS")
        why = [m for _, m in entries if "recycling after this task" in m]
        reexec = first(entries, r"recycling: re-executing")
        ready = first(entries, s.ready_marker, reexec or since) if reexec else None
        if s.kind == "stable":
            out.expect(recycling is not None, f"no RSS 'recycling' line in the journal ({why})")
            out.expect(pid1 == pid0, f"MainPID changed {pid0} -> {pid1}")
            out.expect(restarts1 == restarts0, f"NRestarts {restarts0} -> {restarts1}")
            out.happened.append(
                f"recycled after the leaking task (journal '{why[0].split('] ')[-1] if why else '-'}', "
                "re-exec in place: "
                f"MainPID {pid1} {'unchanged' if pid1 == pid0 else 'CHANGED'}, NRestarts "
                f"{restarts0} -> {restarts1}); RSS now {rss1:.0f} MB"
            )
            cgroup = s.host.prop(s.unit, "ControlGroup")
            fail = s.host.sh(
                f"cat /sys/fs/cgroup/memory{cgroup}/memory.failcnt 2>/dev/null || "
                f"cat /sys/fs/cgroup{cgroup}/memory.events 2>/dev/null | grep -w max",
                check=False,
            ).stdout.split()
            hits = int(fail[-1]) if fail else -1
            oom = count(entries, r"(?i)oom|out of memory")
            out.expect(hits == 0 and oom == 0, f"MemoryMax hit (failcnt {hits}, oom lines {oom})")
            out.happened.append(
                f"MemoryMax never hit (cgroup failcnt {hits}, no OOM)"
                if hits == 0 and oom == 0
                else f"MemoryMax hit (failcnt {hits})"
            )
            out.recover = f"{secs(ready - reexec if ready and reexec else None)} re-exec dead time"
        else:
            out.happened.append(
                f"never recycled (--max-memory-per-child is ignored under solo): same PID "
                f"{'yes' if pid1 == pid0 else 'no'}, RSS {rss1:.0f} MB after the queue drained"
            )
            out.recover = "n/a (no recycle)"
        done_behind = sum(videos[i].state == "done" for i in ids[1:])
        out.happened.append(f"queue intact: {done_behind}/3 videos behind it done")
        out.tally = s.tally(ids, videos)
        if s.kind == "stable":
            out.expect(out.tally.done == 4, f"only {out.tally.done}/4 done")

    # --- 4: allocation bomb ----------------------------------------------------------------

    def row_alloc_bomb(self, s: Setup, out: Outcome) -> None:
        since = time.time()
        restarts0 = s.host.prop(s.unit, "NRestarts")
        fault = {"kind": "alloc_bomb", "at_frame": 5, "mb": 0}
        ids = s.submit([spec("r4 bomb", 1.0, fault), spec("r4 next", 1.0)])
        if s.kind == "stable":
            videos = s.wait(ids, 90)
        else:
            time.sleep(GUIDE_WINDOW_SEC)
            videos = s.videos(ids)
        entries = s.host.journal(since, "-u", s.unit)
        restarts1 = s.host.prop(s.unit, "NRestarts")
        bomb, nxt = videos[ids[0]], videos[ids[1]]
        oom = first(entries, r"(?i)oom|Failed with result 'oom-kill'")
        if bomb.state == "failed":
            how = "OOM killer (MemoryMax)" if oom else "RLIMIT_AS (MemoryError)"
            out.happened.append(f"stopped by {how}; failed: {bomb.reason}")
            if bomb.started_at and bomb.finished_at:
                out.recover = f"{bomb.finished_at - bomb.started_at:.1f} to fail it"
        else:
            out.happened.append(f"bomb video {bomb.raw_state}")
        fatal = count(entries, r"Unrecoverable error: MemoryError")
        if s.kind == "guide" and fatal:
            out.happened.append(
                f"but Celery treats a task's MemoryError as fatal to the worker ('Unrecoverable "
                f"error', exit 1) and the unacked bomb comes back at each exit: {fatal} worker "
                f"deaths in {GUIDE_WINDOW_SEC:.0f} s (NRestarts {restarts0} -> {restarts1}), "
                f"heading for the 10/hour start limit; next video {nxt.raw_state}"
            )
            out.recover = "never (restart loop)"
            # An operator has to find that message and delete it: purge the guide's queue.
            self.host.sh(
                f"systemctl stop {s.unit}; "
                f"{self.guide.redis} del celery unacked unacked_index >/dev/null; "
                f"systemctl reset-failed {s.unit}; systemctl start {s.unit}"
            )
            s.ready_after(time.time() - 1, 60)
            out.happened.append("the matrix purged the queue by hand to stop the loop")
        else:
            out.happened.append(
                f"worker {'restarted' if restarts1 != restarts0 else 'never went down'} "
                f"(NRestarts {restarts0} -> {restarts1}); next video {nxt.raw_state}"
            )
        out.tally = s.tally(ids, videos)
        if s.kind == "stable":
            out.expect(bomb.state == "failed" and bool(bomb.reason), "bomb video not failed with reason")
            out.expect(nxt.state == "done", "the next video did not render")
            out.expect(s.host.prop(s.unit, "ActiveState") == "active", "worker not back")

    # --- 5: hang in native code holding the GIL --------------------------------------------

    def row_hang_gil(self, s: Setup, out: Outcome) -> None:
        since = time.time()
        fault = {"kind": "hang_gil", "at_frame": 5, "seconds": 3600}
        ids = s.submit([spec("r5 hang holding the GIL", 1.0, fault), spec("r5 behind", 1.0)])
        window = 45.0 if s.kind == "stable" else GUIDE_WINDOW_SEC
        if s.kind == "stable":
            videos = s.wait(ids, window)
        else:
            # Nothing will end the hang: observe the whole window, then see if anything moved.
            time.sleep(window)
            videos = s.videos(ids)
        entries = s.host.journal(since, "-u", s.unit)
        began = first(entries, r"rendering video|Task core\.tasks\.generate_video.*received")
        watchdog = first(entries, r"Watchdog timeout")
        crash = first(entries, r"Main process exited")
        result = first(entries, r"Failed with result 'watchdog'")
        hung, behind = videos[ids[0]], videos[ids[1]]
        if s.kind == "stable":
            start = began or since
            out.expect(watchdog is not None and result is not None, "not killed by the watchdog")
            traceback = first(entries, r"Fatal Python error: Aborted") is not None
            if watchdog is not None:
                out.happened.append(
                    f"watchdog killed it {watchdog - start:.1f} s after the render began "
                    "(SERVICE_RESULT=watchdog; the GIL hang stopped the pings)"
                    + ("; SIGABRT traceback in the journal" if traceback else "")
                )
            ready = s.ready_after(crash or since, 30) if crash else None
            out.recover = f"{secs(ready - start if ready else None)} to consuming"
            out.happened.append(
                f"video {hung.raw_state}: {hung.reason}" if hung.state == "failed" else f"video {hung.raw_state}"
            )
            out.expect(hung.state == "failed" and bool(hung.reason), "hung video not failed with reason")
            out.expect(behind.state == "done", "the video behind it did not render")
            out.happened.append(f"video behind it {behind.raw_state}")
        else:
            pid = s.main_pid()
            out.happened.append(
                f"no kill in {window:.0f} s (--time-limit is ignored under solo): same worker "
                f"pid {pid} still hung, video {hung.raw_state}, the one behind {behind.raw_state}"
            )
            # Clean up like an operator finally would: kill it by hand.
            self.host.sh(f"systemctl kill -s KILL {s.unit}")
            videos = s.wait(ids, 20, until=lambda v: v[ids[1]].state != "open")
            out.happened.append(
                f"after a manual kill: the one behind {videos[ids[1]].raw_state}; the hung one "
                "LOST (unacked, comes back after 3600 s and hangs again)"
            )
            out.recover = "never (manual kill)"
        out.tally = s.tally(ids, videos)

    # --- 5b: hang releasing the GIL, no progress: recovery, then the hard limit ------------

    def row_hang_recovery(self, s: Setup, out: Outcome) -> None:
        since = time.time()
        fault = {"kind": "hang", "at_frame": 5, "seconds": 3600}
        ids = s.submit([spec("r5b stuck, GIL released", 1.0, fault)])
        s.wait(ids, 20, until=lambda v: v[ids[0]].raw_state in ("processing", "STARTED"))
        window = GUIDE_WINDOW_SEC
        if s.kind == "guide":
            time.sleep(window)
            videos = s.videos(ids)
            out.happened.append(
                f"no kill in {window:.0f} s (--time-limit ignored under solo); video "
                f"{videos[ids[0]].raw_state} (the guide's recovery job is not reproducible here)"
            )
            self.host.sh(f"systemctl kill -s KILL {s.unit}")
            out.happened.append("LOST: killed by hand, message unacked for 3600 s")
            out.recover = "never (manual kill)"
            out.tally = s.tally(ids, videos)
            return
        # Wait past stuck_after (8 s) with no progress, then run what the 3-minute timer runs.
        stuck_after = 8.0
        rec = s.videos(ids)[ids[0]]
        time.sleep(max(0.0, (rec.started_at or time.time()) + stuck_after + 2 - time.time()))
        rec_start = time.time()
        self.host.sh("systemctl start celery-recovery.service")
        videos = s.wait(ids, 10)
        video = videos[ids[0]]
        out.happened.append(
            f"celery-recovery (the timer's service, started by hand) failed it "
            f"{(video.finished_at or rec_start) - (video.started_at or since):.1f} s after it "
            f"began: {video.reason}"
            if video.state == "failed"
            else f"recovery left it {video.raw_state}"
        )
        out.expect("stuck" in video.reason, "recovery did not fail the stuck video")
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            entries = s.host.journal(since, "-u", s.unit)
            if first(entries, r"Failed with result 'watchdog'"):
                break
            time.sleep(1)
        began = first(entries, r"rendering video") or since
        trigger = first(entries, r"exceeded the hard time limit")
        result = first(entries, r"Failed with result 'watchdog'")
        out.expect(result is not None, "not killed by the watchdog after the hard limit")
        if result is not None:
            out.happened.append(
                f"hard limit (20 s): monitor sent WATCHDOG=trigger at {secs(trigger and trigger - began)} s, "
                f"killed at {result - began:.1f} s (SERVICE_RESULT=watchdog)"
            )
            ready = s.ready_after(result, 30)
            out.recover = f"{secs(ready - began if ready else None)} to consuming"
        out.tally = s.tally(ids, s.videos(ids))

    # --- 6: poison video -------------------------------------------------------------------

    def row_poison(self, s: Setup, out: Outcome) -> None:
        since = time.time()
        fault = {"kind": "segfault", "at_frame": 5}
        ids = s.submit([spec("r6 poison", 1.0, fault), spec("r6 behind 1", 1.0), spec("r6 behind 2", 1.0)])
        window = 60.0
        if s.kind == "stable":
            videos = s.wait(ids, window)
        else:
            videos = s.wait(ids, window, until=lambda v: all(v[i].state == "done" for i in ids[1:]))
            time.sleep(max(0.0, since + 30 - time.time()))
            videos = s.videos(ids)
        entries = s.host.journal(since, "-u", s.unit)
        crashes = count(entries, r"Main process exited, code=(killed|dumped)")
        poison = videos[ids[0]]
        behind = sum(videos[i].state == "done" for i in ids[1:])
        out.happened.append(f"{crashes} crash(es)")
        if poison.state == "failed":
            out.happened.append(f"poison failed: {poison.reason}")
            if poison.finished_at:
                out.recover = f"{poison.finished_at - since:.1f} to fail it"
        else:
            out.happened.append(
                self.lost_text(s, poison, time.time() - since) + "; then it crashes the worker again, every hour"
            )
            cut = crash_summary(entries, since)
            crash, restart = cut["crash"], cut["restart"]
            done_at = max((videos[i].finished_at or 0 for i in ids[1:]), default=0)
            out.recover = (
                f"restart {secs(restart - crash if restart and crash else None)}; the poison never"
                if done_at
                else "never"
            )
        out.happened.append(f"{behind}/2 videos behind it done")
        out.tally = s.tally(ids, videos)
        if s.kind == "stable":
            out.expect(crashes == 2, f"{crashes} crashes, not K=2")
            out.expect(
                poison.state == "failed" and "2 times" in poison.reason,
                "poison not failed after K=2",
            )
            out.expect(behind == 2, "videos behind the poison did not render")

    # --- 7: Redis restarted while waiting and while rendering ------------------------------

    def row_redis(self, s: Setup, out: Outcome, idle: threading.Barrier, busy: threading.Barrier) -> None:
        since = time.time()
        pid0, restarts0 = s.main_pid(), s.host.prop(s.unit, "NRestarts")
        idle.wait(timeout=60)  # the barrier's action restarts Redis while both workers wait
        ids = s.submit([spec("r7 after restart while idle", 1.0)])
        slow = {"kind": "slow", "at_frame": 0, "seconds": 0.12}
        ids += s.submit([spec("r7 rendering through the restart", 2.0, slow), spec("r7 behind", 1.0)])
        s.wait(ids[1:2], 30, until=lambda v: v[ids[1]].raw_state in ("processing", "STARTED"))
        busy.wait(timeout=60)  # ...and again while both render
        videos = s.wait(ids, 60)
        entries = s.host.journal(since, "-u", s.unit)
        pid1, restarts1 = s.main_pid(), s.host.prop(s.unit, "NRestarts")
        marker = "rendering video" if s.kind == "stable" else "guide render start"
        runs = {i: count(entries, rf"{marker} {i}") for i in ids}
        twice = [i for i, n in runs.items() if n > 1 and videos[i].state == "done"]
        out.happened.append(
            f"Redis restarted twice (idle, then mid-render); worker reconnected by itself: "
            f"MainPID {'unchanged' if pid1 == pid0 else f'{pid0} -> {pid1}'}, NRestarts "
            f"{restarts0} -> {restarts1}"
        )
        done = [v for v in videos.values() if v.state == "done"]
        out.happened.append(
            f"each video rendered once (runs per video: {sorted(runs.values())})"
            if not twice
            else f"rendered twice to completion: {twice}"
        )
        if s.kind == "stable":
            out.expect(pid1 == pid0 and restarts1 == restarts0, "worker restarted")
            out.expect(not twice and all(v.attempts == 1 for v in done), "a video ran twice")
            held = s.unacked(ids)
            out.happened.append(
                f"{len(held)} of their messages left unacked in Redis (the ack was lost with the "
                "connection): redelivered after the visibility timeout (320 s here), then "
                "ignored as already done"
                if held
                else "every message acked"
            )
        else:
            held = s.unacked(ids)
            out.happened.append(
                f"{len(held)} of their messages left unacked in Redis (the ack was lost with the "
                "connection): each comes back after 3600 s and renders again (a video done twice)"
                if held
                else "every message acked"
            )
        out.recover = "0 (no restart)" if pid1 == pid0 else "restarted"
        out.tally = s.tally(ids, videos)
        if s.kind == "stable":
            out.expect(out.tally.done == 3, f"{out.tally.done}/3 done")

    def redis_restart(self) -> None:
        log("restarting redis-server")
        self.host.sh("systemctl restart redis-server")

    # --- 8: host reboot --------------------------------------------------------------------

    def row_reboot(self) -> None:
        if self.args.only and "8" not in self.args.only:
            return
        log("row 8: host reboot")
        row = Row(
            "8",
            "host reboot (`docker restart`)",
            "worker, Beat and the timer back, enabled; 3-min cadence",
        )
        outs = {"stable": Outcome("celery-stable"), "guide": Outcome("guide", checked=False)}
        for setup in (self.stable, self.guide):
            self.ensure_up(setup, outs[setup.kind])
        slow = {"kind": "slow", "at_frame": 0, "seconds": 0.08}
        ids = {}
        for setup in (self.stable, self.guide):
            ids[setup.kind] = setup.submit(
                [spec("r8 rendering at reboot", 2.0, slow), spec("r8 queued at reboot", 1.0)]
            )
        for setup in (self.stable, self.guide):
            first_id = ids[setup.kind][0]
            setup.wait(
                [first_id],
                30,
                until=lambda v, i=first_id: v[i].raw_state in ("processing", "STARTED"),
            )
        start = time.time()
        proc = subprocess.run(
            ["docker", "restart", "-t", "120", self.host.container],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            outs["stable"].problems.append(f"docker restart failed: {proc.stderr.strip()}")
        restarted = time.time()
        self.host.wait_ready()
        booted = time.time()
        st = outs["stable"]
        ready = self.stable.ready_after(start, 90)
        units = {}
        for unit in (
            WORKER,
            "celery-beat.service",
            "celery-recovery.timer",
            "redis-server.service",
        ):
            p = self.host.show(unit, "ActiveState", "UnitFileState")
            units[unit] = p
            st.expect(
                p["ActiveState"] == "active" and p["UnitFileState"] == "enabled",
                f"{unit} {p['ActiveState']}/{p['UnitFileState']}",
            )
        st.happened.append(
            "worker, Beat, recovery timer, Redis: "
            + ", ".join(f"{u.split('.')[0]} {p['ActiveState']}+{p['UnitFileState']}" for u, p in units.items())
        )
        timer = self.host.show("celery-recovery.timer", "NextElapseUSecRealtime", "LastTriggerUSec")
        nxt = parse_systemd_time(timer.get("NextElapseUSecRealtime", ""))
        last = timer.get("LastTriggerUSec", "")
        cadence = (
            nxt is not None and nxt.minute % 3 == 0 and nxt.second == 0 and (0 < nxt.timestamp() - time.time() <= 180)
        )
        st.expect(
            cadence,
            f"timer next elapse {timer.get('NextElapseUSecRealtime')} off the 3-min cadence",
        )
        st.happened.append(
            f"recovery timer: next {nxt.strftime('%H:%M:%S') if nxt else '?'} "
            f"(in {nxt.timestamp() - time.time():.0f} s), last trigger "
            f"{last.split(' ')[2] if last.count(' ') >= 2 else last}"
            if nxt
            else "recovery timer: no next elapse"
        )
        videos = self.stable.wait(ids["stable"], 60)
        done = sum(v.state == "done" for v in videos.values())
        rendering, queued = (videos[i] for i in ids["stable"])
        st.happened.append(
            "video rendering at the reboot: "
            + (
                f"finished by the warm stop before shutdown (attempt {rendering.attempts})"
                if rendering.state == "done" and (rendering.finished_at or 0) < restarted
                else f"{rendering.raw_state} after boot (attempt {rendering.attempts}) {rendering.reason}"
            )
            + f"; video queued at the reboot: {queued.raw_state} after boot"
        )
        st.expect(done == 2, f"{done}/2 videos done after the reboot")
        st.tally = self.stable.tally(ids["stable"], videos)
        st.recover = (
            f"{secs(ready and ready - start)} reboot to consuming (shutdown incl. warm stop {restarted - start:.1f})"
        )
        gd = outs["guide"]
        gp = self.host.show(GUIDE, "ActiveState", "UnitFileState")
        time.sleep(max(0.0, booted + 15 - time.time()))
        gvideos = self.guide.videos(ids["guide"])
        gd.happened.append(
            f"guide worker {gp['ActiveState']} after boot (its interactive start script is not run at "
            "boot; no Beat either)"
        )
        grendering, gqueued = (gvideos[i] for i in ids["guide"])
        gd.happened.append(
            f"video rendering at the reboot: {grendering.raw_state} {grendering.reason}".rstrip()
            + (" (shutdown's SIGTERM reached ffmpeg too)" if "BrokenPipe" in grendering.reason else "")
            + f"; video queued: {gqueued.raw_state}"
            + (" (waits for a human to start the worker)" if gqueued.state == "open" else "")
        )
        gd.recover = "never (manual start)" if gp["ActiveState"] != "active" else "-"
        gd.tally = self.guide.tally(ids["guide"], gvideos)
        row.outcomes = [st, gd]
        for out in row.outcomes:
            log(f"row 8 {out.setup}: {'; '.join(out.happened)} | {out.tally} | {out.verdict}")
        self.rows.append(row)
        # Bring the guide back for the next row, as its operator would by running the script.
        self.host.sh(f"systemctl reset-failed {GUIDE}; systemctl start {GUIDE}")
        self.guide.ready_after(time.time() - 1, 60)
        self.guide.wait(ids["guide"], 20)

    # --- 9: bad job spec; bad role variable ------------------------------------------------

    def row_bad_input(self, s: Setup, out: Outcome) -> None:
        bad = spec("r9 bad", 1.0)
        bad["width"] = "wide"
        pid0 = s.main_pid()
        if s.kind == "stable":
            before = len(self.stable.records())
            result = self.stable.submit_raw([bad])[0]
            after = len(self.stable.records())
            out.happened.append(f"bad spec: exit {result['rc']}, `{result['err']}`; {after - before} recorded")
            out.expect(
                result["rc"] == 2 and "width" in result["err"] and after == before,
                "bad spec not refused cleanly",
            )
            for var, value, names in (
                ("celery_stable_time_limit_sec", "abc", "celery_stable_time_limit_sec"),
                ("celery_stable_memory_max", "200M", "celery_stable_memory_max=200M is not valid"),
            ):
                env0 = self.host.sh(
                    f"md5sum {ENV_FILE} /etc/systemd/system/celery-*.service /etc/systemd/system/celery-*.timer"
                ).stdout
                rc, text = self.ansible(f"{var}={value}")
                env1 = self.host.sh(
                    f"md5sum {ENV_FILE} /etc/systemd/system/celery-*.service /etc/systemd/system/celery-*.timer"
                ).stdout
                recap = re.search(rf"{re.escape(self.host.container)}\s*:\s*(.*)", text.split("PLAY RECAP")[-1])
                changed = re.search(r"changed=(\d+)", recap.group(1)).group(1) if recap else "?"
                message = failure_message(text)
                at = message.find(names)
                if at > 60:  # keep the clause that names the variable
                    message = "... " + message[at : at + 170] + " ..."
                out.happened.append(f"`-e {var}={value}`: ansible-playbook exit {rc}, changed={changed}: {message}")
                out.expect(
                    rc != 0 and changed == "0" and names in message and env0 == env1,
                    f"bad {var} not refused before any change",
                )
            out.tally = Tally(accepted=0)
        else:
            ids = s.submit([bad])
            videos = s.wait(ids, 30)
            video = videos[ids[0]]
            out.happened.append(f"bad spec accepted (no validation), then {video.raw_state}: {video.reason}")
            out.happened.append("bad setting: no deploy step checks core/celery_app.py (n/a)")
            out.tally = s.tally(ids, videos)
        pid1 = s.main_pid()
        out.happened.append(f"worker untouched (MainPID {'unchanged' if pid1 == pid0 else 'CHANGED'})")
        out.expect(pid1 == pid0, "worker restarted")
        out.recover = "0"

    def ansible(self, extra: str) -> tuple[int, str]:
        with tempfile.TemporaryDirectory() as tmp:
            inv = Path(tmp)
            (inv / "hosts.yml").write_text(
                json.dumps(
                    {
                        "all": {
                            "children": {
                                "celery_workers": {
                                    "hosts": {self.host.container: {"ansible_connection": "community.docker.docker"}}
                                },
                                "celery_broker": {"hosts": {self.host.container: {}}},
                            }
                        }
                    }
                )
            )
            (inv / "group_vars").symlink_to(PROJECT / "molecule/resources/group_vars")
            (inv / "host_vars").symlink_to(PROJECT / "molecule/faults/host_vars")
            env = dict(__import__("os").environ)
            env.update(
                ANSIBLE_ROLES_PATH=str(PROJECT / "roles"),
                MOLECULE_PROJECT_DIRECTORY=str(PROJECT),
                ANSIBLE_FORCE_COLOR="0",
                ANSIBLE_NOCOLOR="1",
            )
            env.pop("ANSIBLE_CONFIG", None)
            proc = subprocess.run(
                [
                    self.args.ansible_playbook,
                    "-i",
                    str(inv / "hosts.yml"),
                    str(PROJECT / "playbooks/site.yml"),
                    "-e",
                    extra,
                ],
                cwd=PROJECT,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            return proc.returncode, proc.stdout + proc.stderr

    # --- the whole run -----------------------------------------------------------------------

    def run(self) -> int:
        started = time.time()
        if self.host.prop(WORKER, "ActiveState") != "active":
            raise HostError(f"{WORKER} is not active before the matrix")
        hooks_ok = self.check_hooks()
        self.run_row(
            "1",
            "SIGSEGV mid-render (segfault hook)",
            "restart <= 3 s; faulthandler traceback; video retried or failed within 60 s",
            self.row_segfault,
        )
        self.run_row(
            "2",
            "11 crashes within the hour",
            "11th start refused (10/3600 s); unit failed; OnFailure alert; reset-failed + start recovers",
            self.row_crash_loop,
        )
        self.run_row(
            "3",
            "slow leak past the RSS recycle limit",
            "recycled after the task (same MainPID, NRestarts unchanged); queue intact; MemoryMax never hit",
            self.row_leak,
        )
        self.run_row(
            "4",
            "allocation bomb in a task",
            "stopped by RLIMIT_AS or MemoryMax; failed with reason; worker back; next video renders",
            self.row_alloc_bomb,
        )
        self.run_row(
            "5",
            "hang in native code holding the GIL",
            "killed by the watchdog (SERVICE_RESULT=watchdog); worker back; video failed with reason",
            self.row_hang_gil,
        )
        self.run_row(
            "5b",
            "hang releasing the GIL (no progress)",
            "recovery fails it after stuck_after; killed by the watchdog after the hard limit",
            self.row_hang_recovery,
        )
        self.run_row(
            "6",
            "poison video (segfault on every attempt)",
            "failed after K=2 deliveries with the reason; the videos behind it render",
            self.row_poison,
        )
        idle = threading.Barrier(2, action=self.redis_restart)
        busy = threading.Barrier(2, action=self.redis_restart)
        self.run_row(
            "7",
            "Redis restarted while idle, then mid-render",
            "worker reconnects by itself; nothing lost; nothing run twice to completion",
            lambda s, o: self.row_redis(s, o, idle, busy),
        )
        self.row_reboot()
        self.run_row(
            "9",
            "bad job spec; bad role variable",
            "CLI exit 2, nothing recorded; playbook fails in validation/preflight, changed=0; worker untouched",
            self.row_bad_input,
        )
        table = self.render(time.time() - started)
        print(table)
        if self.args.out:
            Path(self.args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(self.args.out).write_text(table + "\n")
        failed = [r.number for r in self.rows for o in r.outcomes if o.problems]
        return 0 if hooks_ok and not failed else 1

    def render(self, elapsed: float) -> str:
        lines = [
            "| # | fault | setup | what happened | s to recover | accepted / done / failed (reason) / lost | check |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for row in self.rows:
            for n, out in enumerate(row.outcomes):
                cells = [
                    row.number if n == 0 else "",
                    row.fault if n == 0 else "",
                    out.setup,
                    "; ".join(out.happened).replace("|", "\\|"),
                    out.recover,
                    str(out.tally),
                    out.verdict.replace("|", "\\|"),
                ]
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines.append("Expectations (celery-stable rows only; the guide rows are measured, not judged):")
        for row in self.rows:
            lines.append(f"  {row.number}: {row.expectation}")
        lines.append("")
        lines.extend(self.notes)
        bad = [f"{r.number} ({o.setup})" for r in self.rows for o in r.outcomes if o.problems]
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


def failure_message(text: str) -> str:
    """Why a failed ansible-playbook run failed, as one line (its output wraps messages)."""
    for pattern in (
        r"argument '[^']+' is of type [^\n]*",
        r"celery_stable_\w+=\S+ is not valid:.*?(?:'\n|\n\s*\n|$)",
    ):
        match = re.search(pattern, text, re.DOTALL)
        if match:
            # ansible-core 2.19 prints the task's file after the message: not part of it.
            return " ".join(match.group(0).split()).split(" Origin: ")[0].rstrip("'")
    return "no message found"


def main() -> int:
    global _log_file
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--container", default="celery-stable-faults")
    parser.add_argument("--ansible-playbook", default=str(PROJECT / ".venv/bin/ansible-playbook"))
    parser.add_argument("--out", default=str(PROJECT / ".cache/fault-matrix.txt"))
    parser.add_argument("--log", default=str(PROJECT / ".cache/fault-matrix.log"))
    parser.add_argument(
        "--only",
        type=lambda v: set(v.split(",")),
        default=None,
        help="comma-separated row numbers (development)",
    )
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
