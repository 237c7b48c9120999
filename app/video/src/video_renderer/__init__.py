"""video_renderer: the demo app of celery-stable (OpenCV frames, the system ffmpeg for H.264).

A plain Celery app: ``celery_app`` (the app, its queue, its Beat canary), ``tasks`` (render a
video, mark a video the runtime gave up, the canary), ``jobs`` (the video records), ``cli``
(``video-renderer submit|status|list``). It knows the runtime only through its public API:
``celery_stable.protect``, ``progress``, ``remaining``, ``time_limit``, and the ledger's records
for reading.
"""
