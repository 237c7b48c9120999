"""The guide's process stats every interval, with the ledger's counts by state and by name."""

from __future__ import annotations

from runtime_harness import Harness, wait_record

from celery_stable.ledger import Ledger
from celery_stable.testing import wait_for


def test_stats_reach_the_journal_and_the_textfile(harness: Harness, ledger: Ledger) -> None:
    metrics = harness.tmp / "metrics" / "celery_stable.prom"
    worker = harness.ready_worker(
        CELERY_STABLE_STATS_INTERVAL_SEC="1", CELERY_STABLE_METRICS_FILE=str(metrics)
    )
    wait_record(ledger, harness.send("proj.add", 1, 1), ("done",), 30)
    wait_record(ledger, harness.send("proj.fails"), ("failed",), 30)
    failed = 'celery_stable_tasks_by_name{name="proj.fails",state="failed"} 1.0'
    wait_for(
        lambda: metrics.exists() and failed in metrics.read_text(),
        30, "metrics with the failed task by name",
    )  # fmt: skip
    text = metrics.read_text()
    assert 'celery_stable_tasks{state="done"}' in text
    assert 'celery_stable_tasks_by_name{name="proj.add",state="done"}' in text
    assert f"celery_stable_worker_pid {float(worker.pid)}" in text
    for name in ("cpu_percent", "rss_bytes", "threads", "tasks_since_recycle"):
        assert f"celery_stable_worker_{name} " in text
    wait_for(lambda: "failed=1 by name" in worker.output(), 10, "a stats line with counts")
    assert f"stats pid={worker.pid} cpu=" in worker.output()
    assert "proj.fails:failed=1" in worker.output()
