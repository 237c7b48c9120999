"""The matrix's hands on the guide's app, the same in both columns (run on the host with that
column's venv Python, its environment file sourced, and the app's tree on PYTHONPATH).

    guide_ctl.py submit [QUEUE] < [spec, ...] -> [{"video": id, "task": celery task id}, ...]
    guide_ctl.py videos < [video id...] -> {"id": row of the video table, or null}

`submit` is what the team's backend does for a new video: a row in its video table
(core.videos.create, state "pending"), then `core.tasks.generate_video(video_id, spec)` sent to
Celery (to the app's default queue, or to QUEUE). Nothing of celery_stable is imported here.
The matrix reads the table itself (redis-cli); `videos` is for a person at the host.
"""

import json
import sys
import uuid

from core import videos
from core.celery_app import app


def main():
    command = sys.argv[1]
    if command == "submit":
        queue = {"queue": sys.argv[2]} if len(sys.argv) > 2 else {}
        out = []
        for spec in json.load(sys.stdin):
            video_id, task_id = uuid.uuid4().hex[:12], str(uuid.uuid4())
            videos.create(video_id, task_id)
            app.send_task("core.tasks.generate_video", args=[video_id, spec], task_id=task_id, **queue)
            out.append({"video": video_id, "task": task_id})
        print(json.dumps(out))
    elif command == "videos":
        print(json.dumps({video_id: videos.get(video_id) for video_id in json.load(sys.stdin)}))
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main()
