#!/usr/bin/env bash
# Build the systemd host images the Molecule scenarios and the local deploy run on, when absent.
# No registry is assumed: debootstrap a minimal Debian, then `docker import` it with systemd as
# PID 1. Users with a registry skip this by naming their own image (CELERY_STABLE_IMAGE*).
#
#   scripts/images.sh                 # the default: bookworm amd64
#   scripts/images.sh trixie amd64    # any Debian suite and architecture (arm64 needs binfmt)
#
# Prints the image name(s) on stdout.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

# What a target needs before Ansible can manage it: systemd as init, a Python for Ansible's
# modules, apt bindings for the apt module, dbus for systemctl, CA certificates for HTTPS.
include=systemd,systemd-sysv,dbus,python3,python3-apt,sudo,ca-certificates,procps,iproute2

build() {
  local suite=$1 arch=$2 image="celery-stable/$1-systemd:$2"
  if docker image inspect "$image" >/dev/null 2>&1; then
    echo "$image"; return
  fi
  local rootfs
  rootfs=$(mktemp -d "${TMPDIR:-/tmp}/rootfs-$suite-$arch.XXXX")
  trap 'rm -rf "$rootfs"' RETURN
  echo "[images] debootstrap $suite/$arch (1-4 min)" >&2
  debootstrap --variant=minbase --arch="$arch" --include="$include" "$suite" "$rootfs" "$mirror" \
    >"$rootfs.log" 2>&1 || { tail -20 "$rootfs.log" >&2; exit 1; }
  rm -f "$rootfs.log"
  # A container has no consoles and no kernel modules: these units only fail or wait there.
  for unit in getty@tty1.service console-getty.service systemd-modules-load.service \
              sys-kernel-config.mount sys-kernel-debug.mount systemd-remount-fs.service; do
    ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
  done
  # systemd halts on SIGRTMIN+3: containers are run with --stop-signal (docker import cannot set it).
  # Let Docker's --hostname win, and give each container a fresh machine-id at boot.
  rm -f "$rootfs/etc/hostname"; : >"$rootfs/etc/machine-id"
  # Keep the image small: apt lists and caches are refetched by the role's apt tasks.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
  tar -C "$rootfs" -c . | docker import \
    --platform "linux/$arch" \
    -c 'CMD ["/lib/systemd/systemd"]' -c 'ENV container=docker' \
    - "$image" >/dev/null
  echo "$image"
}

if (($# == 0)); then
  build bookworm amd64
else
  build "$1" "${2:-amd64}"
fi
