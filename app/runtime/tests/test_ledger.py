"""The ledger's moves: compare-and-set, counts by state and by name, bounded retention."""

from __future__ import annotations

import time

from celery_stable.ledger import NOW, Ledger


def record(ledger: Ledger, task_id: str, name: str = "proj.add") -> None:
    fields = {"state": "running", "started_at": NOW, "tags": "t1", "time_limit": 900}
    assert ledger.create(task_id, name, fields).ok


def test_a_move_is_a_compare_and_set_on_state_and_attempt(ledger: Ledger) -> None:
    record(ledger, "a")
    assert ledger.create("a", "proj.add", {"state": "running"}).status == "exists"
    assert ledger.finish("a", 2, "done").status == "stale"
    assert ledger.finish("a", 1, "done").ok
    assert ledger.finish("a", 1, "done").status == "state"
    assert ledger.move("missing", states=["running"]).status == "missing"
    done = ledger.get("a")
    assert done is not None
    assert (done.state, done.attempts, done.payload) == ("done", 1, "")
    assert done.finished_at is not None
    assert done.started_at is not None
    assert done.finished_at >= done.started_at


def test_times_are_the_redis_servers(ledger: Ledger) -> None:
    record(ledger, "a")
    server = ledger.now()
    started = ledger.get("a").started_at  # type: ignore[union-attr]
    assert abs(server - started) < 2  # type: ignore[operator]
    seconds, micros = ledger.client.time()
    assert abs(server - (seconds + micros / 1e6)) < 1
    assert abs(server - time.time()) < 5


def test_counts_by_state_and_by_name_never_drift(ledger: Ledger) -> None:
    for n in range(3):
        record(ledger, f"add{n}")
    record(ledger, "render", "proj.sleep")
    ledger.finish("add0", 1, "done")
    ledger.finish("add1", 1, "failed", cause="error", reason="ValueError: x")
    assert ledger.counts() == {"queued": 0, "running": 2, "done": 1, "failed": 1}
    assert ledger.counts_by_name() == {
        "queued": {},
        "running": {"proj.add": 1, "proj.sleep": 1},
        "done": {"proj.add": 1},
        "failed": {"proj.add": 1},
    }
    assert [r.id for r in ledger.recent(limit=10)][:2] == ["add1", "add0"]
    assert [r.id for r in ledger.recent(name="proj.sleep")] == ["render"]
    assert [r.id for r in ledger.recent(state="failed")] == ["add1"]


def test_finished_records_are_kept_to_a_bound(ledger: Ledger) -> None:
    small = Ledger(ledger.client, keep=3)
    for n in range(5):
        record(small, f"t{n}")
        small.finish(f"t{n}", 1, "done")
    assert small.ids_in("done") == ["t4", "t3", "t2"]
    assert small.get("t0") is None
    assert small.counts_by_name()["done"] == {"proj.add": 3}
