"""The runtime's settings: the one table of every variable, and the only reader of the environment.

Standard library only: the role's preflight runs this file on the controller, before any change,
against the environment file it is about to write (``python3 settings.py check FILE``), so a bad
inventory value is refused with the same rule and message the worker would give.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_ENV_FILE = Path("/etc/celery-stable/celery-stable.env")

# Redis must never hand a running task to a second worker: the broker's visibility timeout
# outlives the longest hard limit by this much (docs/contract.md, "Derived, not configurable").
VISIBILITY_MARGIN_SEC = 300

Parse = Callable[[str], object]


class ConfigError(ValueError):
    """One or more variables have values the runtime cannot run with; each line names one."""


class Invalid(ValueError):
    """A parser's complaint: what was expected (the caller adds the variable's names)."""


def _int(low: int, high: int, unit: str) -> Parse:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise Invalid(f"expected a whole number of {unit} from {low} to {high}")
        return value

    return parse


def _text(raw: str) -> str:
    if not raw.strip():
        raise Invalid("it is empty")
    return raw.strip()


def _optional(raw: str) -> str:
    return raw.strip()


def _broker(raw: str) -> str:
    url = raw.strip()
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise Invalid(
            "expected a Redis URL such as redis://:PASSWORD@broker.example:6379/0 "
            "(redis://, rediss:// or unix://): the crash ledger lives in the broker's Redis"
        )
    return url


def _backend(raw: str) -> str:
    url = raw.strip()
    if url and not re.match(r"^[a-z][a-z0-9+.-]*://", url):
        raise Invalid("expected empty (no result backend) or a URL such as redis://host/1")
    return url


def _module(raw: str) -> str:
    name = raw.strip()
    if not re.fullmatch(r"[A-Za-z_][\w.]*(:[A-Za-z_]\w*)?", name):
        raise Invalid(
            "expected the Celery app as `celery -A` takes it: a module such as core.celery_app, "
            "or module:attribute"
        )
    return name


def _task_name(raw: str) -> str:
    name = raw.strip()
    if name and not re.fullmatch(r"[\w.:-]+", name):
        raise Invalid("expected empty or a task name such as core.tasks.mark_failed")
    return name


def _abs_path(raw: str) -> str:
    path = raw.strip()
    if path and not path.startswith("/"):
        raise Invalid("expected empty or an absolute path")
    return path


_COMMAND_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")


def _abs_paths(raw: str) -> tuple[str, ...]:
    paths = tuple(item for item in raw.split() if item)
    bad = [p for p in paths if not p.startswith("/")]
    if bad:
        raise Invalid(
            f"{', '.join(map(repr, bad))}: expected absolute paths separated by spaces, such as "
            "`/var/lib/celery-stable/videos`"
        )
    return paths


def _commands(raw: str) -> tuple[str, ...]:
    commands = tuple(item for item in re.split(r"[\s,]+", raw.strip()) if item)
    bad = [c for c in commands if not (c.startswith("/") or _COMMAND_NAME.fullmatch(c))]
    if bad:
        raise Invalid(
            f"{', '.join(map(repr, bad))}: expected command names (looked up on PATH) or "
            "absolute paths, separated by spaces, such as `ffmpeg /opt/tool/bin/tool`"
        )
    return commands


@dataclass(frozen=True)
class Variable:
    """One line of the environment file: who sets it, its default, its rule."""

    env: str
    attr: str
    # The role variable that writes it (named in every refusal); None for a derived value.
    role_var: str | None
    # As the environment file spells it; None: no default, the deploy must set it.
    default: str | None
    parse: Parse
    meaning: str
    secret: bool = False
    # Written to the environment file; False: the unit sets it (Environment=, per instance).
    in_env_file: bool = True


# The table. Defaults are the guide's values; roles/celery_stable/defaults/main.yml carries the
# same (roles/celery_stable/tests/test_contract.py keeps them equal).
VARIABLES: tuple[Variable, ...] = (
    Variable("CELERY_BROKER_URL", "broker_url", "celery_stable_broker_url",
             "redis://127.0.0.1:6379/0", _broker,
             "the broker (Celery reads it natively), and the Redis of the crash ledger",
             secret=True),
    Variable("CELERY_RESULT_BACKEND", "result_backend", "celery_stable_result_backend", "",
             _backend, "the app's result backend (Celery reads it natively); empty: none",
             secret=True),
    Variable("CELERY_STABLE_APP_MODULE", "app_module", "celery_stable_app_module", None,
             _module, "the operator's Celery app, as `celery -A` takes it"),
    Variable("CELERY_STABLE_APP_PATH", "app_path", None, "", _abs_path,
             "a directory put first on sys.path to import an app shipped as plain files"),
    Variable("CELERY_STABLE_ENV_FILE", "env_file", None, "", _abs_path,
             "this file's own path: a reload or recycle re-executes on its current content"),
    Variable("CELERY_STABLE_INSTANCE", "instance", None, "", _optional,
             "which worker of the host this is (the unit's instance, celery-worker@N)",
             in_env_file=False),
    Variable("CELERY_STABLE_TEST_REEXEC_PAUSE_SEC", "test_reexec_pause_sec", None, "0",
             _int(0, 60, "seconds"),
             "test only: the worker waits this long in its re-exec window (stop signals "
             "blocked, after the stop check), so that a test can send SIGTERM there",
             in_env_file=False),
    Variable("CELERY_STABLE_GIVEUP_TASK", "giveup_task", "celery_stable_giveup_task", "",
             _task_name, "a task of the app sent when the runtime gives a task up; empty: none"),
    Variable("CELERY_STABLE_MAX_TASKS_PER_CHILD", "max_tasks_per_child",
             "celery_stable_max_tasks_per_child", "10", _int(1, 1_000_000, "tasks"),
             "recycle the worker in place after this many tasks"),
    Variable("CELERY_STABLE_MAX_MEMORY_PER_CHILD_KB", "max_memory_per_child_kb",
             "celery_stable_max_memory_per_child_kb", "256000", _int(10_240, 1 << 40, "KiB"),
             "recycle the worker in place once its RSS reaches this (KiB, the guide's unit)"),
    Variable("CELERY_STABLE_TIME_LIMIT_SEC", "time_limit_sec", "celery_stable_time_limit_sec",
             "900", _int(1, 7 * 86400, "seconds"),
             "hard limit of a task with none of its own (time_limit, the app's task_time_limit)"),
    Variable("CELERY_STABLE_ADDRESS_SPACE_LIMIT_MB", "address_space_limit_mb",
             "celery_stable_address_space_limit_mb", "1024", _int(256, 1 << 30, "MiB"),
             "RLIMIT_AS of the worker and its children (Python, OpenCV and ffmpeg need 256)"),
    Variable("CELERY_STABLE_MAX_CRASHES", "max_crashes", "celery_stable_max_crashes", "2",
             _int(1, 1000, "crashes"),
             "crashes of the worker one task may cause before it is failed"),
    Variable("CELERY_STABLE_STUCK_AFTER_SEC", "stuck_after_sec", "celery_stable_stuck_after_sec",
             "300", _int(1, 7 * 86400, "seconds"),
             "recovery fails a running task whose heartbeat is older than this"),
    Variable("CELERY_STABLE_HEARTBEAT_INTERVAL_SEC", "heartbeat_interval_sec",
             "celery_stable_heartbeat_interval_sec", "10", _int(1, 3600, "seconds"),
             "how often a running task's heartbeat is written"),
    Variable("CELERY_STABLE_STATS_INTERVAL_SEC", "stats_interval_sec",
             "celery_stable_stats_interval_sec", "120", _int(1, 86400, "seconds"),
             "process stats period (journal and metrics)"),
    Variable("CELERY_STABLE_METRICS_FILE", "metrics_file", "celery_stable_metrics_file", "",
             _abs_path, "node_exporter textfile to write the stats to; empty: off"),
    Variable("CELERY_STABLE_LEDGER_KEEP", "ledger_keep", "celery_stable_ledger_keep", "10000",
             _int(10, 10_000_000, "records"),
             "finished tasks kept in the ledger per final state (oldest dropped first)"),
    Variable("CELERY_STABLE_APP_WRITE_PATHS", "app_write_paths", "celery_stable_app_write_paths",
             "", _abs_paths,
             "directories the app writes: a task that fails while one is full has it named in "
             "its reason; empty: none"),
    Variable("CELERY_STABLE_REQUIRED_COMMANDS", "required_commands",
             "celery_stable_required_commands", "", _commands,
             "commands the app runs, each on PATH and executable before a worker consumes; "
             "empty: none"),
)  # fmt: skip
BY_ENV = {variable.env: variable for variable in VARIABLES}


@dataclass(frozen=True)
class SystemdEnv:
    """What systemd tells the process through its environment (absent outside systemd)."""

    notify_socket: str | None = None
    watchdog_usec: int | None = None
    service_result: str | None = None
    exit_code: str | None = None
    exit_status: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str], pid: int | None = None) -> SystemdEnv:
        watchdog: int | None = None
        raw = env.get("WATCHDOG_USEC", "").strip()
        owner = env.get("WATCHDOG_PID", "").strip()
        # WATCHDOG_PID names the process systemd expects pings from; a child must not ping.
        if raw.isdigit() and int(raw) > 0 and (not owner or owner == str(pid or os.getpid())):
            watchdog = int(raw)
        return cls(
            notify_socket=env.get("NOTIFY_SOCKET") or None,
            watchdog_usec=watchdog,
            service_result=env.get("SERVICE_RESULT") or None,
            exit_code=env.get("EXIT_CODE") or None,
            exit_status=env.get("EXIT_STATUS") or None,
        )


@dataclass(frozen=True)
class Settings:
    broker_url: str
    result_backend: str
    app_module: str | None
    app_path: str
    env_file: str
    instance: str
    test_reexec_pause_sec: int
    giveup_task: str
    max_tasks_per_child: int
    max_memory_per_child_kb: int
    time_limit_sec: int
    address_space_limit_mb: int
    max_crashes: int
    stuck_after_sec: int
    heartbeat_interval_sec: int
    stats_interval_sec: int
    metrics_file: Path | None
    ledger_keep: int
    app_write_paths: tuple[str, ...]
    required_commands: tuple[str, ...]
    systemd: SystemdEnv = field(default_factory=SystemdEnv)

    @classmethod
    def from_env(cls, env: Mapping[str, str], source: str = "the environment") -> Settings:
        """Every variable parsed; all complaints at once in one :class:`ConfigError`."""
        values, problems = parse_all(env, source)
        if problems:
            raise ConfigError("\n".join(problems))
        metrics = str(values["metrics_file"])
        values["metrics_file"] = Path(metrics) if metrics else None
        return cls(systemd=SystemdEnv.from_env(env), **values)  # type: ignore[arg-type]

    @staticmethod
    def defaults() -> dict[str, str]:
        """The defaults as the environment file spells them (variables that have one)."""
        return {v.env: v.default for v in VARIABLES if v.default is not None}


def _describe(variable: Variable, raw: str | None) -> str:
    shown = "(unset)" if raw is None else ("(hidden)" if variable.secret else repr(raw))
    name = f"{variable.role_var} ({variable.env})" if variable.role_var else variable.env
    return f"{name} = {shown}"


INVENTORY = "the inventory"


def _fix(source: str) -> str:
    if source == INVENTORY:
        return "Fix it in the inventory"
    return f"Fix it in the inventory and deploy again (it reached this host through {source})"


def parse_all(env: Mapping[str, str], source: str) -> tuple[dict[str, object], list[str]]:
    """(values by attribute, one message per bad variable), relations between them included."""
    values: dict[str, object] = {}
    problems: list[str] = []
    for variable in VARIABLES:
        raw = env.get(variable.env)
        if raw is None and variable.default is None:
            values[variable.attr] = None
            continue
        try:
            values[variable.attr] = variable.parse(variable.default if raw is None else raw)
        except Invalid as why:
            fix = _fix(source)
            if variable.default is not None:
                fix += f"; unset it to get the default {variable.default!r}"
            problems.append(f"{_describe(variable, raw)} is not valid: {why}. {fix}.")
    stuck, beat = values.get("stuck_after_sec"), values.get("heartbeat_interval_sec")
    if isinstance(stuck, int) and isinstance(beat, int) and stuck <= beat:
        problems.append(
            f"{_describe(BY_ENV['CELERY_STABLE_STUCK_AFTER_SEC'], str(stuck))} is not valid: it "
            f"must be above celery_stable_heartbeat_interval_sec ({beat}), or healthy tasks look "
            "stuck between two heartbeats."
        )
    return values, problems


def find_command(command: str, path: str) -> tuple[str | None, str | None]:
    """(the file that would run, or None; else a file by that name that is not executable).

    The search ``execvp`` does: the first executable regular file along ``path``; a name with a
    slash is taken as it is.
    """
    if "/" in command:
        candidates = [command]
    else:
        candidates = [os.path.join(d, command) for d in path.split(os.pathsep) if d]
    blocked = None
    for candidate in candidates:
        if os.path.isfile(candidate):
            if os.access(candidate, os.X_OK):
                return candidate, None
            blocked = blocked or candidate
    return None, blocked


def command_problems(commands: tuple[str, ...], path: str) -> list[str]:
    """One message per required command that would not run on ``path`` (empty: all run)."""
    variable = BY_ENV["CELERY_STABLE_REQUIRED_COMMANDS"]
    name = f"{variable.role_var} ({variable.env})"
    problems = []
    for command in commands:
        found, blocked = find_command(command, path)
        if found:
            continue
        if blocked:
            why = f"{blocked} is not executable"
            fix = f"make it executable (chmod 0755 {blocked}) or reinstall the package that has it"
        elif "/" in command:
            why = "it does not exist"
            fix = "install it at that path, or name the path it is installed at"
        else:
            why = f"it is not on PATH ({path or 'empty'})"
            fix = (
                "install it on this host (the role installs celery_stable_app_packages), or give "
                "its absolute path"
            )
        problems.append(
            f"{name} requires {command!r}, but {why}. Fix: {fix}; or, if the app does not run "
            f"it, remove it from {variable.role_var}."
        )
    return problems


def parse_env_file(text: str, source: str = "environment file") -> dict[str, str]:
    """Parse systemd ``EnvironmentFile=`` syntax: ``KEY=value``, quotes, comments, ``\\`` lines."""
    result: dict[str, str] = {}
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        number = index + 1
        line = lines[index]
        index += 1
        while line.endswith("\\") and index < len(lines):
            line = line[:-1] + lines[index]
            index += 1
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        key, sep, value = stripped.partition("=")
        key = key.strip()
        if not sep or not key.replace("_", "").isalnum() or key[0].isdigit():
            raise ConfigError(f"{source}, line {number}: expected KEY=value, got {stripped!r}.")
        result[key] = _unquote(value.strip(), f"{source}, line {number}")
    return result


def _unquote(value: str, where: str) -> str:
    if not value or value[0] not in "\"'":
        return value
    quote = value[0]
    out: list[str] = []
    position = 1
    while position < len(value):
        char = value[position]
        if char == "\\" and quote == '"' and position + 1 < len(value):
            out.append(value[position + 1])
            position += 2
            continue
        if char == quote:
            if value[position + 1 :].strip():
                raise ConfigError(f"{where}: text after the closing quote.")
            return "".join(out)
        out.append(char)
        position += 1
    raise ConfigError(f"{where}: missing closing quote.")


def load_env_file(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist: name the file with --env-file.") from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read {path}: {exc.strerror}. Run as root or as a member of the service "
            "group (celery), or set CELERY_BROKER_URL in the environment."
        ) from None
    return parse_env_file(text, str(path))


def effective_env(environ: Mapping[str, str], env_file: Path) -> dict[str, str]:
    """The process environment, completed by the env file unless the broker is already set.

    systemd units already carry the file through ``EnvironmentFile=``; an operator's shell does
    not, so the CLI reads it then (only when ``CELERY_BROKER_URL`` is not in the environment).
    """
    if "CELERY_BROKER_URL" in environ or not env_file.exists():
        return dict(environ)
    return {**load_env_file(env_file), **environ}


def check_file(path: Path, source: str | None = None) -> list[str]:
    """Every complaint about an environment file (empty: it is fine)."""
    try:
        env = load_env_file(path)
    except ConfigError as exc:
        return [str(exc)]
    return parse_all(env, source or str(path))[1]


def main(argv: list[str]) -> int:
    """``settings.py check FILE [--source TEXT]``: the preflight's and check-config's rule.

    ``settings.py commands PATH [COMMAND...]``: the required commands' rule, for the role to run
    on a host before anything is installed there: 0 all run, 3 some are only missing (packages
    still to be installed may bring them), 2 some are there but would not run.
    """
    if len(argv) >= 2 and argv[0] == "commands":
        commands, path = tuple(argv[2:]), argv[1]
        problems = command_problems(commands, path)
        for problem in problems:
            print(problem, file=sys.stderr)
        if not problems:
            return 0
        found = [find_command(command, path) for command in commands]
        return 3 if all(blocked is None for _, blocked in found) else 2
    if len(argv) < 2 or argv[0] != "check":
        print(
            "usage: settings.py check ENV_FILE [--source TEXT] | commands PATH [COMMAND...]",
            file=sys.stderr,
        )
        return 2
    source = argv[3] if len(argv) >= 4 and argv[2] == "--source" else None
    problems = check_file(Path(argv[1]), source)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 2 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
