#!/usr/bin/env bash
# Deploy celery-stable.
#
#   scripts/deploy.sh                       # no inventory of yours: a local systemd container
#   scripts/deploy.sh -i inventory [ARGS]   # your fleet: ansible-playbook -i inventory playbooks/site.yml ARGS
#
# Without an inventory it starts (or reuses) the Debian 12 systemd container
# "celery-stable-demo", deploys the role into it exactly as onto a real host, renders the sample
# video app/examples/hello.json through the deployed worker and shows `systemctl status`.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
log() { printf '\n[deploy] %s\n' "$*" >&2; }

if (($#)); then
  CELERY_STABLE_BOOTSTRAP=control scripts/bootstrap.sh
  exec .venv/bin/ansible-playbook playbooks/site.yml "$@"
fi

name=celery-stable-demo
state=.cache/demo
mkdir -p "$state"
scripts/bootstrap.sh
log "building what the container needs (cached after the first run)"
tests/infra/molecule-deps.sh bookworm amd64
image=${CELERY_STABLE_IMAGE:-celery-stable/bookworm-systemd:amd64}

docker network inspect "$name" >/dev/null 2>&1 || docker network create "$name" >/dev/null
if ! docker container inspect "$name" >/dev/null 2>&1; then
  log "starting the systemd container $name ($image)"
  # systemd as PID 1 without --privileged; the host CA bundle for HTTPS through proxies; the
  # offline CPython list and wheelhouse where this machine built them.
  docker run -d --name "$name" --hostname "$name" --network "$name" \
    --cap-add SYS_ADMIN --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
    --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /run/lock \
    --stop-signal SIGRTMIN+3 \
    -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
    -v "$top/.cache/python-mirror:/srv/celery-stable-mirror:ro" \
    -v "$top/.cache/wheelhouse:/srv/celery-stable-wheels:ro" \
    "$image" /lib/systemd/systemd >/dev/null
elif [[ "$(docker container inspect -f '{{.State.Running}}' "$name")" != true ]]; then
  docker start "$name" >/dev/null
fi
docker exec "$name" systemctl is-system-running --wait >/dev/null 2>&1 || true

# A Redis password of its own, kept across runs so the second deploy changes nothing.
[[ -s "$state/redis-password" ]] || (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$state/redis-password")
mirror_json=""
[[ -f .cache/python-mirror/downloads.json ]] && mirror_json=file:///srv/celery-stable-mirror/downloads.json
find_links="[]"
[[ -n "$(ls -A .cache/wheelhouse 2>/dev/null)" ]] && find_links='["/srv/celery-stable-wheels"]'
cat >"$state/inventory.yml" <<YAML
# Written by scripts/deploy.sh: the local demo host, its own broker (Redis on loopback).
all:
  vars:
    celery_stable_broker_password: "$(cat "$state/redis-password")"
celery_broker:
  hosts:
    $name:
      ansible_connection: community.docker.docker
celery_workers:
  hosts:
    $name:
      ansible_connection: community.docker.docker
      celery_stable_beat_enabled: true
      celery_stable_uv_python_downloads_json_url: "$mirror_json"
      celery_stable_pip_find_links: $find_links
YAML

log "ansible-playbook -i $state/inventory.yml playbooks/site.yml"
.venv/bin/ansible-playbook -i "$state/inventory.yml" playbooks/site.yml

log "rendering the sample video through the deployed worker"
docker exec -i "$name" video-renderer submit - --wait 300 <app/examples/hello.json | tee "$state/sample.txt"
video_id=$(head -1 "$state/sample.txt")
docker exec "$name" ffprobe -v error -show_entries stream=codec_name,width,height,nb_frames \
  -show_entries format=duration -of default=noprint_wrappers=1 \
  "/var/lib/celery-stable/videos/$video_id.mp4"

log "docker exec $name celery-stable status $video_id   # the runtime's crash ledger"
docker exec "$name" celery-stable status "$video_id"

log "docker exec $name systemctl status celery-worker"
docker exec "$name" systemctl status celery-worker --no-pager --lines=5 || true
log "done. Try: docker exec -it $name bash; video-renderer list; celery-stable list; journalctl -u celery-worker"
