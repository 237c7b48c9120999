"""``video-renderer``: submit a video, show one, list them.

The runtime's ``celery-stable`` does the rest on the same id (the video id is its task's id):
``celery-stable retry <id>`` sends a failed video again, ``recover`` and ``reap`` resolve stuck
and crashed ones. Both commands read the same environment file, the same way.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from celery_stable.ledger import TaskRecord
from celery_stable.settings import BY_ENV, DEFAULT_ENV_FILE, ConfigError, effective_env
from kombu.utils.url import maybe_sanitize_url
from redis import exceptions as redis_errors

from .jobs import STATES, VideoRecord, VideoStore

EXIT_OK, EXIT_FAILED, EXIT_BAD, EXIT_BROKER, EXIT_UNKNOWN = 0, 1, 2, 3, 4
# Sending a message: a Redis restart of a few seconds is waited for, not reported.
SEND_RETRY_POLICY = {"max_retries": 5, "interval_start": 0, "interval_step": 0.5, "interval_max": 2}


class BrokerDown(Exception):
    """Redis is unreachable; the message names the URL (password hidden) and the fix."""


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _view(video: VideoRecord, task: TaskRecord | None) -> dict[str, Any]:
    """The video record, with what the runtime's ledger knows of its task."""
    data = video.to_dict()
    data["task"] = task.to_dict() if task is not None else None
    return data


def _print_video(video: VideoRecord, task: TaskRecord | None, as_json: bool) -> None:
    if as_json:
        print(json.dumps(_view(video, task), indent=2, sort_keys=True))
        return
    rows: list[tuple[str, object]] = [
        ("id", video.id),
        ("state", video.state),
        ("attempts", task.attempts if task else video.attempt),
        ("crashes", task.crashes if task else "-"),
        ("error", video.error),
        ("output", video.output),
        # The runtime's view of the task: running/queued/done/failed, and why when it ended badly.
        ("task", f"{task.state} {task.cause}".strip() if task else "-"),
        ("progress", task.progress if task else ""),
        ("host", task.host if task else ""),
        ("pid", task.pid if task else ""),
        ("created_at", _when(video.created_at)),
        ("started_at", _when(video.started_at)),
        ("heartbeat_at", _when(task.heartbeat_at if task else None)),
        ("finished_at", _when(video.finished_at)),
    ]
    for key, value in rows:
        print(f"{key:>12}: {value if value not in (None, '') else '-'}")


class Session:
    """One command's view of the deployment: the app, and the videos in its broker's Redis."""

    def __init__(self, env_file: Path) -> None:
        self.env_file = env_file
        self._store: VideoStore | None = None

    @property
    def broker_url(self) -> str:
        return os.environ["CELERY_BROKER_URL"].split(";")[0].strip()

    def broker_down(self, exc: Exception) -> BrokerDown:
        return BrokerDown(
            f"cannot reach the broker at {maybe_sanitize_url(self.broker_url)} ({exc}). Start "
            f"Redis (`systemctl start redis-server`) or fix CELERY_BROKER_URL in {self.env_file}."
        )

    @property
    def store(self) -> VideoStore:
        if self._store is None:
            from .celery_app import app  # noqa: PLC0415 (imported once the environment is set)

            # The operator is told at once that Redis is down (no retries for the first ping).
            probe = VideoStore.for_app(app, retry_seconds=0)
            try:
                probe.client.ping()
            except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
                raise self.broker_down(exc) from None
            self._store = VideoStore.for_app(app, retry_seconds=3)
        return self._store

    def send(self, video_id: str) -> None:
        from .celery_app import app  # noqa: PLC0415
        from .tasks import RENDER_TASK  # noqa: PLC0415

        # The video id is the task id: `celery-stable status|retry <video id>` then work on it.
        app.send_task(
            RENDER_TASK,
            args=[video_id],
            task_id=video_id,
            retry=True,
            retry_policy=SEND_RETRY_POLICY,
        )


def _read_spec(source: str) -> object:
    text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    return json.loads(text)


def cmd_submit(session: Session, args: argparse.Namespace) -> int:
    from .spec import SpecError, validate_spec  # noqa: PLC0415

    try:
        raw = _read_spec(args.spec)
    except OSError as exc:
        print(f"bad spec: cannot read {args.spec}: {exc.strerror}", file=sys.stderr)
        return EXIT_BAD
    except json.JSONDecodeError as exc:
        print(f"bad spec: {args.spec} is not valid JSON: {exc}", file=sys.stderr)
        return EXIT_BAD
    try:
        # Faults allowed here: only the worker that runs the video knows whether its hooks are on.
        validate_spec(raw, allow_fault=True)
    except SpecError as exc:
        print(f"bad spec: {exc} (nothing recorded)", file=sys.stderr)
        return EXIT_BAD
    assert isinstance(raw, dict)
    store = session.store
    record = store.create(raw)
    try:
        session.send(record.id)
    except Exception as exc:  # noqa: BLE001 (kombu raises many types; all mean "not sent")
        store.delete(record.id)
        raise BrokerDown(
            f"could not send the video to the broker at {maybe_sanitize_url(session.broker_url)} "
            f"({exc}); nothing recorded. Start Redis or fix CELERY_BROKER_URL in "
            f"{session.env_file}."
        ) from None
    print(record.id, flush=True)
    if args.wait is None:
        return EXIT_OK
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        video = store.get(record.id)
        if video is not None and video.state in ("done", "failed"):
            _print_video(video, store.ledger.get(record.id), as_json=False)
            return EXIT_OK if video.state == "done" else EXIT_FAILED
        time.sleep(0.2)
    print(f"{record.id} still not finished after {args.wait:g} s", file=sys.stderr)
    return EXIT_FAILED


def cmd_status(session: Session, args: argparse.Namespace) -> int:
    store = session.store
    video = store.get(args.id)
    if video is None:
        print(f"unknown video id {args.id}", file=sys.stderr)
        return EXIT_UNKNOWN
    _print_video(video, store.ledger.get(args.id), args.json)
    return EXIT_OK


def cmd_list(session: Session, args: argparse.Namespace) -> int:
    store = session.store
    videos = store.recent(state=args.state, limit=args.limit)
    tasks = {video.id: store.ledger.get(video.id) for video in videos}
    if args.json:
        print(json.dumps([_view(v, tasks[v.id]) for v in videos], indent=2, sort_keys=True))
        return EXIT_OK
    print(f"{'id':<14}{'state':<12}{'tries':>5}{'crash':>6}  {'created':<24}error")
    for video in videos:
        task = tasks[video.id]
        print(
            f"{video.id:<14}{video.state:<12}{task.attempts if task else video.attempt:>5}"
            f"{task.crashes if task else 0:>6}  {_when(video.created_at):<24}{video.error[:60]}"
        )
    counts = store.counts()
    print("videos: " + " ".join(f"{state}={counts[state]}" for state in STATES))
    return EXIT_OK


COMMANDS: dict[str, Callable[[Session, argparse.Namespace], int]] = {
    "submit": cmd_submit,
    "status": cmd_status,
    "list": cmd_list,
}


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--env-file",
        type=Path,
        default=argparse.SUPPRESS,
        help=f"environment file (default {DEFAULT_ENV_FILE}; read only when CELERY_BROKER_URL "
        "is not set), the one `celery-stable` reads",
    )
    parser = argparse.ArgumentParser(
        prog="video-renderer",
        parents=[common],
        description="Submit and inspect videos. `celery-stable retry ID` sends a failed one again.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    submit = sub.add_parser("submit", parents=[common], help="validate, record and enqueue")
    submit.add_argument("spec", help="JSON video spec file, or - for stdin")
    submit.add_argument(
        "--wait", type=float, metavar="SECONDS", help="wait for done/failed and print the record"
    )
    status = sub.add_parser("status", parents=[common], help="one video, with its task's attempts")
    status.add_argument("id")
    status.add_argument("--json", action="store_true")
    listing = sub.add_parser("list", parents=[common], help="videos, newest first")
    listing.add_argument("--state", choices=STATES)
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="video-renderer: %(message)s")
    env_file: Path = getattr(args, "env_file", DEFAULT_ENV_FILE)
    try:
        env = effective_env(os.environ, env_file)
    except ConfigError as exc:
        print(f"video-renderer: {exc}", file=sys.stderr)
        return EXIT_BAD
    # Celery reads the broker from the environment, as in the units; the env file's lines fill in
    # what the shell does not set, and an unset broker is the runtime's documented default.
    os.environ.update({key: value for key, value in env.items() if key not in os.environ})
    os.environ.setdefault("CELERY_BROKER_URL", str(BY_ENV["CELERY_BROKER_URL"].default))
    session = Session(env_file)
    try:
        return COMMANDS[args.command](session, args)
    except ConfigError as exc:
        print(f"video-renderer: {exc}", file=sys.stderr)
        return EXIT_BAD
    except BrokerDown as exc:
        print(f"video-renderer: {exc}", file=sys.stderr)
        return EXIT_BROKER
    except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
        print(f"video-renderer: {session.broker_down(exc)}", file=sys.stderr)
        return EXIT_BROKER
