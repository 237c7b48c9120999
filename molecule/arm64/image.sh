#!/usr/bin/env bash
# The arm64 scenario's host image: tests/infra/images.sh's bookworm arm64 image with the heavy
# Debian packages the role installs already in it, so that the emulated converge does not spend minutes
# running dpkg under qemu-user (measured: `Install the system packages` 127 s of a 6-min
# converge). A golden image, as fleets bake them: the role still runs every task; its apt task
# finds the packages present. Installing them from a bare image is what the default scenario
# proves. Cached: rebuilt only when the base image, the package list or this script changes.
#
#   molecule/arm64/image.sh            # prints the image name
# Environment: CELERY_STABLE_IMAGE_ARM64 set: used as is (nothing built).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
base=celery-stable/bookworm-systemd:arm64
image=celery-stable/bookworm-systemd:arm64-deps
# What tasks/python.yml installs with celery_stable_python_provider: distro, version 3.11,
# with the recommends apt installs by default, as the role's apt task does (ffmpeg alone pulls
# ~100 packages). Redis is left to the role: its unit needs the role's container drop-in before
# it first starts.
packages="python3-venv python3-packaging ca-certificates ffmpeg python3.11 python3.11-venv"

log() { echo "[arm64-image] $*" >&2; }

if [[ -n ${CELERY_STABLE_IMAGE_ARM64:-} ]]; then echo "$CELERY_STABLE_IMAGE_ARM64"; exit 0; fi
"$top/tests/infra/images.sh" bookworm arm64 >/dev/null
base_id=$(docker image inspect -f '{{.Id}}' "$base")
want=$({ echo "$base_id $packages"; cat "$0"; } | sha256sum | cut -c1-16)
have=$(docker image inspect -f '{{index .Config.Labels "org.celery-stable.deps"}}' "$image" 2>/dev/null || true)
if [[ $have == "$want" ]]; then echo "$image"; exit 0; fi

name=celery-stable-arm64-image-$$
trap 'docker rm -f "$name" >/dev/null 2>&1 || true' EXIT
start=$SECONDS
log "building $image from $base: apt-get install $packages (under qemu, ~3 min)"
# No systemd in this build container: policy-rc.d keeps maintainer scripts from starting
# services. The apt lists stay in the image, as apt left them.
docker run --name "$name" --network bridge "$base" /bin/sh -c "
  set -e
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages >/dev/null
  apt-get clean
  rm -f /usr/sbin/policy-rc.d
" >&2
docker commit \
  -c 'CMD ["/lib/systemd/systemd"]' \
  -c "LABEL org.celery-stable.deps=$want org.celery-stable.arch=arm64 org.celery-stable.suite=bookworm" \
  "$name" "$image" >/dev/null
log "$image built in $((SECONDS - start))s"
echo "$image"
