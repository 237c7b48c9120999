"""Configuration: the only module that reads the environment.

Every entry point (the Celery app module, the CLI) hands ``os.environ`` or a parsed environment
file to :meth:`Settings.from_env`; the rest of the package receives a frozen :class:`Settings`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_ENV_FILE = Path("/etc/celery-stable/celery-stable.env")
PREFIX = "CELERY_STABLE_"

# Redis must never hand a running video to a second worker: the visibility timeout outlives
# the hard limit by this much (contract: "Derived, not configurable").
VISIBILITY_MARGIN_SEC = 300


class ConfigError(ValueError):
    """A variable has a value the app cannot run with; the message names it and the fix."""


def _int(low: int, high: int, unit: str) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise ConfigError(
                f"{name}={raw!r} is not valid: expected a whole number of {unit} "
                f"from {low} to {high}. Fix it in the environment file "
                f"({DEFAULT_ENV_FILE} on hosts) or unset it to use the default."
            )
        return value

    return parse


def _text(name: str, raw: str) -> str:
    if not raw.strip():
        raise ConfigError(f"{name} is empty: set a value or remove the line to use the default.")
    return raw.strip()


def _broker(name: str, raw: str) -> str:
    url = _text(name, raw)
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(
            f"{name}={url!r} is not valid: expected a Redis URL such as "
            "redis://127.0.0.1:6379/0 (redis://, rediss:// or unix://)."
        )
    return url


def _flag(name: str, raw: str) -> bool:
    if raw.strip() in ("", "0"):
        return False
    if raw.strip() == "1":
        return True
    raise ConfigError(f"{name}={raw!r} is not valid: expected 1 (on) or 0/empty (off).")


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


# name suffix -> (attribute, default as the env file would spell it, parser)
_FIELDS: dict[str, tuple[str, str, Callable[[str, str], object]]] = {
    "BROKER_URL": ("broker_url", "redis://127.0.0.1:6379/0", _broker),
    "QUEUE": ("queue", "videos", _text),
    "OUTPUT_DIR": ("output_dir", "/var/lib/celery-stable/videos", _text),
    "MAX_TASKS_PER_CHILD": ("max_tasks_per_child", "10", _int(1, 1_000_000, "tasks")),
    "MAX_MEMORY_PER_CHILD_KB": ("max_memory_per_child_kb", "256000", _int(1024, 1 << 40, "KiB")),
    "TIME_LIMIT_SEC": ("time_limit_sec", "900", _int(1, 7 * 86400, "seconds")),
    "ADDRESS_SPACE_LIMIT_MB": ("address_space_limit_mb", "1024", _int(64, 1 << 30, "MiB")),
    "MAX_CRASHES": ("max_crashes", "2", _int(1, 1000, "crashes")),
    "STUCK_AFTER_SEC": ("stuck_after_sec", "300", _int(1, 7 * 86400, "seconds")),
    "HEARTBEAT_INTERVAL_SEC": ("heartbeat_interval_sec", "10", _int(1, 3600, "seconds")),
    "STATS_INTERVAL_SEC": ("stats_interval_sec", "120", _int(1, 86400, "seconds")),
    "METRICS_FILE": ("metrics_file", "", lambda _n, raw: raw.strip()),
    "FFMPEG": ("ffmpeg", "ffmpeg", _text),
    "FAULT_HOOKS": ("fault_hooks", "", _flag),
}


@dataclass(frozen=True)
class Settings:
    broker_url: str
    queue: str
    output_dir: Path
    max_tasks_per_child: int
    max_memory_per_child_kb: int
    time_limit_sec: int
    address_space_limit_mb: int
    max_crashes: int
    stuck_after_sec: int
    heartbeat_interval_sec: int
    stats_interval_sec: int
    metrics_file: Path | None
    ffmpeg: str
    fault_hooks: bool
    systemd: SystemdEnv = field(default_factory=SystemdEnv)

    @property
    def visibility_timeout(self) -> int:
        return self.time_limit_sec + VISIBILITY_MARGIN_SEC

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        values: dict[str, object] = {}
        for suffix, (attr, default, parse) in _FIELDS.items():
            name = PREFIX + suffix
            raw = env.get(name)
            values[attr] = parse(name, default if raw is None else raw)
        values["output_dir"] = Path(str(values["output_dir"]))
        metrics = str(values["metrics_file"])
        values["metrics_file"] = Path(metrics) if metrics else None
        if not Path(str(values["output_dir"])).is_absolute():
            raise ConfigError(
                f"{PREFIX}OUTPUT_DIR={values['output_dir']!s} is not valid: expected an "
                "absolute path such as /var/lib/celery-stable/videos."
            )
        return cls(systemd=SystemdEnv.from_env(env), **values)  # type: ignore[arg-type]

    @staticmethod
    def defaults() -> dict[str, str]:
        """The guide's values, as the role's ``defaults/main.yml`` must also carry them."""
        return {PREFIX + suffix: default for suffix, (_a, default, _p) in _FIELDS.items()}


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
                raise ConfigError(f"{where}: text after the closing quote in {value!r}.")
            return "".join(out)
        out.append(char)
        position += 1
    raise ConfigError(f"{where}: missing closing quote in {value!r}.")


def load_env_file(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist: name the file with --env-file.") from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read {path}: {exc.strerror}. Run as root or as a member of group celery, "
            f"or set {PREFIX}BROKER_URL in the environment."
        ) from None
    return parse_env_file(text, str(path))


def effective_env(environ: Mapping[str, str], env_file: Path) -> dict[str, str]:
    """The process environment, completed by the env file unless the broker is already set.

    systemd units already carry the file through ``EnvironmentFile=``; an operator's shell does
    not, so the CLI reads it then (contract: only when the broker URL is not in the environment).
    """
    if PREFIX + "BROKER_URL" in environ or not env_file.exists():
        return dict(environ)
    return {**load_env_file(env_file), **environ}
