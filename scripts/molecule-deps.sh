#!/usr/bin/env bash
# Molecule's dependency step: what a scenario's containers need on this machine, built when
# absent (each script is cached and returns at once the second time).
#   scripts/molecule-deps.sh SUITE ARCH
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
suite=${1:-bookworm} arch=${2:-amd64}

# A registry image named by the user replaces the local build.
if [[ -z "${CELERY_STABLE_IMAGE:-}" ]]; then
  "$top/scripts/images.sh" "$suite" "$arch" >/dev/null
fi
# Where uv cannot download CPython (air-gapped, or this build machine), serve it from a local
# CPython through a downloads list of our own; and keep the wheels local for speed.
if [[ -x "$top/scripts/python-mirror.sh" ]]; then "$top/scripts/python-mirror.sh" >/dev/null; fi
if [[ -x "$top/scripts/wheelhouse.sh" ]]; then "$top/scripts/wheelhouse.sh" >/dev/null; fi
