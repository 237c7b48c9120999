"""The matrix's hands on the guide's setup (run inside the host with the app's venv Python).

guide_ctl.py submit   < [spec, ...]      -> ["task id", ...]
guide_ctl.py states   < ["task id", ...] -> {"id": {"state": ..., "reason": ...}}
guide_ctl.py unacked                      -> {"count": N, "oldest_age_sec": S}
"""

import json
import sys
import time

from core.celery_app import app


def main():
    command = sys.argv[1]
    if command == "submit":
        specs = json.load(sys.stdin)
        ids = [app.send_task("core.tasks.generate_video", args=[spec]).id for spec in specs]
        print(json.dumps(ids))
    elif command == "states":
        out = {}
        for task_id in json.load(sys.stdin):
            result = app.AsyncResult(task_id)
            state = result.state
            reason = ""
            if state == "FAILURE":
                reason = f"{type(result.result).__name__}: {result.result}"
            out[task_id] = {"state": state, "reason": reason[:200]}
        print(json.dumps(out))
    elif command == "unacked":
        client = app.connection().channel().client
        index = client.zrange("unacked_index", 0, -1, withscores=True)
        oldest = min((score for _, score in index), default=None)
        print(
            json.dumps(
                {
                    "count": client.hlen("unacked"),
                    "oldest_age_sec": None if oldest is None else round(time.time() - oldest, 1),
                }
            )
        )
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main()
