#!/usr/bin/env python3
"""The fleet scenario's run: the broker's refusals (plain TCP, TLS without the CA, the default
user, the workers' user beyond its rights), videos spread over two worker hosts under a capture
of the broker's traffic (nothing in clear), two reruns of site.yml that rotate the password and
the CA while videos render, then one worker host lost in the middle of a render, and the count
that nothing was lost.

Runs on the controller (molecule/fleet/verify.yml calls it) and drives the hosts as an operator
would, through tests/infra/hosts.py (`docker exec` only): the demo app's `video-renderer
submit/list` and the runtime's `celery-stable list/status/retry` on the broker host,
`systemctl`/`journalctl` on each host, and `docker kill` for the host that dies (a power cut: no
shutdown, no ExecStopPost, nothing on it runs again). A video's id is its Celery task's id, so
each video has two records read together: the app's (`video-renderer list --json`: queued,
processing, done or failed, its output or error) and the runtime's crash ledger (`celery-stable
list --json`: attempts, crashes, cause, the host that ran it). Prints what it saw and the
counts; exits 1 when a check fails.

Every wait is for a state that, once reached, stays (a video done in both records, a worker
idle and consuming), never a fixed sleep before a reading, so each check holds whatever the
moment it runs: during a recovery-timer run, a Beat job, a worker's recycle in place.

    molecule/fleet/fleet.py --broker celery-stable-fleet-broker \
        --workers celery-stable-fleet-worker1 celery-stable-fleet-worker2
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "infra"))
from hosts import Host, HostError, poll

FINAL = ("done", "failed")
RENDER_TASK = "video_renderer.render_video"
FLEET_ADDRESS = "10.213.5.10"
# The videos' record and the ledger's, read in one `docker exec` (one moment), split by a line.
SPLIT = "=== celery-stable list ==="

# Run with the host's python3 (stdin): one Redis conversation per case, over TCP, TLS with or
# without the CA, each answer (or the error that ended it) printed as a JSON line. The workers'
# password comes from the env file (root reads it), never from this script's command line.
PROBE = r"""
import json, socket, ssl, sys, urllib.parse
url = urllib.parse.urlsplit(
    next(l for l in open("/etc/celery-stable/celery-stable.env") if l.startswith("CELERY_BROKER_URL="))
    .split("=", 1)[1].strip().strip('"'))
host, port, password = url.hostname, url.port, urllib.parse.unquote(url.password or "")
def talk(name, commands, tls=True, ca="/etc/celery-stable/broker-ca.crt"):
    try:
        sock = socket.create_connection((host, port), 5)
        if tls:
            context = ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
            sock = context.wrap_socket(sock, server_hostname=host)
        answers = []
        for command in commands:
            sock.sendall(("*%d\r\n" % len(command) + "".join(
                "$%d\r\n%s\r\n" % (len(a.encode()), a) for a in command)).encode())
            answers.append(sock.recv(4096).decode(errors="replace").split("\r\n")[0])
            if not answers[-1]:
                answers[-1] = "(connection closed)"
                break
    except Exception as exc:
        answers = ["%s: %s" % (type(exc).__name__, exc)]
    print(json.dumps({"case": name, "answers": answers}))
cases = json.loads(sys.argv[1])
for name, case in cases.items():
    commands = [[password if a == "$PASSWORD" else a for a in c] for c in case["commands"]]
    talk(name, commands, tls=case.get("tls", True), ca=case.get("ca", "/etc/celery-stable/broker-ca.crt"))
"""

_out = None


def emit(line: str = "") -> None:
    print(line, flush=True)
    if _out is not None:
        _out.write(line + "\n")
        _out.flush()


def log(message: str) -> None:
    emit(f"[fleet {time.strftime('%H:%M:%S')}] {message}")


def spec(title: str, text: str, *, width: int = 640, height: int = 360, duration: float = 4.0,
         parts: int = 1, background: str = "#1e3a8a", fault: dict | None = None) -> dict[str, Any]:  # fmt: skip
    body: dict[str, Any] = {
        "title": title,
        "width": width,
        "height": height,
        "fps": 25,
        "slides": [
            {
                "text": text if parts == 1 else f"{text}, part {n}",
                "duration": duration,
                "background": background,
                "color": "#ffffff",
            }
            for n in range(1, parts + 1)
        ],
    }
    if fault:
        body["fault"] = fault
    return body


class Video:
    """One video as the operator sees it: the app's record and the runtime's, same id."""

    def __init__(self, video_id: str, video: dict | None, task: dict | None) -> None:
        self.id = video_id
        self.video = video or {"state": "missing", "error": ""}
        self.task = task or {"state": "missing", "host": "", "attempts": 0, "crashes": 0}

    @property
    def state(self) -> str:
        """The video's state once both records agree on it; else `<app>/<ledger>`."""
        video, task = self.video["state"], self.task["state"]
        same = video == task or (video == "processing" and task == "running")
        return video if same else f"{video}/{task}"

    @property
    def final(self) -> bool:
        return self.state in FINAL

    @property
    def host(self) -> str:
        return self.task.get("host") or ""

    @property
    def reason(self) -> str:
        return self.video.get("error") or ""

    def __str__(self) -> str:
        return (
            f"{self.id} {self.state} on {self.host or '-'} (attempts {self.task.get('attempts')}, "
            f"crashes {self.task.get('crashes')}, cause {self.task.get('cause') or '-'})"
        )


class Fleet:
    def __init__(self, broker: str, workers: list[str], inventory: str, password: str, ca_cert: str) -> None:
        self.inventory, self.password, self.ca_cert = inventory, password, ca_cert
        self.broker = Host(broker)
        self.workers = [Host(w) for w in workers]
        self.failures: list[str] = []
        self.accepted: list[str] = []

    @property
    def hosts(self) -> list[Host]:
        return [self.broker, *self.workers]

    def worker_names(self) -> list[str]:
        return [str(w) for w in self.workers]

    def check(self, ok: bool, what: str) -> bool:
        log(("ok: " if ok else "FAILED: ") + what)
        if not ok:
            self.failures.append(what)
        return ok

    # --- the operator's commands -------------------------------------------------------------

    def submit(self, specs: list[dict]) -> list[str]:
        """`video-renderer submit -` for each spec, all at once (one process each, in parallel),
        so a burst is queued within a second or two; the ids in the order of the specs."""
        script = (
            "set -e; dir=$(mktemp -d); n=0\n"
            'while IFS= read -r line; do n=$((n + 1)); printf "%s" "$line" > "$dir/$n.json"; done\n'
            'for i in $(seq 1 "$n"); do video-renderer submit - < "$dir/$i.json" > "$dir/$i.id" & done\n'
            "wait\n"
            'for i in $(seq 1 "$n"); do head -1 "$dir/$i.id"; done; rm -rf "$dir"'
        )
        stdin = "".join(json.dumps(s) + "\n" for s in specs)
        ids = self.broker.out(script, stdin=stdin).split()
        if len(ids) != len(specs) or not all(ids):
            raise HostError(f"video-renderer submit: {len(specs)} specs, got ids {ids}")
        self.accepted += ids
        return ids

    def videos(self, ids: list[str]) -> dict[str, Video]:
        """Both records of each id, read at one moment."""
        text = self.broker.out(
            f"video-renderer list --json --limit 1000; echo '{SPLIT}'; "
            f"celery-stable list --json --name {RENDER_TASK} --limit 1000"
        )
        apps, ledger = text.split(SPLIT)
        by_app = {v["id"]: v for v in json.loads(apps)}
        by_ledger = {t["id"]: t for t in json.loads(ledger)}
        return {i: Video(i, by_app.get(i), by_ledger.get(i)) for i in ids}

    def status(self, video_id: str) -> Video:
        """`video-renderer status ID --json` and `celery-stable status ID --json`."""
        text = self.broker.out(
            f"video-renderer status {video_id} --json; echo '{SPLIT}'; "
            f"celery-stable status {video_id} --json || echo null"
        )
        app, task = text.split(SPLIT)
        return Video(video_id, json.loads(app), json.loads(task))

    def wait(self, ids: list[str], timeout: float, until=None) -> dict[str, Video]:
        """Poll until `until(videos)` holds (default: every id final in both records), or the
        timeout; the last reading either way."""
        done = until or (lambda videos: all(v.final for v in videos.values()))
        last: dict[str, dict[str, Video]] = {}

        def reading() -> bool:
            last["videos"] = self.videos(ids)
            return done(last["videos"])

        if not poll(reading, timeout, interval=1):
            log(f"timeout after {timeout:.0f} s: {Counter(v.state for v in last['videos'].values())}")
        return last["videos"]

    def wait_idle(self, timeout: float = 60) -> None:
        """Until every worker's STATUS (sd_notify) says idle: consuming, not recycling."""

        def statuses() -> dict[str, str] | None:
            status = {str(w): w.prop("celery-worker@1.service", "StatusText") for w in self.workers}
            return status if all(s.startswith("idle") for s in status.values()) else None

        status = poll(statuses, timeout, interval=1)
        self.check(status is not None, f"both workers idle before the burst: {status}")

    # --- the checks --------------------------------------------------------------------------

    def platform(self) -> None:
        for host in self.hosts:
            line = host.out('echo "$(uname -m), $(/opt/celery-stable/venv/bin/python -V), system $(python3 -V)"')
            log(f"{host}: {line}")

    def beat_and_broker(self) -> None:
        beats = {str(h): h.sh("systemctl is-active celery-beat", check=False).stdout.strip() for h in self.hosts}
        workers = {str(h): h.sh("systemctl is-active celery-worker", check=False).stdout.strip() for h in self.hosts}
        log(f"celery-beat: {beats}")
        log(f"celery-worker: {workers}")
        self.check(
            [h for h, state in beats.items() if state == "active"] == [str(self.broker)],
            "Beat runs on exactly one host, the broker host",
        )
        self.check(
            all(workers[str(h)] == "active" for h in self.workers) and workers[str(self.broker)] != "active",
            "a worker on each worker host, none on the broker host",
        )
        listening = self.broker.out("ss -Hltn 'sport = :6379' | awk '{print $4}' | sort").split()
        log(f"redis listens on: {' '.join(listening)}")
        self.check(f"{FLEET_ADDRESS}:6379" in listening, "Redis listens on the fleet address")
        self.refusals()

    def probe(self, host: Host, cases: dict[str, dict]) -> dict[str, list[str]]:
        text = host.out(f"python3 - {shlex.quote(json.dumps(cases))}", stdin=PROBE)
        answers = {}
        for line in text.splitlines():
            record = json.loads(line)
            answers[record["case"]] = record["answers"]
            log(f"{host} -> {FLEET_ADDRESS}:6379 {record['case']}: {' | '.join(record['answers'])}")
        return answers

    def refusals(self) -> None:
        """Clients the broker must refuse, from a worker host: plain TCP, TLS without the CA,
        Redis's default user, and the workers' own user asking for more than it needs."""
        user = ["AUTH", "celery-stable", "$PASSWORD"]
        got = self.probe(
            self.workers[0],
            {
                "plain TCP, PING": {"tls": False, "commands": [["PING"]]},
                "TLS without the CA": {"ca": "", "commands": [["PING"]]},
                "TLS, no AUTH": {"commands": [["PING"]]},
                "TLS, default user with the password": {"commands": [["AUTH", "$PASSWORD"]]},
                "TLS, workers' user": {
                    "commands": [
                        user,
                        ["PING"],
                        ["KEYS", "*"],
                        ["FLUSHALL"],
                        ["CONFIG", "GET", "requirepass"],
                        ["GET", "someone-else:key"],
                    ]
                },
            },
        )
        plain = got["plain TCP, PING"][0]
        self.check(
            not plain.startswith("+PONG") and not plain.startswith("-"), f"plain TCP gets no Redis answer ({plain})"
        )
        self.check(
            "CERTIFICATE_VERIFY_FAILED" in got["TLS without the CA"][0],
            "a TLS client without the CA is refused (certificate verify failed)",
        )
        self.check(got["TLS, no AUTH"][0].startswith("-NOAUTH"), "no AUTH: NOAUTH")
        self.check(
            got["TLS, default user with the password"][0].startswith("-WRONGPASS"), "the default user is off: WRONGPASS"
        )
        auth, ping, *denied = got["TLS, workers' user"]
        self.check(auth == "+OK" and ping == "+PONG", "the workers' user logs in over TLS with the CA")
        self.check(
            len(denied) == 4 and all(a.startswith("-NOPERM") for a in denied),
            "the workers' user may not KEYS, FLUSHALL, CONFIG or touch another app's key: NOPERM",
        )

    def capture(self, during, secrets: list[str]) -> Any:
        """tcpdump on the broker host (every interface: the fleet's network and the local CLIs'
        loopback), port 6379, while `during()` runs; then the capture is searched for what must
        never cross in clear: the passwords, the task's name in the message headers, a video's
        title and the job store's and the ledger's key names."""
        self.broker.sh(
            "command -v tcpdump >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tcpdump >/dev/null"
        )
        pid = self.broker.out(
            "rm -f /tmp/fleet.pcap; nohup tcpdump -i any -U -w /tmp/fleet.pcap 'tcp port 6379' "
            ">/tmp/tcpdump.log 2>&1 & echo $!"
        )
        poll(lambda: "listening" in self.broker.out("cat /tmp/tcpdump.log"), 10, interval=0.2)
        result = during()
        self.broker.sh(f"kill -INT {pid}; while kill -0 {pid} 2>/dev/null; do sleep 0.1; done")
        stats = self.broker.out("grep -E 'captured|received|dropped' /tmp/tcpdump.log")
        log("tcpdump: " + "; ".join(stats.splitlines()))
        captured = int(stats.split(" packets captured")[0].split()[-1])
        self.check(
            "0 packets dropped by kernel" in stats and captured > 100,
            f"capture of {captured} packets, none dropped by the kernel",
        )
        markers = {f"password {n + 1}": p for n, p in enumerate(secrets)}
        markers |= {"task name": RENDER_TASK, "video title": "fleet spread",
                    "job store key": "video-renderer:video:", "ledger key": "celery-stable:task:"}  # fmt: skip
        found = {}
        for name, marker in markers.items():
            found[name] = int(self.broker.out(f"grep -c -a -F {shlex.quote(marker)} /tmp/fleet.pcap || true") or 0)
        log(f"packets with each marker in clear: {found}")
        self.check(not any(found.values()), "no password, message or job record in clear on the wire")
        return result

    def spread(self, count: int) -> Counter:
        # A burst while both workers consume: with one message prefetched each (solo, prefetch
        # 1, acks late), a worker busy with one video cannot take the next, so the other does.
        self.wait_idle()
        log(f"submitting {count} videos at once")
        ids = self.submit([spec(f"fleet spread {n}", f"video {n}") for n in range(1, count + 1)])
        videos = self.wait(ids, 300)
        done = Counter(v.host for v in videos.values() if v.state == "done")
        log(f"spread: {dict(done)} done of {count}")
        for video in videos.values():
            if video.state != "done":
                log(f"not done: {video} {video.reason}")
        self.check(sum(done.values()) == count, f"all {count} videos done (app and ledger)")
        self.check(all(done[w] > 0 for w in self.worker_names()), "both worker hosts rendered videos")
        self.check(
            all(v.task["attempts"] == 1 and v.task["crashes"] == 0 for v in videos.values()),
            "each in 1 attempt, 0 crashes",
        )
        return done

    def host_loss(self, behind: int) -> tuple[Counter, list[Video], str]:
        # 500 frames, slowed to 0.2 s each on its first attempt only (the demo's test-only fault
        # hooks, on in this scenario): the kill lands in the middle of a 100-s render, and the
        # attempt on the other host, once the lost host's task is put back, takes seconds.
        slow_fault = {"kind": "slow", "at_frame": 0, "seconds": 0.2, "on_attempts": 1}
        (slow,) = self.submit([spec("fleet slow", "a long render", duration=20.0, background="#7f1d1d",
                                    fault=slow_fault)])  # fmt: skip

        # Rendering on a worker host, in both records, and its progress reported.
        def rendering(videos: dict[str, Video]) -> bool:
            video = videos[slow]
            return (
                video.state == "processing" and video.host in self.worker_names() and bool(video.task.get("progress"))
            )

        video = self.wait([slow], 120, until=rendering)[slow]
        victim_name = video.host
        if not self.check(rendering({slow: video}), f"slow video {slow} is rendering on a worker host: {video}"):
            return Counter(), [], ""
        victim = next(w for w in self.workers if str(w) == victim_name)
        survivor = next(w for w in self.workers if w is not victim)
        ids = self.submit([spec(f"fleet behind {n}", f"queued {n}") for n in range(1, behind + 1)])
        video = self.status(slow)
        progress = video.task.get("progress", "")
        # "frame 250/15000" (celery_stable.progress(done, total, "frame")).
        frame, _, total = progress.rpartition(" ")[2].partition("/")
        if not self.check(
            video.state == "processing"
            and video.host == victim_name
            and frame.isdigit()
            and int(frame) < int(total or 0),
            f"{slow} still rendering on {victim} just before the kill ({video.state}, {progress or 'no progress'})",
        ):
            return Counter(), [], ""
        age = float(self.broker.out("date +%s.%N")) - float(video.task.get("heartbeat_at") or 0)
        log(f"docker kill {victim} mid-render of {slow} ({progress}, last heartbeat {age:.0f} s ago)")
        killed_at = time.time()
        subprocess.run(["docker", "kill", str(victim)], check=True, capture_output=True)
        # Resolved: the 4 by the survivor; the slow one put back as a crash by the survivor once
        # the lost host gave no sign of life for 3 heartbeats (15 s here), then done there.
        videos = self.wait([slow, *ids], 180)
        resolved_in = time.time() - killed_at
        done = Counter(v.host for v in videos.values() if v.state == "done")
        failed = [v for v in videos.values() if v.state == "failed"]
        log(f"after the kill: {dict(done)} done, {len(failed)} failed, all resolved {resolved_in:.0f} s after it")
        for video in videos.values():
            if video.state != "done":
                log(f"{video}: {video.reason or '-'}")
        self.check(
            all(videos[i].state == "done" and videos[i].host == str(survivor) for i in ids),
            f"the {behind} videos queued behind it were all rendered by {survivor}",
        )
        slow_video = videos[slow]
        finished = float(slow_video.task.get("finished_at") or 0)
        self.check(
            slow_video.state == "done"
            and slow_video.host == str(survivor)
            and slow_video.task.get("attempts") == 2
            and slow_video.task.get("crashes") == 1
            and 0 < finished - killed_at <= 60,
            f"the interrupted video {slow} was put back as a crash and done on {survivor} within 60 s of the kill "
            f"({slow_video}, done {finished - killed_at:.0f} s after it)",
        )
        for line in survivor.out(
            f"journalctl --no-pager -o cat -u 'celery-worker@*' | grep -F {slow} || true"
        ).splitlines():
            if "lost" in line:
                log(f"{survivor}: {line}")
        # The dead worker's message, unacked: the give-up discards it from the broker (were it
        # left, it would come back after the visibility timeout as a known delivery of a failed
        # task, acked and not run). Reported, not checked: either way nothing runs twice.
        copies = self.broker.out(
            "url=$(sed -n 's/^CELERY_BROKER_URL=\"\\(.*\\)\"$/\\1/p' /etc/celery-stable/celery-stable.env); "
            f'redis-cli --no-auth-warning -u "$url" hvals unacked | grep -c {slow} || true'
        )
        log(f"copies of {slow}'s message left in the broker's unacked hash: {copies}")
        # Which host's recovery job resolved it (the timer runs on every host left).
        for host in [self.broker, survivor]:
            lines = host.out(f"journalctl --no-pager -o short-iso -u celery-recovery.service | grep {slow} || true")
            if lines:
                log(f"{host} celery-recovery: {lines.splitlines()[-1]}")
        return done, failed, slow

    def retry(self, video_id: str) -> Video:
        """The operator's retry of the failed video: it goes back to the queue and the surviving
        worker takes it (its full render is not awaited: it takes minutes)."""
        log(f"operator: celery-stable retry {video_id}")
        log(self.broker.out(f"celery-stable retry {video_id}"))

        # Taken by a worker: the ledger runs attempt 2 (or is done) and the app's record says so.
        def taken(videos: dict[str, Video]) -> bool:
            video = videos[video_id]
            return video.state in ("processing", "done") and video.task["attempts"] >= 2

        video = self.wait([video_id], 60, until=taken)[video_id]
        self.check(
            taken({video_id: video}) and video.host in self.worker_names() and video.task["crashes"] == 0,
            f"after the retry: {video}",
        )
        return video

    # --- reruns of site.yml that change the broker's secrets ------------------------------

    def site(self, what: str, extra: dict[str, Any]) -> bool:
        site = Path(__file__).resolve().parents[2] / "playbooks" / "site.yml"
        args = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", self.inventory, str(site)]
        # What an operator reruns for a secret: the broker role, the workers' configuration (CA,
        # env file) and their reload; every preflight runs under any tags. All hosts at once: the
        # batches are the converge's to prove, and a new CA reaches every worker sooner.
        args += ["--tags", "celery_stable_broker,celery_stable_configure,celery_stable_run"]
        args += ["-e", json.dumps({**extra, "celery_stable_deploy_serial": ["100%"]})]
        log(f"rerun of site.yml: {what}")
        start = time.time()
        run = subprocess.run(args, capture_output=True, text=True)
        recap = run.stdout[run.stdout.rfind("PLAY RECAP") :].splitlines()
        for line in recap:
            if " ok=" in line:
                log("  " + " ".join(line.split()))
        ok = self.check(run.returncode == 0, f"{what}: rc {run.returncode} in {time.time() - start:.0f} s")
        if not ok:
            emit(run.stdout[-4000:] + run.stderr[-2000:])
        return ok

    def in_flight(self, label: str) -> list[str]:
        """A render running on a worker and 3 videos behind it, when a rerun starts."""
        slow = {"kind": "slow", "at_frame": 0, "seconds": 0.1, "on_attempts": 1}
        ids = self.submit([spec(f"{label} slow", "rendering during the rerun", duration=6.0, fault=slow)]
                          + [spec(f"{label} {n}", f"queued {n}") for n in range(1, 4)])  # fmt: skip
        self.wait(ids[:1], 60, until=lambda videos: videos[ids[0]].state == "processing")
        return ids

    def rotations(self, old: str, new: str, ca_cert: str) -> None:
        """A new password (the old one still accepted), then the old one dropped together with a
        new CA: two reruns, each while a video renders and three wait, and nothing lost."""
        ids = self.in_flight("new password")
        self.site("a new password, the old one still accepted",
                  {"celery_stable_broker_password": new, "celery_stable_broker_previous_passwords": [old]})  # fmt: skip
        got = self.probe(self.workers[1], {"old password": {"commands": [["AUTH", "celery-stable", old]]}})
        self.check(got["old password"] == ["+OK"], "the old password is still accepted meanwhile")

        ids += self.in_flight("new CA")
        ca = Path(ca_cert)
        old_ca = ca.parent.with_name(ca.parent.name + ".old")
        subprocess.run(["rm", "-rf", str(old_ca)], check=True)
        ca.parent.rename(old_ca)
        log(f"moved the CA and the certificate it signed aside, to {old_ca}: the rerun makes new ones")
        since = time.time()
        self.site("the old password dropped, a new CA and broker certificate", {"celery_stable_broker_password": new})
        self.trusted_across_the_switch(since)
        self.workers[0].sh("cat > /tmp/old-ca.crt", stdin=(old_ca / ca.name).read_text())
        got = self.probe(
            self.workers[0],
            {
                "old password": {"commands": [["AUTH", "celery-stable", old]]},
                "new password": {"commands": [["AUTH", "celery-stable", new], ["PING"]]},
                "the old CA": {"ca": "/tmp/old-ca.crt", "commands": [["PING"]]},
            },
        )
        self.check(got["old password"][0].startswith("-WRONGPASS"), "the old password is refused")
        self.check(got["new password"] == ["+OK", "+PONG"], "the new password logs in, verified by the new CA")
        self.check("CERTIFICATE_VERIFY_FAILED" in got["the old CA"][0], "a client with the old CA is refused")
        videos = self.wait(ids, 240)
        states = Counter(v.state for v in videos.values())
        attempts = Counter(v.task["attempts"] for v in videos.values())
        log(f"the {len(ids)} videos in flight during the reruns: {dict(states)}, attempts {dict(attempts)}")
        self.check(states["done"] == len(ids), f"all {len(ids)} videos in flight during the reruns done")

    def trusted_across_the_switch(self, since: float) -> None:
        """The broker's restart on its new certificate drops every client, before the workers'
        own play installs the new CA: they reconnect at once, and must trust it then (the old
        and new CA side by side, site.yml's trust play), not refuse it until their play."""
        units = "-u 'celery-worker@*' -u celery-beat -u celery-recovery"
        for host in self.workers:
            lines = host.out(f"journalctl --no-pager -o cat --since @{since:.0f} {units}").splitlines()
            refused = [line for line in lines if "CERTIFICATE_VERIFY_FAILED" in line]
            lost = next((n for n, line in enumerate(lines) if "Connection to broker lost" in line), None)
            reload = next((n for n, line in enumerate(lines) if "re-executing in place" in line), len(lines))
            back = lost is not None and any("Connected to rediss://" in line for line in lines[lost:reload])
            log(
                f"{host} during the CA rerun: broker connection lost {lost is not None}, back before its own"
                f" play's reload {back}, {len(refused)} refusals of the broker's certificate"
            )
            for line in refused[:3]:
                log(f"  {line[:300]}")
            self.check(not refused and back, f"{host} trusted the broker's new certificate as soon as it was served")

    def run(self, spread_count: int, behind: int) -> int:
        start = time.time()
        self.platform()
        self.beat_and_broker()
        spread = self.capture(lambda: self.spread(spread_count), [self.password])
        self.rotations(self.password, self.password + "-rotated", self.ca_cert)
        lost_done, failed, slow = self.host_loss(behind)
        final = self.videos(self.accepted)
        resolved = [i for i, v in final.items() if v.state == "done" or (v.state == "failed" and v.reason)]
        lost = len(self.accepted) - len(resolved)
        done_total = Counter(v.host for v in final.values() if v.state == "done")
        emit()
        emit("fleet counts (video-renderer list --json and celery-stable list --json)")
        rerun = len(self.accepted) - spread_count - 1 - behind
        emit(
            f"  accepted:            {len(self.accepted)} ({spread_count} spread, {rerun} during the reruns, "
            f"1 slow + {behind} behind it)"
        )
        for host in self.worker_names():
            emit(f"  done on {host}: {done_total[host]} (spread {spread[host]}, after the host loss {lost_done[host]})")
        for video in failed:
            emit(f"  failed with reason:  1 ({video.id}, cause {video.task.get('cause')}: {video.reason})")
        if not failed:
            emit("  failed with reason:  0")
        for video in final.values():
            if video.id not in resolved:
                emit(f"  unresolved:          {video}")
        emit(f"  lost:                {lost}")
        self.check(lost == 0, "lost = 0")
        if slow and final[slow].state == "failed":
            video = self.retry(slow)
            emit(
                f"  then retried by the operator: {slow} {video.state} on {video.host}, "
                f"attempt {video.task['attempts']}, {video.task.get('progress') or 'no progress yet'}"
            )
        emit(f"  ({time.time() - start:.0f} s)")
        if self.failures:
            emit("FAILED: " + "; ".join(self.failures))
            return 1
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--broker", required=True)
    parser.add_argument("--workers", nargs=2, required=True)
    parser.add_argument("--spread", type=int, default=8)
    parser.add_argument("--behind", type=int, default=4)
    parser.add_argument("--out", help="also write everything printed to this file")
    parser.add_argument("--inventory", required=True, help="the scenario's inventory, for the reruns")
    parser.add_argument("--password", required=True, help="the workers' broker password, to rotate")
    parser.add_argument("--ca-cert", required=True, help="the CA on the controller, to replace")
    args = parser.parse_args()
    global _out
    if args.out:
        _out = open(args.out, "w")  # noqa: SIM115 (kept open for the whole run)
    fleet = Fleet(args.broker, args.workers, args.inventory, args.password, args.ca_cert)
    return fleet.run(args.spread, args.behind)


if __name__ == "__main__":
    sys.exit(main())
