#!/usr/bin/env python3
"""The default scenario's proof of issue 13: two solo workers on one host, each on its own.

Runs on the controller (molecule/default/verify.yml calls it) against the deployed host, as an
operator would (`docker exec` only, through tests/infra/hosts.py): the demo app's
`video-renderer submit/status`, `systemctl`, `journalctl`, and a real redeploy of site.yml with
new app code. The host runs the demo app with its fault hooks on (host_vars), so that a render
can be slow or segfault for real. Checks, in order:

1. both instances consume: a batch of short videos is done by @1 and by @2;
2. one SIGSEGV'd restarts alone: @2 crashes mid-render and is restarted by systemd; @1 renders
   on (same PID, no restart, its video done on its first attempt), and the crashed video is
   done on its second attempt;
3. a recycle of one leaves the other working: @1 recycles in place (`systemctl reload
   celery-worker@1`: the same re-exec a recycle does) while @2 renders; @2 is untouched;
4. a deploy during a long render: site.yml with a new build of the app returns while the render
   goes on (the render is held until the deploy has returned, however long it took; its time is
   printed, not asserted: a speed is a benchmark's, never a timed test's); the render finishes on
   the old code, each instance re-executes in place on the new code (same PID, NRestarts
   unchanged), the next video runs the new code; nothing is lost.

Prints what it measured; exits 1 when a check fails.

    molecule/default/instances.py --host celery-stable-default -- ansible-playbook -i INV site.yml
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "infra"))
# The runtime's own name for an instance's unit (the controller runs the project's venv).
from celery_stable.instances import UNIT
from hosts import Host, first, poll, run_playbook

PROJECT = Path(__file__).resolve().parents[2]
INSTANCES = ("1", "2")
# What the new build of the app prints when it is imported: the proof that a worker runs it.
MARKER = "video-renderer new build loaded: {stamp}"


def unit(instance: str) -> str:
    return UNIT.format(instance)


def spec(title: str, seconds: float, fault: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "title": title,
        "width": 320,
        "height": 240,
        "fps": 25,
        "slides": [{"text": title, "duration": seconds, "background": "#1e3a8a", "color": "#ffffff"}],
    }
    if fault:
        body["fault"] = fault
    return body


def slow(seconds_per_frame: float) -> dict[str, Any]:
    return {"kind": "slow", "at_frame": 0, "seconds": seconds_per_frame}


class Run:
    def __init__(self, host: Host, deploy: list[str]) -> None:
        self.host = host
        self.deploy = deploy
        self.failures: list[str] = []
        self.submitted: list[str] = []

    def log(self, message: str) -> None:
        print(f"[instances {time.strftime('%H:%M:%S')}] {message}", flush=True)

    def expect(self, ok: object, what: str) -> None:
        if not ok:
            self.failures.append(what)
            self.log(f"FAILED: {what}")

    # --- the host, as an operator reads it ------------------------------------------------------

    def state(self, instance: str) -> dict[str, str]:
        return self.host.show(unit(instance), "ActiveState", "SubState", "MainPID", "NRestarts", "StatusText")

    def states(self) -> dict[str, dict[str, str]]:
        return {n: self.state(n) for n in INSTANCES}

    def submit(self, body: dict[str, Any]) -> str:
        name = f"/tmp/{body['title'].replace(' ', '-')}.json"
        self.host.sh(f"cat > {name}", stdin=json.dumps(body))
        video = self.host.out(f"video-renderer submit {name}").splitlines()[0].strip()
        self.submitted.append(video)
        return video

    def record(self, video: str) -> dict[str, Any]:
        return json.loads(self.host.out(f"video-renderer status {video} --json"))

    def wait_final(self, videos: list[str], timeout: float) -> dict[str, dict[str, Any]]:
        def final() -> dict[str, dict[str, Any]] | None:
            records = {v: self.record(v) for v in videos}
            return records if all(r["state"] in ("done", "failed") for r in records.values()) else None

        records = poll(final, timeout, 1.0)
        return records or {v: self.record(v) for v in videos}

    def wait_running(self, video: str, timeout: float = 60) -> dict[str, Any] | None:
        return poll(lambda: (r := self.record(video))["task"].get("state") == "running" and r, timeout, 0.5) or None

    def idle(self, instance: str) -> bool:
        return self.state(instance).get("StatusText", "").startswith("idle")

    # --- 1 -----------------------------------------------------------------------------------

    def both_consume(self) -> None:
        self.log("1. both instances consume")
        poll(lambda: all(self.idle(n) for n in INSTANCES), 60, 1.0)
        videos = [self.submit(spec(f"i1 video {n}", 1.0, slow(0.04))) for n in range(6)]
        records = self.wait_final(videos, 180)
        by = sorted(r["task"].get("instance", "?") for r in records.values())
        done = sum(r["state"] == "done" for r in records.values())
        self.log(f"{done}/{len(videos)} done; by instance: {by}")
        self.expect(done == len(videos), f"only {done}/{len(videos)} done")
        self.expect(set(by) == set(INSTANCES), f"not both instances rendered: {by}")

    # --- 2 -----------------------------------------------------------------------------------

    def one_crashes(self) -> None:
        self.log("2. one instance SIGSEGVs, the other renders on")
        poll(lambda: all(self.idle(n) for n in INSTANCES), 60, 1.0)
        before = self.states()
        since = time.time()
        long = self.submit(spec("i2 long", 1.0, slow(0.3)))  # 25 frames x 0.3 s
        running = self.wait_running(long)
        self.expect(running, "the long video never started")
        busy = running["task"]["instance"] if running else "1"
        other = next(n for n in INSTANCES if n != busy)
        crash = self.submit(spec("i2 segfault", 1.0, {"kind": "segfault", "at_frame": 5, "on_attempts": 1}))
        records = self.wait_final([long, crash], 120)
        after = self.states()
        entries = self.host.journal(since, "-u", unit(other))
        crashed_at = first(entries, r"Main process exited, code=(killed|dumped)")
        restarted_at = first(entries, r"Scheduled restart job", crashed_at or since)
        self.log(
            f"@{other} crashed ({'SIGSEGV seen' if crashed_at else 'no crash line'}), restarted "
            f"{restarted_at - crashed_at if crashed_at and restarted_at else float('nan'):.1f} s later; NRestarts "
            f"@{other} {before[other]['NRestarts']} -> {after[other]['NRestarts']}, @{busy} "
            f"{before[busy]['NRestarts']} -> {after[busy]['NRestarts']} (MainPID {before[busy]['MainPID']} -> "
            f"{after[busy]['MainPID']})"
        )
        long_rec, crash_rec = records[long], records[crash]
        self.log(
            f"long video {long_rec['state']} on @{long_rec['task'].get('instance')} attempt "
            f"{long_rec['task'].get('attempts')}; crashed video {crash_rec['state']}, attempts "
            f"{crash_rec['task'].get('attempts')}, crashes {crash_rec['task'].get('crashes')}"
        )
        self.expect(crashed_at, f"no crash of @{other} in its journal")
        self.expect(
            int(after[other]["NRestarts"]) == int(before[other]["NRestarts"]) + 1, f"@{other} not restarted once"
        )
        self.expect(after[busy]["MainPID"] == before[busy]["MainPID"], f"@{busy} lost its process")
        self.expect(after[busy]["NRestarts"] == before[busy]["NRestarts"], f"@{busy} was restarted")
        self.expect(
            long_rec["state"] == "done" and long_rec["task"].get("attempts") == 1,
            "the long video did not finish at once",
        )
        self.expect(
            crash_rec["state"] == "done" and crash_rec["task"].get("crashes") == 1,
            "the crashed video was not done after its one crash",
        )

    # --- 3 -----------------------------------------------------------------------------------

    def one_recycles(self) -> None:
        self.log("3. one instance recycles in place, the other renders on")
        poll(lambda: all(self.idle(n) for n in INSTANCES), 60, 1.0)
        before = self.states()
        since = time.time()
        long = self.submit(spec("i3 long", 1.0, slow(0.2)))
        running = self.wait_running(long)
        busy = running["task"]["instance"] if running else "1"
        other = next(n for n in INSTANCES if n != busy)
        self.host.sh(f"systemctl reload {unit(other)}")
        recycled = poll(lambda: first(self.host.journal(since, "-u", unit(other)), r"ready: consuming", since), 60, 0.5)
        records = self.wait_final([long], 120)
        after = self.states()
        busy_lines = self.host.journal(since, "-u", unit(busy))
        self.log(
            f"@{other} re-executed in place: MainPID {before[other]['MainPID']} -> {after[other]['MainPID']}, "
            f"consuming again {recycled - since if recycled else float('nan'):.1f} s after the reload; @{busy}: "
            f"MainPID {before[busy]['MainPID']} -> {after[busy]['MainPID']}, video {records[long]['state']}"
        )
        self.expect(recycled, f"@{other} did not consume again after its recycle")
        self.expect(after[other]["MainPID"] == before[other]["MainPID"], f"@{other} recycle changed its PID")
        self.expect(after[other]["NRestarts"] == before[other]["NRestarts"], f"@{other} recycle spent a restart")
        self.expect(after[busy]["MainPID"] == before[busy]["MainPID"], f"@{busy} was touched")
        self.expect(not first(busy_lines, r"re-executing in place"), f"@{busy} recycled too")
        self.expect(records[long]["state"] == "done", "the other instance's video was not done")

    # --- 4 -----------------------------------------------------------------------------------

    def deploy_during_render(self) -> None:
        self.log("4. a deploy of new app code during a long render")
        poll(lambda: all(self.idle(n) for n in INSTANCES), 60, 1.0)
        before = self.states()
        stamp = f"{time.time():.0f}"
        app = Path(tempfile.mkdtemp(prefix="celery-stable-app-")) / "video"
        shutil.copytree(PROJECT / "app" / "video", app, ignore=shutil.ignore_patterns("tests", "__pycache__"))
        tasks = app / "src" / "video_renderer" / "tasks.py"
        tasks.write_text(
            tasks.read_text(encoding="utf-8")
            + f"\nimport sys as _sys\n_sys.stderr.write({MARKER.format(stamp=stamp)!r} + '\\n')\n",
            encoding="utf-8",
        )
        # Held at its second frame until the deploy has returned (a file in the worker's working
        # directory, which its sandbox lets it see); its 600-s cap only ends a test that broke.
        release = f"{self.host.prop(unit('1'), 'WorkingDirectory')}/i4-release-{stamp}"
        hold = {"kind": "hold", "at_frame": 1, "path": release, "seconds": 600}
        long = self.submit(spec("i4 long", 1.0, hold))
        running = self.wait_running(long)
        self.expect(running, "the long video never started")
        since = time.time()
        started = time.monotonic()
        run = run_playbook([*self.deploy, "-e", f"celery_stable_app_source={app}"], cwd=str(PROJECT))
        took = time.monotonic() - started
        during = self.record(long)
        slowest = sorted(run.durations, reverse=True)[:6]
        self.log("its slowest tasks: " + "; ".join(f"{name} {secs:.1f} s" for secs, name in slowest))
        self.log(
            f"site.yml with a new app build: rc {run.rc}, {took:.1f} s, changed {run.changed}; the long video "
            f"was {during['state']} when it returned"
        )
        self.expect(run.rc == 0, f"the deploy failed: {run.task}: {run.message} {run.output[-2000:]}")
        self.expect(during["state"] == "processing", "the deploy waited for the render (or the render was lost)")
        self.host.sh(f"touch {release}")
        records = self.wait_final([long], 240)
        after = self.states()
        # The worker's own process printed it (not the check-app it runs before re-executing).
        loaded = {n: poll(lambda n=n: self.marker_at(n, after[n]["MainPID"], stamp, since), 60, 1.0) for n in INSTANCES}
        self.log(
            f"long video {records[long]['state']}, attempt {records[long]['task'].get('attempts')}; new code loaded "
            + ", ".join(
                f"@{n} {loaded[n] - since:.1f} s after the deploy began" if loaded[n] else f"@{n} never"
                for n in INSTANCES
            )
            + "; "
            + ", ".join(
                f"@{n} MainPID {before[n]['MainPID']} -> {after[n]['MainPID']}, NRestarts {before[n]['NRestarts']} -> "
                f"{after[n]['NRestarts']}"
                for n in INSTANCES
            )
        )
        self.expect(
            records[long]["state"] == "done" and records[long]["task"].get("attempts") == 1, "the long render was lost"
        )
        for n in INSTANCES:
            self.expect(loaded[n], f"@{n} never loaded the new code")
            self.expect(after[n]["MainPID"] == before[n]["MainPID"], f"@{n} changed PID")
            self.expect(after[n]["NRestarts"] == before[n]["NRestarts"], f"@{n} spent a restart")
        nxt = self.submit(spec("i4 next", 1.0))
        record = self.wait_final([nxt], 60)[nxt]
        instance = record["task"].get("instance", "")
        started_at = float(record.get("started_at") or 0)
        self.log(
            f"next video {record['state']} on @{instance}, started {started_at - since:.1f} s after the deploy began"
        )
        self.expect(record["state"] == "done", "the next video was not done")
        self.expect(
            instance in loaded and loaded[instance] and started_at > loaded[instance],
            "the next video did not run on the new code",
        )
        shutil.rmtree(app.parent, ignore_errors=True)

    # --- 5 -----------------------------------------------------------------------------------

    def stale_attempt(self) -> None:
        """Issue 10 item 4, on the two instances' one output directory: an attempt stalled
        (SIGSTOP) is given up as stuck and retried, the retry is done on the other instance,
        then the stalled one resumes and renders to the end: the winner's file survives, bit for
        bit, and the loser leaves nothing."""
        self.log("5. a stale attempt resumed after its retry won")
        poll(lambda: all(self.idle(n) for n in INSTANCES), 60, 1.0)
        fault = {"kind": "slow", "at_frame": 0, "seconds": 0.4, "on_attempts": 1}
        video = self.submit(spec("i5 stale", 1.0, fault))  # attempt 1: 25 frames x 0.4 s
        running = self.wait_running(video)
        self.expect(running, "the video never started")
        if not running:
            return
        stale = running["task"]["instance"]
        pid = self.state(stale)["MainPID"]
        time.sleep(2)  # a few frames into the temp file
        since = time.time()
        self.host.sh(f"kill -STOP {pid}")
        try:
            time.sleep(4)  # its last heartbeat is now more than 3 s old
            self.host.sh("celery-stable recover --stuck-after 3")
            self.host.sh(f"celery-stable retry {video}")
            record = self.wait_final([video], 60)[video]
            output = record.get("output") or ""
            before = self.host.out(f"stat -c '%i %s' {output} && sha256sum < {output}") if output else ""
        finally:
            self.host.sh(f"kill -CONT {pid}")
        dropped = poll(
            lambda: first(
                self.host.journal(since, "-u", unit(stale)), rf"video {video} rendered, but the video is done"
            ),
            60,
            1.0,
        )
        after = self.host.out(f"stat -c '%i %s' {output} && sha256sum < {output}") if output else ""
        left = self.host.out(f"ls -a {Path(output).parent} | grep -F {video} || true") if output else ""
        self.log(
            f"@{stale} stalled mid-render, given up, retried: video {record['state']} on "
            f"@{record['task'].get('instance')} (attempt {record['task'].get('attempts')}); @{stale} resumed and "
            f"{'dropped its output' if dropped else 'never said it dropped its output'}; the winner's file "
            f"{'unchanged (same inode, size, sha256)' if before and before == after else 'CHANGED'}; files of it: "
            f"{left.split()}"
        )
        self.expect(record["state"] == "done" and record["task"].get("attempts") == 2, "the retry was not done")
        self.expect(dropped, "the stale attempt never finished")
        self.expect(before and before == after, "the winner's file was replaced or removed")
        self.expect(left.split() == [Path(output).name], f"the loser left files: {left.split()}")

    def marker_at(self, instance: str, pid: str, stamp: str, since: float) -> float | None:
        for entry in self.host.journal_records(since, "-u", unit(instance)):
            if entry.get("_PID") == pid and MARKER.format(stamp=stamp) in entry["MESSAGE"]:
                return float(entry["t"])
        return None

    def lost(self) -> None:
        records = {v: self.record(v) for v in self.submitted}
        states = sorted(r["state"] for r in records.values())
        self.log(f"every video submitted: {len(states)}, states {dict((s, states.count(s)) for s in set(states))}")
        self.expect(all(s == "done" for s in states), "a video was lost or failed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("deploy", nargs=argparse.REMAINDER, help="-- then the ansible-playbook command")
    args = parser.parse_args(argv)
    deploy = args.deploy[1:] if args.deploy[:1] == ["--"] else args.deploy
    run = Run(Host(args.host), deploy)
    steps = (run.both_consume, run.one_crashes, run.one_recycles, run.deploy_during_render, run.stale_attempt, run.lost)
    for step in steps:
        step()
    print(f"{len(run.failures)} failure(s)" + "".join(f"\n  - {f}" for f in run.failures))
    return 1 if run.failures else 0


if __name__ == "__main__":
    sys.exit(main())
