#!/usr/bin/env bash
# A scenario's host image: tests/infra/images.sh's SUITE ARCH image with the heavy Debian packages
# the role installs already in it, so that a converge does not spend its time in dpkg (measured:
# `Install the system packages` 30-38 s of each amd64 converge, 127 s of a 6-min converge under
# qemu-user). A golden image, as fleets bake them: the role still runs every task; its apt task
# finds the packages present. Installing them on a bare image is what the default scenario
# proves. Cached: rebuilt only when the base image, the package list or this script changes.
#
#   tests/infra/deps-image.sh SUITE ARCH PACKAGE...    # prints the image name
# The packages: what tasks/python.yml installs for the scenario's Python provider (apt installs
# recommends by default, as the role's apt task does: ffmpeg alone pulls ~100 packages). Redis
# is left to the broker role: its unit needs the role's container drop-in before it first starts.
# Environment: the scenario's own image variable set (CELERY_STABLE_IMAGE for bookworm amd64,
# CELERY_STABLE_IMAGE_TRIXIE, CELERY_STABLE_IMAGE_ARM64): used as is, nothing built.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
suite=$1 arch=$2
shift 2
packages="$*"
base=celery-stable/$suite-systemd:$arch
image=$base-deps
case "$suite $arch" in
  "bookworm amd64") given=${CELERY_STABLE_IMAGE:-} ;;
  "trixie amd64") given=${CELERY_STABLE_IMAGE_TRIXIE:-} ;;
  "bookworm arm64") given=${CELERY_STABLE_IMAGE_ARM64:-} ;;
  *) given= ;;
esac

log() { echo "[deps-image] $*" >&2; }

if [[ -n $given ]]; then echo "$given"; exit 0; fi
"$here/images.sh" "$suite" "$arch" >/dev/null
base_id=$(docker image inspect -f '{{.Id}}' "$base")
want=$({ echo "$base_id $packages"; cat "$0"; } | sha256sum | cut -c1-16)
have=$(docker image inspect -f '{{index .Config.Labels "org.celery-stable.deps"}}' "$image" 2>/dev/null || true)
if [[ $have == "$want" ]]; then echo "$image"; exit 0; fi

name=celery-stable-$suite-$arch-deps-$$
trap 'docker rm -f "$name" >/dev/null 2>&1 || true' EXIT
start=$SECONDS
log "building $image from $base: apt-get install $packages (~1 min; under qemu ~3 min)"
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
  -c "LABEL org.celery-stable.deps=$want org.celery-stable.arch=$arch org.celery-stable.suite=$suite" \
  "$name" "$image" >/dev/null
log "$image built in $((SECONDS - start))s"
echo "$image"
