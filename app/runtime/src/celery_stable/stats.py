"""Process stats (the guide's pid, cpu %, RSS MB, threads) and task counts, for the journal and
node_exporter."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil
from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

MB = 1024 * 1024


@dataclass(frozen=True)
class ProcessStats:
    pid: int
    cpu_percent: float
    rss_mb: float
    threads: int

    def log_line(self, tasks: Mapping[str, Mapping[str, int]] | None) -> str:
        """One journal line; with ``tasks`` (state -> name -> count), the ledger's counts."""
        line = (
            f"stats pid={self.pid} cpu={self.cpu_percent:.1f}% rss={self.rss_mb:.1f}MB "
            f"threads={self.threads}"
        )
        if tasks is not None:
            line += " tasks " + " ".join(
                f"{state}={sum(names.values())}" for state, names in tasks.items()
            )
            busiest = sorted(
                ((n, state, name) for state, names in tasks.items() for name, n in names.items()),
                reverse=True,
            )[:5]
            if busiest:
                line += " by name " + " ".join(f"{name}:{state}={n}" for n, state, name in busiest)
        return line


def sample(process: psutil.Process) -> ProcessStats:
    """Stats of ``process``; keep the same object between calls so cpu % covers the interval."""
    with process.oneshot():
        return ProcessStats(
            pid=process.pid,
            cpu_percent=process.cpu_percent(None),
            rss_mb=process.memory_info().rss / MB,
            threads=process.num_threads(),
        )


def write_textfile(
    path: Path,
    stats: ProcessStats,
    tasks: Mapping[str, Mapping[str, int]] | None,
    tasks_done: int,
) -> None:
    """Write the node_exporter textfile; prometheus_client escapes and renames it atomically."""
    registry = CollectorRegistry()
    pairs = {
        "celery_stable_worker_pid": ("PID of the worker process", stats.pid),
        "celery_stable_worker_cpu_percent": ("CPU use since the last sample", stats.cpu_percent),
        "celery_stable_worker_rss_bytes": ("Resident memory of the worker", stats.rss_mb * MB),
        "celery_stable_worker_threads": ("Threads in the worker process", stats.threads),
        "celery_stable_worker_tasks_since_recycle": ("Tasks since the last recycle", tasks_done),
    }
    for name, (doc, value) in pairs.items():
        Gauge(name, doc, registry=registry).set(value)
    if tasks is not None:
        by_state = Gauge(
            "celery_stable_tasks",
            "Tasks in the crash ledger by state",
            ["state"],
            registry=registry,
        )
        by_name = Gauge(
            "celery_stable_tasks_by_name",
            "Tasks in the crash ledger by state and task name",
            ["state", "name"],
            registry=registry,
        )
        for state, names in tasks.items():
            by_state.labels(state=state).set(sum(names.values()))
            for name, count in names.items():
                by_name.labels(state=state, name=name).set(count)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)
