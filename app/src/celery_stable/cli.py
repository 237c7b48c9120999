"""``celery-stable``: the operator's and systemd's command line (docs/contract.md, "CLI")."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from kombu.utils.url import maybe_sanitize_url
from redis import exceptions as redis_errors

from .jobs import JobRecord, JobStore, redis_client
from .reaper import DeathCause, reap
from .recovery import recover
from .settings import DEFAULT_ENV_FILE, ConfigError, Settings, effective_env, load_env_file
from .spec import SpecError, validate_spec

EXIT_OK, EXIT_FAILED, EXIT_BAD, EXIT_BROKER, EXIT_UNKNOWN, EXIT_NOT_FAILED = 0, 1, 2, 3, 4, 5
# How long a CLI command keeps retrying Redis: the reap hook may run while Redis restarts.
CLI_RETRY_SEC = {"reap": 30.0, "recover": 10.0}


class BrokerDown(Exception):
    """Redis is unreachable; the message names the URL and the fix."""


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _print_record(record: JobRecord, as_json: bool) -> None:
    if as_json:
        print(json.dumps(record.to_dict(), indent=2, sort_keys=True))
        return
    data = record.to_dict()
    for key in ("id", "state", "attempts", "crashes", "error", "output", "host", "pid"):
        print(f"{key:>12}: {data[key] if data[key] not in (None, '') else '-'}")
    for key in ("created_at", "queued_at", "started_at", "heartbeat_at", "finished_at"):
        print(f"{key:>12}: {_when(data[key])}")


class Context:
    def __init__(self, settings: Settings, env_file: Path, command: str) -> None:
        self.settings = settings
        self.env_file = env_file
        self.command = command
        self._store: JobStore | None = None
        self._enqueue: Callable[[str, str], None] | None = None

    @property
    def safe_url(self) -> str:
        return str(maybe_sanitize_url(self.settings.broker_url))

    def broker_down(self, exc: Exception) -> BrokerDown:
        return BrokerDown(
            f"cannot reach the broker at {self.safe_url} ({exc}). Start Redis "
            f"(`systemctl start redis-server`) or fix CELERY_STABLE_BROKER_URL in "
            f"{self.env_file}."
        )

    @property
    def store(self) -> JobStore:
        if self._store is None:
            # An operator is told at once that Redis is down; the hooks wait a little for it.
            patience = CLI_RETRY_SEC.get(self.command, 0.0)
            try:
                redis_client(self.settings.broker_url, retry_seconds=patience).ping()
            except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
                raise self.broker_down(exc) from None
            retry = max(patience, 3.0)
            self._store = JobStore(redis_client(self.settings.broker_url, retry_seconds=retry))
        return self._store

    def enqueue(self, job_id: str, token: str) -> None:
        if self._enqueue is None:
            from .celery_app import create_app  # noqa: PLC0415 (Celery only when sending)

            self._enqueue = create_app(self.settings).enqueue  # type: ignore[attr-defined]
        self._enqueue(job_id, token)


def cmd_submit(ctx: Context, args: argparse.Namespace) -> int:
    try:
        text = sys.stdin.read() if args.spec == "-" else Path(args.spec).read_text()
        raw = json.loads(text)
    except OSError as exc:
        print(f"bad spec: cannot read {args.spec}: {exc.strerror}", file=sys.stderr)
        return EXIT_BAD
    except json.JSONDecodeError as exc:
        print(f"bad spec: {args.spec} is not valid JSON: {exc}", file=sys.stderr)
        return EXIT_BAD
    try:
        validate_spec(raw, allow_fault=True)
    except SpecError as exc:
        print(f"bad spec: {exc} (nothing recorded)", file=sys.stderr)
        return EXIT_BAD
    store = ctx.store
    record = store.create(raw)
    try:
        ctx.enqueue(record.id, record.token)
    except Exception as exc:  # noqa: BLE001 (kombu raises many types; all mean "not sent")
        store.delete(record.id)
        raise BrokerDown(
            f"could not enqueue the video ({exc}); nothing recorded. Check the "
            f"broker at {ctx.safe_url}."
        ) from None
    print(record.id)
    if args.wait is None:
        return EXIT_OK
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        current = store.get(record.id)
        if current is not None and current.state in ("done", "failed"):
            _print_record(current, as_json=False)
            return EXIT_OK if current.state == "done" else EXIT_FAILED
        time.sleep(0.2)
    print(f"{record.id} still not finished after {args.wait:g} s", file=sys.stderr)
    return EXIT_FAILED


def cmd_status(ctx: Context, args: argparse.Namespace) -> int:
    record = ctx.store.get(args.id)
    if record is None:
        print(f"unknown video id {args.id}", file=sys.stderr)
        return EXIT_UNKNOWN
    _print_record(record, args.json)
    return EXIT_OK


def cmd_list(ctx: Context, args: argparse.Namespace) -> int:
    records = ctx.store.recent(state=args.state, limit=args.limit)
    if args.json:
        print(json.dumps([record.to_dict() for record in records], indent=2, sort_keys=True))
        return EXIT_OK
    print(f"{'id':<14}{'state':<12}{'tries':>5}{'crash':>6}  {'created':<24}error")
    for record in records:
        print(
            f"{record.id:<14}{record.state:<12}{record.attempts:>5}{record.crashes:>6}  "
            f"{_when(record.created_at):<24}{record.error[:60]}"
        )
    return EXIT_OK


def cmd_retry(ctx: Context, args: argparse.Namespace) -> int:
    store = ctx.store
    record = store.get(args.id)
    if record is None:
        print(f"unknown video id {args.id}", file=sys.stderr)
        return EXIT_UNKNOWN
    outcome, token = store.requeue(
        args.id, record.token, states=("failed",), extra={"crashes": 0, "output": ""}
    )
    if not outcome.ok:
        print(
            f"video {args.id} is {outcome.state}, not failed: only failed videos are retried",
            file=sys.stderr,
        )
        return EXIT_NOT_FAILED
    try:
        ctx.enqueue(args.id, token)
    except Exception as exc:  # noqa: BLE001 (kombu raises many types; all mean "not sent")
        store.fail(args.id, token, f"retry could not be enqueued ({exc})", states=("queued",))
        raise BrokerDown(f"could not enqueue video {args.id} ({exc}); it stays failed") from None
    print(f"{args.id}: queued again")
    return EXIT_OK


def cmd_recover(ctx: Context, args: argparse.Namespace) -> int:
    stuck_after = args.stuck_after or ctx.settings.stuck_after_sec
    changes = recover(ctx.store, stuck_after, enqueue=ctx.enqueue, queue=ctx.settings.queue)
    for change in changes:
        print(change)
    if not changes:
        print(
            f"no stuck video (no progress for more than {stuck_after:g} s) "
            "and no queued video without its message"
        )
    return EXIT_OK


def cmd_reap(ctx: Context, _args: argparse.Namespace) -> int:
    cause = DeathCause.from_systemd(ctx.settings.systemd)
    changes = reap(ctx.store, ctx.settings, cause, ctx.enqueue, host=socket.gethostname())
    for change in changes:
        print(change)
    if not changes:
        print(f"nothing to reap on {socket.gethostname()} ({cause.detail})")
    return EXIT_OK


def cmd_check_config(env_file: Path) -> int:
    try:
        settings = Settings.from_env(load_env_file(env_file))
    except ConfigError as exc:
        print(f"celery-stable: {exc}", file=sys.stderr)
        return EXIT_BAD
    print(
        f"{env_file}: ok (queue {settings.queue}, time limit {settings.time_limit_sec} s, "
        f"recycle after {settings.max_tasks_per_child} tasks or "
        f"{settings.max_memory_per_child_kb} KiB RSS)"
    )
    return EXIT_OK


COMMANDS: dict[str, Callable[[Context, argparse.Namespace], int]] = {
    "submit": cmd_submit,
    "status": cmd_status,
    "list": cmd_list,
    "retry": cmd_retry,
    "recover": cmd_recover,
    "reap": cmd_reap,
}


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--env-file",
        type=Path,
        default=argparse.SUPPRESS,
        help=f"environment file (default {DEFAULT_ENV_FILE}; read only when "
        "CELERY_STABLE_BROKER_URL is not set)",
    )
    parser = argparse.ArgumentParser(
        prog="celery-stable",
        parents=[common],
        description="Submit and manage videos of celery-stable.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    submit = sub.add_parser("submit", parents=[common], help="validate, record and enqueue")
    submit.add_argument("spec", help="JSON job spec file, or - for stdin")
    submit.add_argument(
        "--wait", type=float, metavar="SECONDS", help="wait for done/failed and print the record"
    )
    status = sub.add_parser("status", parents=[common], help="show one video")
    status.add_argument("id")
    status.add_argument("--json", action="store_true")
    listing = sub.add_parser("list", parents=[common], help="list videos, newest first")
    listing.add_argument("--state", choices=["queued", "processing", "done", "failed"])
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    retry = sub.add_parser("retry", parents=[common], help="queue a failed video again")
    retry.add_argument("id")
    recover_cmd = sub.add_parser(
        "recover", parents=[common], help="fail processing videos that stopped making progress"
    )
    recover_cmd.add_argument("--stuck-after", type=float, metavar="SEC")
    sub.add_parser(
        "reap",
        parents=[common],
        help="ExecStopPost hook: resolve videos held by dead workers of this host",
    )
    sub.add_parser("check-config", parents=[common], help="validate an environment file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="celery-stable: %(message)s")
    env_file: Path = getattr(args, "env_file", DEFAULT_ENV_FILE)
    if args.command == "check-config":
        return cmd_check_config(env_file)
    try:
        settings = Settings.from_env(effective_env(os.environ, env_file))
    except ConfigError as exc:
        print(f"celery-stable: {exc}", file=sys.stderr)
        return EXIT_BAD
    ctx = Context(settings, env_file, args.command)
    try:
        return COMMANDS[args.command](ctx, args)
    except BrokerDown as exc:
        print(f"celery-stable: {exc}", file=sys.stderr)
        return EXIT_BROKER
    except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
        print(f"celery-stable: {ctx.broker_down(exc)}", file=sys.stderr)
        return EXIT_BROKER
