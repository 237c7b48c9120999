"""Video records against a real Redis, guarded by the runtime's ledger record of the same id."""

from __future__ import annotations

from celery_stable.ledger import NOW

from video_renderer.jobs import VideoStore
from video_renderer.tasks import RENDER_TASK

from .video_harness import video_spec


def run_attempt(store: VideoStore, video_id: str) -> int:
    """What the runtime does when it admits a delivery: the ledger record says it runs."""
    ledger = store.ledger
    record = ledger.get(video_id)
    if record is None:
        assert ledger.create(video_id, RENDER_TASK, {"state": "running", "started_at": NOW}).ok
    else:
        moved = ledger.move(video_id, states=[record.state], set_fields={"state": "running"},
                            incr={"attempts": 1})  # fmt: skip
        assert moved.ok
    return store.running_attempt(video_id)


def give_up(store: VideoStore, video_id: str) -> None:
    """What the runtime does when it gives the task up (stuck, crashed too often...)."""
    assert store.ledger.move(video_id, states=["running"], set_fields={"state": "failed"}).ok


def test_a_record_holds_the_spec_its_state_its_output_and_its_task_id(store: VideoStore) -> None:
    record = store.create(video_spec())
    assert (record.state, record.attempt, record.task_id) == ("queued", 0, record.id)
    assert record.spec == video_spec()
    assert record.created_at > 0
    assert set(record.to_dict()) == {
        "id", "task_id", "spec", "state", "attempt", "output", "error", "cause",
        "created_at", "started_at", "finished_at",
    }  # fmt: skip
    assert store.running_attempt(record.id) == 0


def test_only_the_attempt_the_ledger_runs_moves_the_record(store: VideoStore) -> None:
    video = store.create(video_spec()).id
    first = run_attempt(store, video)
    assert first == 1
    assert store.begin(video, 2).status == "taken"  # the ledger runs attempt 1, not 2
    assert store.begin(video, first).ok
    assert store.get(video).state == "processing"  # type: ignore[union-attr]
    # A second delivery of the same attempt cannot begin it twice.
    assert store.begin(video, first).status == "stale"
    give_up(store, video)
    # The attempt the runtime gave up finishes late: it records nothing.
    assert store.finish(video, first, "/x.mp4").status == "taken"
    assert store.fail(video, first, "late").status == "taken"
    assert store.give_up(video, "stuck", "stuck: no heartbeat").ok
    record = store.get(video)
    assert record is not None
    assert (record.state, record.cause, record.error) == ("failed", "stuck", "stuck: no heartbeat")
    # The operator's retry: the ledger runs attempt 2, which may begin and finish.
    second = run_attempt(store, video)
    assert second == 2
    assert store.give_up(video, "stuck", "a late hook").status == "taken"
    assert store.begin(video, second).ok
    assert store.finish(video, first, "/old.mp4").status == "stale"
    assert store.finish(video, second, "/v.mp4").ok
    done = store.get(video)
    assert done is not None
    assert (done.state, done.attempt, done.output) == ("done", 2, "/v.mp4")
    assert (done.error, done.cause) == ("", "")
    assert done.finished_at is not None
    assert done.started_at is not None


def test_a_done_video_whose_file_could_not_be_put_in_place_is_retracted_by_its_owner_only(
    store: VideoStore,
) -> None:
    video = store.create(video_spec()).id
    first = run_attempt(store, video)
    assert store.begin(video, first).ok
    assert store.finish(video, first, "/v.mp4").ok
    # Only while the ledger still runs that attempt (the task has not returned yet).
    assert store.retract(video, first + 1, "late").status == "stale"
    assert store.retract(video, first, "rendered, but could not move it to /v.mp4").ok
    record = store.get(video)
    assert record is not None
    assert (record.state, record.output) == ("failed", "")
    assert record.error == "rendered, but could not move it to /v.mp4"
    # Once the ledger moved on, a newer attempt owns the video: nothing is taken back.
    second = run_attempt(store, video)
    assert store.begin(video, second).ok
    assert store.finish(video, second, "/v.mp4").ok
    give_up(store, video)
    assert store.retract(video, second, "late").status == "taken"
    assert store.get(video).state == "done"  # type: ignore[union-attr]


def test_a_new_message_reusing_a_finished_videos_id_does_not_start_it(store: VideoStore) -> None:
    video = store.create(video_spec()).id
    attempt = run_attempt(store, video)
    assert store.begin(video, attempt).ok
    assert store.finish(video, attempt, "/v.mp4").ok
    # The runtime starts a fresh ledger record at attempt 1 for a new message with a known id.
    store.ledger.move(video, states=["running"], set_fields={"state": "done"})
    store.ledger.move(video, states=["done"], set_fields={"state": "running", "attempts": 1})
    outcome = store.begin(video, 1)
    assert (outcome.status, outcome.state) == ("stale", "done")


def test_counts_recent_and_delete_stay_consistent(store: VideoStore) -> None:
    first = store.create(video_spec()).id
    second = store.create(video_spec()).id
    assert store.counts() == {"queued": 2, "processing": 0, "done": 0, "failed": 0}
    attempt = run_attempt(store, second)
    store.begin(second, attempt)
    store.fail(second, attempt, "bad")
    assert store.counts() == {"queued": 1, "processing": 0, "done": 0, "failed": 1}
    assert [r.id for r in store.recent()] == [second, first]
    assert [r.id for r in store.recent(state="failed")] == [second]
    assert store.delete(second)
    assert store.counts() == {"queued": 1, "processing": 0, "done": 0, "failed": 0}
    assert store.get(second) is None
