#!/usr/bin/env python3
"""The fleet scenario's run: videos spread over two worker hosts, then one worker host lost in
the middle of a render, and the count that nothing was lost.

Runs on the controller (molecule/fleet/verify.yml calls it) and drives the hosts as an operator
would: the `celery-stable` CLI on the broker host, `systemctl`/`journalctl` on each host, and
`docker kill` for the host that dies (a power cut: no shutdown, no ExecStopPost, nothing on it
runs again). Prints what it saw and the counts; exits 1 when a check fails.

    molecule/fleet/fleet.py --broker celery-stable-fleet-broker \
        --workers celery-stable-fleet-worker1 celery-stable-fleet-worker2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter

FINAL = ("done", "failed")


_out = None


def emit(line: str = "") -> None:
    print(line, flush=True)
    if _out is not None:
        _out.write(line + "\n")
        _out.flush()


def log(message: str) -> None:
    emit(f"[fleet {time.strftime('%H:%M:%S')}] {message}")


class Fleet:
    def __init__(self, broker: str, workers: list[str]) -> None:
        self.broker = broker
        self.workers = workers
        self.failures: list[str] = []
        self.accepted: list[str] = []

    # --- plumbing ----------------------------------------------------------------------------

    def sh(self, host: str, command: str, stdin: str | None = None, check: bool = True) -> str:
        proc = subprocess.run(
            ["docker", "exec", "-i", host, "bash", "-c", command],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"{host}: `{command}` exited {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout.strip()

    def check(self, ok: bool, what: str) -> bool:
        log(("ok: " if ok else "FAILED: ") + what)
        if not ok:
            self.failures.append(what)
        return ok

    def submit(self, spec: dict) -> str:
        job_id = self.sh(self.broker, "celery-stable submit -", stdin=json.dumps(spec))
        self.accepted.append(job_id)
        return job_id

    def records(self) -> dict[str, dict]:
        listing = json.loads(self.sh(self.broker, "celery-stable list --json --limit 1000"))
        return {record["id"]: record for record in listing}

    def wait(self, ids: list[str], timeout: float, until=None) -> dict[str, dict]:
        """Poll until every id is done/failed (or `until(records)` holds), or the timeout."""
        deadline = time.monotonic() + timeout
        while True:
            records = self.records()
            mine = {i: records.get(i, {"id": i, "state": "missing"}) for i in ids}
            if until(mine) if until else all(r["state"] in FINAL for r in mine.values()):
                return mine
            if time.monotonic() > deadline:
                log(f"timeout after {timeout:.0f} s: {Counter(r['state'] for r in mine.values())}")
                return mine
            time.sleep(1)

    # --- the checks --------------------------------------------------------------------------

    def platform(self) -> None:
        for host in [self.broker, *self.workers]:
            line = self.sh(
                host,
                'echo "$(uname -m), $(/opt/celery-stable/venv/bin/python -V), system $(python3 -V)"',
            )
            log(f"{host}: {line}")

    def beat_and_broker(self) -> None:
        beats = {h: self.sh(h, "systemctl is-active celery-beat", check=False) for h in self.hosts}
        workers = {h: self.sh(h, "systemctl is-active celery-worker", check=False) for h in self.hosts}
        log(f"celery-beat: {beats}")
        log(f"celery-worker: {workers}")
        self.check(
            [h for h, state in beats.items() if state == "active"] == [self.broker],
            "Beat runs on exactly one host, the broker host",
        )
        self.check(
            all(workers[h] == "active" for h in self.workers) and workers[self.broker] != "active",
            "a worker on each worker host, none on the broker host",
        )
        listening = self.sh(self.broker, "ss -Hltn 'sport = :6379' | awk '{print $4}' | sort")
        log(f"redis listens on: {' '.join(listening.split())}")
        self.check(
            "10.213.5.10:6379" in listening.split(),
            "Redis listens on the fleet address",
        )
        # From a worker host, without the password: Redis answers NOAUTH (the CLI, which has
        # it in the env file, works: every submit below goes through it).
        anonymous = self.sh(
            self.workers[0],
            "python3 -",
            stdin=(
                "import socket\n"
                "s = socket.create_connection(('10.213.5.10', 6379), 5)\n"
                "s.sendall(b'PING\\r\\n')\n"
                "print(s.recv(200).decode().strip())\n"
            ),
            check=False,
        )
        log(f"{self.workers[0]} -> 10.213.5.10:6379 PING without the password: {anonymous}")
        self.check(
            anonymous.startswith("-NOAUTH"),
            "Redis refuses a client without the password",
        )

    @property
    def hosts(self) -> list[str]:
        return [self.broker, *self.workers]

    def spread(self, count: int) -> Counter:
        log(f"submitting {count} videos")
        ids = [
            self.submit(
                {
                    "title": f"fleet spread {n}",
                    "width": 640,
                    "height": 360,
                    "fps": 25,
                    "slides": [
                        {
                            "text": f"video {n}",
                            "duration": 2.0,
                            "background": "#1e3a8a",
                            "color": "#ffffff",
                        }
                    ],
                }
            )
            for n in range(1, count + 1)
        ]
        records = self.wait(ids, 300)
        done = Counter(r.get("host") for r in records.values() if r["state"] == "done")
        log(f"spread: {dict(done)} done of {count}")
        self.check(sum(done.values()) == count, f"all {count} videos done")
        self.check(all(done[h] > 0 for h in self.workers), "both worker hosts rendered videos")
        return done

    def host_loss(self, behind: int) -> tuple[Counter, list[dict], str]:
        slow = self.submit(
            {
                "title": "fleet slow 720p",
                "width": 1280,
                "height": 720,
                "fps": 25,
                # 10 minutes of video, 15000 frames: a render of a minute or more here, so the
                # kill lands in the middle of it.
                "slides": [
                    {
                        "text": f"a long render, part {n}",
                        "duration": 200.0,
                        "background": "#7f1d1d",
                        "color": "#ffffff",
                    }
                    for n in (1, 2, 3)
                ],
            }
        )
        # Wait until the slow video is rendering and has reported progress at least once.
        records = self.wait(
            [slow],
            120,
            until=lambda r: r[slow]["state"] == "processing" and r[slow].get("heartbeat_at"),
        )
        victim = records[slow].get("host")
        if not self.check(
            records[slow]["state"] == "processing" and victim in self.workers,
            f"slow video {slow} is rendering on a worker host ({victim})",
        ):
            return Counter(), [], ""
        survivor = next(h for h in self.workers if h != victim)
        ids = [
            self.submit(
                {
                    "title": f"fleet behind {n}",
                    "width": 640,
                    "height": 360,
                    "fps": 25,
                    "slides": [
                        {
                            "text": f"queued {n}",
                            "duration": 2.0,
                            "background": "#1e3a8a",
                            "color": "#ffffff",
                        }
                    ],
                }
            )
            for n in range(1, behind + 1)
        ]
        time.sleep(3)
        progress = self.records()[slow]
        if not self.check(
            progress["state"] == "processing",
            f"{slow} still rendering on {victim} just before the kill ({progress['state']})",
        ):
            return Counter(), [], ""
        log(
            f"docker kill {victim} mid-render of {slow} "
            f"(last progress {time.time() - progress['heartbeat_at']:.0f} s ago)"
        )
        killed_at = time.time()
        subprocess.run(["docker", "kill", victim], check=True, capture_output=True)
        records = self.wait([slow, *ids], 330)
        resolved_in = time.time() - killed_at
        done = Counter(r.get("host") for r in records.values() if r["state"] == "done")
        failed = [r for r in records.values() if r["state"] == "failed"]
        log(f"after the kill: {dict(done)} done, {len(failed)} failed, all resolved {resolved_in:.0f} s after it")
        for record in failed:
            log(f"failed {record['id']} (was on {record.get('host')}): {record.get('error')}")
        self.check(
            all(records[i]["state"] == "done" and records[i].get("host") == survivor for i in ids),
            f"the {behind} videos queued behind it were all rendered by {survivor}",
        )
        self.check(
            records[slow]["state"] == "failed" and bool(records[slow].get("error")),
            f"the interrupted video {slow} was failed with a reason",
        )
        # Which host's recovery job resolved it (the timer runs on every host).
        for host in [self.broker, survivor]:
            lines = self.sh(
                host,
                f"journalctl --no-pager -o short-iso -u celery-recovery.service | grep {slow} || true",
            )
            if lines:
                log(f"{host} celery-recovery: {lines.splitlines()[-1]}")
        return done, failed, slow

    def retry(self, job_id: str) -> dict:
        """The operator's retry of the failed video: it goes back to the queue and the surviving
        worker takes it (its full render is not awaited: it takes minutes)."""
        log(f"operator: celery-stable retry {job_id}")
        log(self.sh(self.broker, f"celery-stable retry {job_id}"))
        record = self.wait([job_id], 60, until=lambda r: r[job_id]["state"] in ("processing", *FINAL))[job_id]
        self.check(
            record["state"] in ("processing", "done") and record.get("host") in self.workers,
            f"{job_id} {record['state']} on {record.get('host')} after the retry (attempt {record.get('attempts')})",
        )
        return record

    def run(self, spread_count: int, behind: int) -> int:
        start = time.time()
        self.platform()
        self.beat_and_broker()
        spread = self.spread(spread_count)
        lost_done, failed, slow = self.host_loss(behind)
        records = self.records()
        final = {i: records.get(i, {"state": "missing"}) for i in self.accepted}
        resolved = [i for i, r in final.items() if r["state"] == "done" or (r["state"] == "failed" and r.get("error"))]
        lost = len(self.accepted) - len(resolved)
        done_total = Counter(r.get("host") for r in final.values() if r["state"] == "done")
        emit()
        emit("fleet counts")
        emit(f"  accepted:            {len(self.accepted)} ({spread_count} spread + 1 slow + {behind} behind it)")
        for host in self.workers:
            emit(f"  done on {host}: {done_total[host]} (spread {spread[host]}, after the host loss {lost_done[host]})")
        for record in failed:
            emit(f"  failed with reason:  1 ({record['id']}: {record.get('error')})")
        if not failed:
            emit("  failed with reason:  0")
        emit(f"  lost:                {lost}")
        self.check(lost == 0, "lost = 0")
        if slow and final.get(slow, {}).get("state") == "failed":
            record = self.retry(slow)
            emit(
                f"  then retried by the operator: {slow} {record['state']} on "
                f"{record.get('host')}, attempt {record.get('attempts')}"
            )
        emit(f"  ({time.time() - start:.0f} s)")
        if self.failures:
            emit("FAILED: " + "; ".join(self.failures))
            return 1
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", required=True)
    parser.add_argument("--workers", nargs=2, required=True)
    parser.add_argument("--spread", type=int, default=8)
    parser.add_argument("--behind", type=int, default=4)
    parser.add_argument("--out", help="also write everything printed to this file")
    args = parser.parse_args()
    global _out
    if args.out:
        _out = open(args.out, "w")  # noqa: SIM115 (kept open for the whole run)
    return Fleet(args.broker, args.workers).run(args.spread, args.behind)


if __name__ == "__main__":
    sys.exit(main())
