"""``celery-stable``: the operator's and systemd's command line, for any app's tasks."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from celery import Celery
from kombu.utils.url import maybe_sanitize_url
from redis import exceptions as redis_errors

from . import instances
from .attach import load_app
from .ledger import STATES, Ledger, TaskRecord, redis_client
from .reaper import DeathCause, reap
from .recovery import recover
from .resolution import Context, send_again
from .sdnotify import Notifier
from .settings import (
    DEFAULT_ENV_FILE,
    ConfigError,
    Settings,
    SystemdEnv,
    check_file,
    command_problems,
    effective_env,
    load_env_file,
)

log = logging.getLogger("celery_stable.cli")

EXIT_OK, EXIT_FAILED, EXIT_BAD, EXIT_BROKER, EXIT_UNKNOWN, EXIT_NOT_FAILED = 0, 1, 2, 3, 4, 5
# How long a command keeps retrying Redis: the reap hook may run while Redis restarts.
RETRY_SEC = {"reap": 30.0, "recover": 10.0}
# Commands that act on the app (its result backend, its give-up task): they load it.
NEEDS_APP = ("reap", "recover", "retry")


class BrokerDown(Exception):
    """Redis is unreachable; the message names the URL and the fix."""


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _print_record(record: TaskRecord, as_json: bool) -> None:
    if as_json:
        print(json.dumps(record.to_dict(), indent=2, sort_keys=True))
        return
    data = record.to_dict()
    for key in ("id", "name", "state", "attempts", "crashes", "cause", "reason", "progress",
                "host", "pid", "time_limit"):  # fmt: skip
        print(f"{key:>12}: {data[key] if data[key] not in (None, '') else '-'}")
    for key in ("started_at", "heartbeat_at", "finished_at"):
        print(f"{key:>12}: {_when(data[key])}")


class Session:
    """One command's view of the deployment: settings, the app (when needed), the ledger."""

    def __init__(self, settings: Settings, env_file: Path, command: str) -> None:
        self.settings = settings
        self.env_file = env_file
        self.command = command
        self._app: Celery | None = None
        self._app_loaded = False
        self._ledger: Ledger | None = None

    @property
    def app(self) -> Celery | None:
        """The operator's app, or None (said once) when it cannot be imported here."""
        if not self._app_loaded:
            self._app_loaded = True
            try:
                self._app = load_app(self.settings)
            except ConfigError as exc:
                log.warning("%s; the ledger is used without it (the app is told later)", exc)
        return self._app

    @property
    def broker_url(self) -> str:
        app = self.app if self.command in NEEDS_APP else None
        url = (app.conf.broker_url if app is not None else None) or self.settings.broker_url
        return str(url).split(";")[0].strip()

    def broker_down(self, exc: Exception) -> BrokerDown:
        return BrokerDown(
            f"cannot reach the broker at {maybe_sanitize_url(self.broker_url)} ({exc}). Start "
            f"Redis (`systemctl start redis-server`) or fix CELERY_BROKER_URL in {self.env_file}."
        )

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            # An operator is told at once that Redis is down; the hooks wait a little for it.
            patience = RETRY_SEC.get(self.command, 0.0)
            try:
                redis_client(self.broker_url, retry_seconds=patience).ping()
            except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
                raise self.broker_down(exc) from None
            client = redis_client(self.broker_url, retry_seconds=max(patience, 3.0))
            self._ledger = Ledger(client, keep=self.settings.ledger_keep)
        return self._ledger

    def context(self) -> Context:
        app = self.app
        connection_app = app or Celery(
            "celery-stable", broker=self.broker_url, set_as_current=False
        )
        return Context(self.ledger, self.settings, app, connection_app.connection_for_write)


def cmd_status(session: Session, args: argparse.Namespace) -> int:
    record = session.ledger.get(args.id)
    if record is None:
        print(f"unknown task id {args.id}", file=sys.stderr)
        return EXIT_UNKNOWN
    _print_record(record, args.json)
    return EXIT_OK


def cmd_list(session: Session, args: argparse.Namespace) -> int:
    records = session.ledger.recent(state=args.state, name=args.name, limit=args.limit)
    if args.json:
        print(json.dumps([record.to_dict() for record in records], indent=2, sort_keys=True))
        return EXIT_OK
    print(f"{'id':<38}{'state':<9}{'tries':>5}{'crash':>6}  {'name':<32}reason")
    for record in records:
        print(
            f"{record.id:<38}{record.state:<9}{record.attempts:>5}{record.crashes:>6}  "
            f"{record.name[:31]:<32}{record.reason[:70]}"
        )
    counts = session.ledger.counts()
    print("in the ledger: " + " ".join(f"{state}={counts[state]}" for state in STATES))
    return EXIT_OK


def cmd_retry(session: Session, args: argparse.Namespace) -> int:
    ctx = session.context()
    record = ctx.ledger.get(args.id)
    if record is None:
        print(f"unknown task id {args.id}", file=sys.stderr)
        return EXIT_UNKNOWN
    if record.state != "failed" or not record.payload:
        why = "its message was not kept" if record.state == "failed" else f"it is {record.state}"
        print(f"task {args.id} cannot be sent again: {why}; only failed tasks are", file=sys.stderr)
        return EXIT_NOT_FAILED
    if not send_again(ctx, record, reset_crashes=True):
        print(f"task {args.id} changed meanwhile; run the command again", file=sys.stderr)
        return EXIT_NOT_FAILED
    print(f"{args.id} ({record.name}): its original message is back on its queue")
    return EXIT_OK


def cmd_recover(session: Session, args: argparse.Namespace) -> int:
    stuck_after = args.stuck_after or session.settings.stuck_after_sec
    changes = recover(session.context(), stuck_after, my_host=socket.gethostname())
    for change in changes:
        print(change)
    if not changes:
        print(f"nothing to recover (no task without a heartbeat for more than {stuck_after:g} s)")
    return EXIT_OK


def cmd_reap(session: Session, _args: argparse.Namespace) -> int:
    cause = DeathCause.from_systemd(session.settings.systemd)
    host = socket.gethostname()
    changes = reap(session.context(), cause, host=host, instance=session.settings.instance)
    for change in changes:
        print(change)
    if not changes:
        print(f"nothing to reap on {host} ({cause.detail})")
    return EXIT_OK


def cmd_check_app(session: Session, _args: argparse.Namespace) -> int:
    """Whether a worker would start on this environment: its settings and its app load."""
    try:
        app = load_app(session.settings)
        # What the worker imports before it consumes: the app's task modules (`include`...).
        app.loader.import_default_modules()
    except ConfigError as exc:
        print(f"celery-stable: {exc}", file=sys.stderr)
        return EXIT_BAD
    except Exception as exc:  # noqa: BLE001 (whatever a task module raises, say it)
        print(
            f"celery-stable: the tasks of {session.settings.app_module!r} do not import: "
            f"{type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
        return EXIT_BAD
    # The worker's own refusal at start: a reload checked by this command must not re-execute
    # into an image that exits at once.
    path = os.environ.get("PATH") or os.defpath
    problems = command_problems(session.settings.required_commands, path)
    if problems:
        print(f"celery-stable: {' '.join(problems)}", file=sys.stderr)
        return EXIT_BAD
    names = sorted(name for name in app.tasks if not name.startswith("celery."))
    print(f"{session.settings.app_module}: ok, {len(names)} task(s): {' '.join(names)}")
    return EXIT_OK


def cmd_instances(env_file: Path, names: list[str]) -> int:
    """celery-worker.service's ExecStart: the host's workers as one unit, and the host's sign
    of life in the ledger (a worker that hangs does not make its host look lost)."""
    logging.getLogger().setLevel(logging.INFO)
    beacon = None
    try:
        settings = Settings.from_env(effective_env(os.environ, env_file), str(env_file))
        ledger = Ledger(
            redis_client(settings.broker_url, retry_seconds=0), keep=settings.ledger_keep
        )
        host = socket.gethostname()

        def beacon() -> None:
            try:
                ledger.host_beacon(host)
            except redis_errors.RedisError as exc:
                log.warning("no sign of life written (Redis unreachable): %s", exc)

    except ConfigError as exc:
        log.warning("%s; the host's sign of life is left to its workers", exc)
    instances.watch(
        names or instances.wanted_by_group,
        Notifier(SystemdEnv.from_env(os.environ).notify_socket),
        beacon=beacon,
    )
    return EXIT_OK


def cmd_check_config(env_file: Path) -> int:
    problems = check_file(env_file)
    if not problems:
        # The commands as a worker started on this file would look them up: on the file's PATH
        # if it sets one, else on this process's (the role's validate runs it on the host).
        env = load_env_file(env_file)
        settings = Settings.from_env(env, str(env_file))
        path = env.get("PATH") or os.environ.get("PATH") or os.defpath
        problems = command_problems(settings.required_commands, path)
    for problem in problems:
        print(f"celery-stable: {problem}", file=sys.stderr)
    if problems:
        return EXIT_BAD
    print(f"{env_file}: ok")
    return EXIT_OK


COMMANDS: dict[str, Callable[[Session, argparse.Namespace], int]] = {
    "status": cmd_status,
    "list": cmd_list,
    "retry": cmd_retry,
    "recover": cmd_recover,
    "reap": cmd_reap,
    "check-app": cmd_check_app,
}


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--env-file",
        type=Path,
        default=argparse.SUPPRESS,
        help=f"environment file (default {DEFAULT_ENV_FILE}; read only when CELERY_BROKER_URL "
        "is not set)",
    )
    parser = argparse.ArgumentParser(
        prog="celery-stable",
        parents=[common],
        description="The crash ledger of a celery-stable worker: every task of the app.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    # Listed for --help only: main() hands `worker` and its arguments to Celery's own command.
    sub.add_parser(
        "worker",
        add_help=False,
        help="the worker the units run: `celery -A celery_stable.attach worker` without the rest "
        "of Celery's command line (`celery-stable worker --help`: Celery's worker options)",
    )
    listing = sub.add_parser("list", parents=[common], help="tasks of the ledger, newest first")
    listing.add_argument("--state", choices=STATES)
    listing.add_argument("--name", help="only tasks of this name")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    status = sub.add_parser("status", parents=[common], help="one task, by its Celery id")
    status.add_argument("id")
    status.add_argument("--json", action="store_true")
    retry = sub.add_parser(
        "retry", parents=[common], help="send a failed task's original message again"
    )
    retry.add_argument("id")
    recover_cmd = sub.add_parser(
        "recover", parents=[common], help="give up stuck tasks; tell the app; resend lost messages"
    )
    recover_cmd.add_argument("--stuck-after", type=float, metavar="SEC")
    sub.add_parser(
        "reap", parents=[common], help="ExecStopPost hook: resolve the tasks of dead workers here"
    )
    sub.add_parser("check-config", parents=[common], help="validate an environment file")
    sub.add_parser(
        "check-app", parents=[common], help="load the app as a worker would (settings, import)"
    )
    watch = sub.add_parser(
        "instances",
        parents=[common],
        help="celery-worker.service: every celery-worker@N of this host in one STATUS line",
    )
    watch.add_argument(
        "names",
        nargs="*",
        metavar="N",
        help="the instances (celery-worker@N); none: those celery-worker.service wants, each round",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["worker"]:
        # Celery's worker command and its options, parsed by Celery (click), not here.
        from .worker_cli import main as worker_main  # noqa: PLC0415

        return worker_main(argv[1:])
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Every command but ``worker``, its arguments parsed."""
    logging.basicConfig(level=logging.WARNING, format="celery-stable: %(message)s")
    env_file: Path = getattr(args, "env_file", DEFAULT_ENV_FILE)
    if args.command == "check-config":
        return cmd_check_config(env_file)
    if args.command == "instances":
        return cmd_instances(env_file, args.names)
    try:
        env = effective_env(os.environ, env_file)
        settings = Settings.from_env(env, str(env_file))
    except ConfigError as exc:
        print(f"celery-stable: {exc}", file=sys.stderr)
        return EXIT_BAD
    # The app reads the environment the units give it (CELERY_BROKER_URL...), file included.
    os.environ.update({key: value for key, value in env.items() if key not in os.environ})
    session = Session(settings, env_file, args.command)
    try:
        return COMMANDS[args.command](session, args)
    except BrokerDown as exc:
        print(f"celery-stable: {exc}", file=sys.stderr)
        return EXIT_BROKER
    except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
        print(f"celery-stable: {session.broker_down(exc)}", file=sys.stderr)
        return EXIT_BROKER
