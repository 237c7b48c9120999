#!/usr/bin/env bash
# Bring a fresh Debian/Ubuntu machine (root) to the state the deploy and test commands need:
# system packages, a running Docker engine, and .venv with the control-node tools and the app.
# Idempotent: every step checks before it acts, so a second run takes seconds.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

log() { printf '[bootstrap] %s\n' "$*" >&2; }

# A control node that only deploys to an inventory of yours needs Python and tar; the tests and
# the local demo also need Docker, Redis, ffmpeg and the image tools.
# CELERY_STABLE_BOOTSTRAP=control skips the second list.
packages=(python3-venv ca-certificates tar)
if [[ "${CELERY_STABLE_BOOTSTRAP:-full}" != control ]]; then
  # patchelf, binutils (readelf, strip) and file: the offline CPython mirror, where a local CPython exists.
  packages+=(docker.io redis-server ffmpeg debootstrap qemu-user-static binfmt-support patchelf binutils file)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# No init system on build machines: start dockerd ourselves when nothing answers.
if [[ "${CELERY_STABLE_BOOTSTRAP:-full}" != control ]] && ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  (dockerd >/var/log/dockerd.log 2>&1 &)
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { log "dockerd did not start: see /var/log/dockerd.log"; exit 1; }
fi

# ARM64 test hosts run under qemu-user; the kernel needs the binfmt handler registered.
if [[ "${CELERY_STABLE_BOOTSTRAP:-full}" != control && ! -e /proc/sys/fs/binfmt_misc/register ]]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
fi
if [[ "${CELERY_STABLE_BOOTSTRAP:-full}" != control && ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
  update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || log "could not register qemu-aarch64 (ARM64 scenarios will fail)"
fi

python=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  log "creating .venv"
  "$python" -m venv .venv
fi
stamp=.venv/.requirements.sha256
reqs=(app/runtime/requirements.txt app/video/requirements.txt)
want=$(cat requirements-dev.txt "${reqs[@]}" 2>/dev/null | sha256sum | cut -d' ' -f1)
if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  log "installing control-node tools, the runtime and the demo app into .venv"
  .venv/bin/pip install -q -r requirements-dev.txt
  # The pins the hosts get (hashed), then both packages editable, offline (uv_build is uv's).
  .venv/bin/uv pip install -q --python .venv/bin/python --require-hashes \
    "${reqs[@]/#/--requirement=}"
  .venv/bin/uv pip install -q --python .venv/bin/python --offline --no-deps -e app/runtime -e app/video
  echo "$want" > "$stamp"
fi
# Whole output first: `ansible --version | head -1` made ansible write into a closed pipe
# (a BrokenPipeError traceback at the top of every CI log).
version=$(.venv/bin/ansible --version)
log "ready: ${version%%$'\n'*}"
