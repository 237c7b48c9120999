"""The app's tasks: render one video, mark a video the runtime gave up, Beat's canary, and
Beat's resend of a queued video whose message is gone.

The runtime (celery_stable) decides whether a delivery runs at all (a redelivered copy of a
finished task, a copy of a running one, a task that crashed the worker too often are not run),
counts its attempts, and ends it past its hard limit. These tasks only say what a video is:
processing, done with its output, or failed with the reason. The one loss the runtime cannot see
is the app's: a video recorded and queued whose message never reached a worker (the ledger
knows a task only once a worker picked it up), which ``resend_lost_videos`` sends again.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import time
from dataclasses import replace
from typing import Any

import celery_stable
from celery import Task
from celery_stable.broker import redis_channel
from celery_stable.settings import Settings

from . import render
from .celery_app import FLEET_TASK, QUEUE, RESEND_TASK, app
from .jobs import Outcome, VideoStore
from .settings import current
from .spec import SpecError, validate_spec

log = logging.getLogger(__name__)

RENDER_TASK = "video_renderer.render_video"
GIVEUP_TASK = "video_renderer.mark_given_up"
MIB = 1024 * 1024

_store: VideoStore | None = None


class VideoFailed(Exception):
    """The video cannot be made; the message is the reason on its record.

    Raised rather than returned, so that the runtime's ledger says failed as well and
    ``celery-stable retry <id>`` can send the video again. Expected (``throws``): Celery logs it
    in one line, without a traceback.
    """


def store() -> VideoStore:
    global _store  # noqa: PLW0603 (one store per process, built on first use)
    if _store is None:
        _store = VideoStore.for_app(app)
    return _store


def _why(outcome: Outcome) -> str:
    return {
        "missing": "no such video",
        "state": f"the video is {outcome.state}",
        "stale": f"the video is {outcome.state} by attempt {outcome.attempt}",
        "taken": "the runtime no longer runs this attempt",
    }.get(outcome.status, outcome.status)


def _address_space_mb() -> str:
    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    return "unlimited" if soft == resource.RLIM_INFINITY else f"{soft // MIB} MB"


@app.task(name=RENDER_TASK, bind=True, ignore_result=True, throws=(VideoFailed,))
def render_video(self: Task, video_id: str) -> str:
    """One attempt; whatever goes wrong in Python, the video ends failed with the reason.

    An exception escaping would leave the record "processing" until the runtime's recovery, a
    video silently parked: so anything unexpected fails the video here, with the exception as the
    reason `video-renderer status` shows, and is raised again for the ledger.
    """
    videos = store()
    attempt = videos.running_attempt(video_id)
    try:
        return _render(videos, video_id, attempt, self.request.id)
    except VideoFailed:
        raise
    except Exception as exc:
        log.exception("video %s: unexpected error", video_id)
        try:
            videos.fail(video_id, attempt, f"internal error: {type(exc).__name__}: {exc}")
        except Exception:
            log.exception("video %s: could not record the failure; recovery will", video_id)
        raise


def _fail(videos: VideoStore, video_id: str, attempt: int, reason: str) -> VideoFailed:
    outcome = videos.fail(video_id, attempt, reason)
    log.error(
        "video %s failed: %s%s",
        video_id,
        reason,
        "" if outcome.ok else f" (not recorded: {_why(outcome)})",
    )
    return VideoFailed(reason)


def _render(videos: VideoStore, video_id: str, attempt: int, task_id: str | None) -> str:
    settings = current()
    record = videos.get(video_id)
    if record is None:
        log.warning("ignored task %s: no video %s", task_id, video_id)
        return "ignored"
    begun = videos.begin(video_id, attempt)
    if not begun.ok:
        log.warning("ignored a message for video %s: %s", video_id, _why(begun))
        return "ignored"
    # Older attempts' temp files too, on any host: the ledger has moved past them, so they can
    # never be published, even by an attempt still running somewhere.
    for stale in render.stale_partials(settings.output_dir, video_id, before_attempt=attempt):
        stale.unlink(missing_ok=True)
    try:
        spec = validate_spec(record.spec, allow_fault=settings.fault_hooks)
    except SpecError as exc:
        raise _fail(videos, video_id, attempt, f"invalid spec: {exc}") from None
    if spec.fault is not None and not spec.fault.active(attempt):
        spec = replace(spec, fault=None)
    # The runtime's hard limit for this task, as a deadline the render loop checks between
    # frames: failing cleanly before the runtime ends the attempt by force. The reason names the
    # limit itself (celery_stable.time_limit()), not the time that was left when the task began.
    left = celery_stable.remaining()
    deadline = math.inf if left is None else time.monotonic() + left
    limit = celery_stable.time_limit()
    log.info("rendering video %s (attempt %d, %d frames)", video_id, attempt, spec.total_frames)

    def progress(frame: int, total: int) -> None:
        celery_stable.progress(frame, total, "frame")

    try:
        result = render.render_video(
            spec,
            settings.output_dir,
            video_id,
            ffmpeg=settings.ffmpeg,
            deadline=deadline,
            time_limit_sec=math.inf if limit is None else limit,
            progress=progress,
            attempt=attempt,
            publish_output=False,
        )
    except render.RenderError as exc:
        raise _fail(videos, video_id, attempt, str(exc)) from None
    except MemoryError:
        reason = f"ran out of memory: the address-space limit is {_address_space_mb()} (RLIMIT_AS)"
        raise _fail(videos, video_id, attempt, reason) from None
    # Recorded first, published after: only the attempt the ledger still runs may put its file
    # at <id>.mp4. Renaming first let a stale attempt (stalled, then resumed after its retry)
    # replace the winner's file, or unlink it while the winner was between its rename and its
    # compare-and-set.
    final = render.output_path(settings.output_dir, video_id)
    outcome = videos.finish(video_id, attempt, str(final))
    if not outcome.ok:
        # Taken from this attempt meanwhile (given up as stuck, then retried...): only its own
        # temp file is its to remove; <id>.mp4, if there is one, is another attempt's.
        result.path.unlink(missing_ok=True)
        log.warning("video %s rendered, but %s: output dropped", video_id, _why(outcome))
        return "dropped"
    try:
        render.publish(result.path, final)
    except OSError as exc:
        # Removed by a newer attempt's clean-up while this one stalled between its record and its
        # rename (that attempt then owns the video), or a directory gone wrong.
        reason = f"rendered, but could not move it to {final}: {exc.strerror or exc}"
        result.path.unlink(missing_ok=True)
        retracted = videos.retract(video_id, attempt, reason)
        if not retracted.ok:
            log.warning("video %s %s; %s: left as it is", video_id, reason, _why(retracted))
            return "dropped"
        log.error("video %s failed: %s", video_id, reason)
        raise VideoFailed(reason) from None
    log.info(
        "video %s done: %s (%d frames in %.2f s)",
        video_id,
        final,
        result.frames,
        result.seconds,
    )
    return "done"


@app.task(name=GIVEUP_TASK, ignore_result=True)
def mark_given_up(
    *,
    task_name: str,
    task_id: str,
    args: list[Any],
    kwargs: dict[str, Any],
    cause: str,
    reason: str,
) -> str:
    """The runtime's give-up hook (CELERY_STABLE_GIVEUP_TASK): the video failed, for a manual retry.

    Sent by the runtime, keyword arguments only, when it gives a task up for good: it crashed the
    worker CELERY_STABLE_MAX_CRASHES times, went past its hard limit, or stopped making progress.
    The reason is the runtime's, which names ``celery-stable retry <id>``.
    """
    if task_name != RENDER_TASK:
        log.warning("task %s[%s] was given up (%s): %s", task_name, task_id, cause, reason)
        return "ignored"
    video_id = str(args[0] if args else kwargs.get("video_id", task_id))
    outcome = store().give_up(video_id, cause, reason)
    if not outcome.ok:
        log.warning(
            "video %s was given up (%s), but %s: left as it is", video_id, cause, _why(outcome)
        )
        return "ignored"
    # The attempt died mid-render, or is stalled where no compare-and-set will take its output:
    # its temp file is nobody's now, whichever host wrote it.
    given_up = outcome.attempt + 1
    for stale in render.stale_partials(current().output_dir, video_id, before_attempt=given_up):
        stale.unlink(missing_ok=True)
    log.error("video %s failed for a manual retry (%s): %s", video_id, cause, reason)
    return "failed"


@app.task(name=FLEET_TASK, ignore_result=True)
def fleet_report() -> dict[str, int]:
    """Beat's canary: proves Beat, the broker and a worker all work, and logs the fleet."""
    videos = store()
    counts = videos.counts()
    depth = int(videos.client.llen(QUEUE))
    log.info(
        "fleet: %s; %d message(s) waiting in queue %s",
        " ".join(f"{state}={count}" for state, count in counts.items()),
        depth,
        QUEUE,
    )
    return {**counts, "queue_depth": depth}


@app.task(name=RESEND_TASK, ignore_result=True)
def resend_lost_videos() -> list[str]:
    """Beat's job every 3 minutes: send again a queued video whose message the broker lost.

    A video is recorded, then its message is sent; a Redis that lost data, or a submit that died
    between the two, leaves a video queued that nothing would ever run, and the runtime cannot
    tell (its ledger knows a task once a worker picked it up). A video queued for longer than
    ``CELERY_STABLE_STUCK_AFTER_SEC`` (the runtime's own threshold, read through its settings),
    whose id is in no message of the queue's lists nor of the ``unacked`` hash, and that the
    ledger does not know, is sent again with the same task id. Its record is not touched: if the
    old message was only late after all, the runtime's ledger (a second message of a done task
    is a new record) and the video's compare-and-set (``begin`` refuses an attempt that is not
    newer) let exactly one of the two render.
    """
    older_than = Settings.from_env(os.environ).stuck_after_sec
    return resend_lost(store(), older_than)


def resend_lost(videos: VideoStore, older_than_sec: float) -> list[str]:
    """The ids sent again (see :func:`resend_lost_videos`); ages on the Redis server's clock."""
    now = videos.ledger.now()
    waiting = [
        record
        for record in map(videos.get, videos.ids_in("queued"))
        if record is not None
        and record.state == "queued"
        and now - record.created_at > older_than_sec
    ]
    if not waiting:
        return []
    # The broker first, the ledger after: a message a worker takes meanwhile is then seen in
    # one of the two (and a copy sent anyway would still render once, as above).
    held = _broker_messages()
    resent = []
    for record in waiting:
        if any(record.id in message for message in held) or videos.ledger.get(record.id):
            continue
        app.send_task(RENDER_TASK, args=[record.id], task_id=record.id)
        log.warning(
            "video %s: queued %.0f s ago and its message is in neither queue %s nor the unacked "
            "hash: sent again",
            record.id,
            now - record.created_at,
            QUEUE,
        )
        resent.append(record.id)
    return resent


def _broker_messages() -> list[str]:
    """Every message the broker holds for the queue (each priority's list) or unacked, as text:
    kombu's envelope names the task id in its headers."""
    with (
        app.connection_for_write() as connection,
        redis_channel(connection) as channel,
        channel.conn_or_acquire() as client,
    ):
        raw: list[bytes | str] = []
        for priority in channel.priority_steps:
            raw.extend(client.lrange(channel._q_for_pri(QUEUE, priority), 0, -1))
        raw.extend(client.hvals(channel.unacked_key))
    return [item.decode() if isinstance(item, bytes) else item for item in raw]
