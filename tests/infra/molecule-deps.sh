#!/usr/bin/env bash
# Molecule's dependency step: what a scenario's containers need on this machine, built when
# absent (each script is cached and returns at once the second time).
#   tests/infra/molecule-deps.sh SUITE ARCH
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
suite=${1:-bookworm} arch=${2:-amd64}

# A registry image named by the user replaces the local build.
if [[ -z "${CELERY_STABLE_IMAGE:-}" ]]; then
  "$here/images.sh" "$suite" "$arch" >/dev/null
fi
# Where uv cannot download CPython (air-gapped, or this build machine), serve it from a local
# CPython through a downloads list of our own (where there is none, python-mirror.sh says so and
# builds nothing); and keep the wheels local for speed.
"$here/python-mirror.sh" >/dev/null
"$here/wheelhouse.sh" >/dev/null
